// The fast-scan kernel written once with Google Highway (libhwy): compiled for every SIMD target
// Highway knows (x86 SSSE3 .. AVX-512, ARM NEON, ...) and dispatched at run time to the best one
// the CPU has, so CPUs without quantd's hand-written x86 kernels (ARM nodes above all) still scan
// with in-register byte shuffles. Same blocks, tables, sums and Sink as the other kernels (see
// fastscan.h and fastscan_kernels.cc for the 16-bit accumulation trick), so its results are the
// reference kernel's bit for bit.
//
// Measured on AMD Zen 5 (AVX-512, one thread, a 20000-code list): M16 0.27 ns a code against the
// hand-written AVX-512BW kernel's 0.22, M32 0.39 against 0.31, M64 0.61 against 0.76. The
// hand-written x86 kernels stay first where the CPU has them; see BestKernel.
//
// Highway compiles this file once per target: foreach_target.h re-includes it with HWY_NAMESPACE
// set to each target's namespace. Scalable vectors (SVE, RVV) are left out, as the block fold
// below needs a fixed vector size: ARM uses NEON (16-byte vectors, the layout's natural width).
#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS (HWY_SVE | HWY_SVE2 | HWY_SVE_256 | HWY_SVE2_128 | HWY_RVV)
#endif
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "core/fastscan_hwy.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
// Highway's headers after foreach_target.h, as its dispatch requires.
#include "core/fastscan.h"
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace quantd::fastscan::internal {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

#if HWY_TARGET != HWY_SCALAR && HWY_TARGET != HWY_EMU128

// Sum of the 128-bit blocks of v (u16 lanes): a 128-bit vector. Blocks of the accumulators hold
// partial sums over different sub-quantizers, and sums are linear modulo 2^16.
template <class D16, class V>
HWY_INLINE auto FoldTo128(D16 d16, V v) {
  if constexpr (hn::MaxLanes(D16()) > 8) {
    const hn::Half<D16> half;
    return FoldTo128(half, hn::Add(hn::LowerHalf(half, v), hn::UpperHalf(half, v)));
  } else {
    (void)d16;
    return v;
  }
}

// kMp > 0: the padded sub-quantizer count known at compile time; 0: mp at run time.
template <int kMp>
void ScanImpl(const uint8_t* blocks, int64_t n, int64_t mp, const uint8_t* lut, Sink& sink) {
  if constexpr (kMp > 0) mp = kMp;
  const hn::ScalableTag<uint8_t> d8;
  const hn::Repartition<uint16_t, decltype(d8)> d16;
  const hn::Full128<uint16_t> d128;
  // Sub-quantizers a step: one per 16-byte block of the vector (mp is a multiple of 4, and the
  // vectors are 16, 32 or 64 bytes).
  const auto step = static_cast<int64_t>(hn::Lanes(d8) / 16);
  const int64_t block_bytes = mp * 16;
  const auto low4 = hn::Set(d8, uint8_t{0x0f});
  alignas(16) uint16_t sums[kBlockSize];
  alignas(8) uint8_t bits[8];
  for (int64_t b = 0; b < NumBlocks(n); ++b) {
    const uint8_t* block = blocks + b * block_bytes;
    auto a_lo = hn::Zero(d16), b_lo = a_lo, a_hi = a_lo, b_hi = a_lo;
    for (int64_t s = 0; s < mp; s += step) {
      const auto codes = hn::LoadU(d8, block + s * 16);
      const auto table = hn::LoadU(d8, lut + s * 16);
      const auto lo = hn::BitCast(d16, hn::TableLookupBytes(table, hn::And(codes, low4)));
      const auto high_nibbles =
          hn::And(hn::BitCast(d8, hn::ShiftRight<4>(hn::BitCast(d16, codes))), low4);
      const auto hi = hn::BitCast(d16, hn::TableLookupBytes(table, high_nibbles));
      a_lo = hn::Add(a_lo, lo);
      b_lo = hn::Add(b_lo, hn::ShiftRight<8>(lo));
      a_hi = hn::Add(a_hi, hi);
      b_hi = hn::Add(b_hi, hn::ShiftRight<8>(hi));
    }
    const auto sum_b_lo = FoldTo128(d16, b_lo);  // slots 8..15
    const auto sum_b_hi = FoldTo128(d16, b_hi);  // slots 24..31
    const auto sum_a_lo = hn::Sub(FoldTo128(d16, a_lo), hn::ShiftLeft<8>(sum_b_lo));  // 0..7
    const auto sum_a_hi = hn::Sub(FoldTo128(d16, a_hi), hn::ShiftLeft<8>(sum_b_hi));  // 16..23
    // Unsigned x <= t  <=>  min(x, t) == x.
    const auto t = hn::Set(d128, sink.threshold16());
    hn::StoreMaskBits(d128, hn::Eq(hn::Min(sum_a_lo, t), sum_a_lo), bits + 0);
    hn::StoreMaskBits(d128, hn::Eq(hn::Min(sum_b_lo, t), sum_b_lo), bits + 1);
    hn::StoreMaskBits(d128, hn::Eq(hn::Min(sum_a_hi, t), sum_a_hi), bits + 2);
    hn::StoreMaskBits(d128, hn::Eq(hn::Min(sum_b_hi, t), sum_b_hi), bits + 3);
    const uint32_t mask = (bits[0] | (uint32_t{bits[1]} << 8) | (uint32_t{bits[2]} << 16) |
                           (uint32_t{bits[3]} << 24)) &
                          ValidMask(b, n);
    if (mask != 0) {
      hn::Store(sum_a_lo, d128, sums);
      hn::Store(sum_b_lo, d128, sums + 8);
      hn::Store(sum_a_hi, d128, sums + 16);
      hn::Store(sum_b_hi, d128, sums + 24);
      sink.Collect(b * kBlockSize, mask, sums);
    }
  }
}

void ScanTarget(const uint8_t* blocks, int64_t n, int64_t mp, const uint8_t* lut, Sink& sink) {
  switch (mp) {
    case 16:
      return ScanImpl<16>(blocks, n, mp, lut, sink);
    case 32:
      return ScanImpl<32>(blocks, n, mp, lut, sink);
    case 64:
      return ScanImpl<64>(blocks, n, mp, lut, sink);
    default:
      return ScanImpl<0>(blocks, n, mp, lut, sink);
  }
}

#else  // no byte shuffles: the reference kernel (KernelSupported(kHighway) is false then).

void ScanTarget(const uint8_t* blocks, int64_t n, int64_t mp, const uint8_t* lut, Sink& sink) {
  ScanScalar(blocks, n, mp, lut, sink);
}

#endif

}  // namespace HWY_NAMESPACE
}  // namespace quantd::fastscan::internal
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace quantd::fastscan::internal {

HWY_EXPORT(ScanTarget);

void ScanHighway(const uint8_t* blocks, int64_t n, int64_t mp, const uint8_t* lut, Sink& sink) {
  HWY_DYNAMIC_DISPATCH(ScanTarget)(blocks, n, mp, lut, sink);
}

int64_t HighwayTarget() {
  // Highway numbers better targets with lower bits; the scalar fallbacks do not count.
  const int64_t usable = hwy::SupportedTargets() & HWY_TARGETS & ~int64_t{HWY_SCALAR | HWY_EMU128};
  return usable & -usable;
}

const char* HighwayTargetName() {
  const int64_t target = HighwayTarget();
  return target == 0 ? "none" : hwy::TargetName(target);
}

}  // namespace quantd::fastscan::internal
#endif
