// Fast-scan kernels: the portable reference and x86 kernels compiled with target attributes
// (nothing here needs -march; ActiveKernel picks one at run time from the CPU's features).
//
// The SIMD kernels add the looked-up bytes of 16-bit lanes without unpacking them: a shuffle
// result r holds byte pairs (r[2w], r[2w + 1]) = (slot w, slot w + 8) of a 16-slot group, and
// adding r as 16-bit words into A and (r >> 8) into B gives, modulo 2^16,
//   B = sum r[2w + 1]                 (slots 8..15 of the group)
//   A - (B << 8) = sum r[2w]          (slots 0..7)
// which are exact because every true sum is below 2^16 (Mp x 255 < 65536).
#include <cstring>

#include "core/fastscan.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
// GCC 12's AVX-512 intrinsics (set1 / extract through _mm512_undefined_*) trip a false
// -Wmaybe-uninitialized once inlined here.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace quantd::fastscan::internal {

void ScanScalar(const uint8_t* blocks, int64_t n, int64_t mp, const uint8_t* lut, Sink& sink) {
  const int64_t block_bytes = mp * 16;
  uint16_t sums[kBlockSize];
  for (int64_t b = 0; b < NumBlocks(n); ++b) {
    const uint8_t* block = blocks + b * block_bytes;
    const uint16_t threshold = sink.threshold16();
    uint32_t mask = 0;
    for (int v = 0; v < kBlockSize; ++v) {
      const int byte = (v & 7) * 2 + ((v >> 3) & 1);
      const int shift = v < 16 ? 0 : 4;
      uint32_t sum = 0;
      for (int64_t s = 0; s < mp; ++s) sum += lut[s * 16 + ((block[s * 16 + byte] >> shift) & 15)];
      sums[v] = static_cast<uint16_t>(sum);
      if (sums[v] <= threshold) mask |= uint32_t{1} << v;
    }
    mask &= ValidMask(b, n);
    if (mask != 0) sink.Collect(b * kBlockSize, mask, sums);
  }
}

#if defined(__x86_64__) || defined(__i386__)

namespace {

// The 32 sums of a block from the four accumulators of 256 bits, whose two 128-bit lanes hold
// partial sums over different sub-quantizers: a_lo / b_lo from the low nibbles (slots 0..15),
// a_hi / b_hi from the high nibbles (slots 16..31). Writes sums (slot order) and returns the
// mask of slots with sum <= threshold.
__attribute__((target("avx2"))) inline uint32_t FinishBlock(__m256i a_lo, __m256i b_lo,
                                                            __m256i a_hi, __m256i b_hi,
                                                            uint16_t threshold, uint16_t* sums) {
  const __m256i e_lo = _mm256_sub_epi16(a_lo, _mm256_slli_epi16(b_lo, 8));  // slots 0..7
  const __m256i e_hi = _mm256_sub_epi16(a_hi, _mm256_slli_epi16(b_hi, 8));  // slots 16..23
  // Add the two lanes: [lane 0 of x, lane 0 of y] + [lane 1 of x, lane 1 of y].
  const __m256i d0 = _mm256_add_epi16(_mm256_permute2x128_si256(e_lo, b_lo, 0x20),
                                      _mm256_permute2x128_si256(e_lo, b_lo, 0x31));  // 0..15
  const __m256i d1 = _mm256_add_epi16(_mm256_permute2x128_si256(e_hi, b_hi, 0x20),
                                      _mm256_permute2x128_si256(e_hi, b_hi, 0x31));  // 16..31
  const __m256i t = _mm256_set1_epi16(static_cast<short>(threshold));
  // Unsigned x <= t  <=>  min(x, t) == x.
  const __m256i le0 = _mm256_cmpeq_epi16(_mm256_min_epu16(d0, t), d0);
  const __m256i le1 = _mm256_cmpeq_epi16(_mm256_min_epu16(d1, t), d1);
  // packs interleaves 64-bit quarters as (0..7, 16..23, 8..15, 24..31); put them in order.
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packs_epi16(le0, le1), 0xd8);
  const uint32_t mask = static_cast<uint32_t>(_mm256_movemask_epi8(packed));
  if (mask != 0) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(sums), d0);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(sums + 16), d1);
  }
  return mask;
}

// The upper 256 bits added onto the lower (sums are linear modulo 2^16).
__attribute__((target("avx2,avx512f,avx512bw"))) inline __m256i Fold(__m512i x) {
  return _mm256_add_epi16(_mm512_castsi512_si256(x), _mm512_extracti64x4_epi64(x, 1));
}

}  // namespace

__attribute__((target("avx2"))) void ScanAvx2(const uint8_t* blocks, int64_t n, int64_t mp,
                                              const uint8_t* lut, Sink& sink) {
  const int64_t block_bytes = mp * 16;
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  alignas(32) uint16_t sums[kBlockSize];
  for (int64_t b = 0; b < NumBlocks(n); ++b) {
    const uint8_t* block = blocks + b * block_bytes;
    __m256i a_lo = _mm256_setzero_si256(), b_lo = a_lo, a_hi = a_lo, b_hi = a_lo;
    // Two sub-quantizers a step: lane 0 is sub-quantizer s, lane 1 is s + 1, as in the lut.
    for (int64_t s = 0; s < mp; s += 2) {
      const __m256i codes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + s * 16));
      const __m256i table = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lut + s * 16));
      const __m256i lo = _mm256_shuffle_epi8(table, _mm256_and_si256(codes, low4));
      const __m256i hi =
          _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(codes, 4), low4));
      a_lo = _mm256_add_epi16(a_lo, lo);
      b_lo = _mm256_add_epi16(b_lo, _mm256_srli_epi16(lo, 8));
      a_hi = _mm256_add_epi16(a_hi, hi);
      b_hi = _mm256_add_epi16(b_hi, _mm256_srli_epi16(hi, 8));
    }
    const uint32_t mask =
        FinishBlock(a_lo, b_lo, a_hi, b_hi, sink.threshold16(), sums) & ValidMask(b, n);
    if (mask != 0) sink.Collect(b * kBlockSize, mask, sums);
  }
}

__attribute__((target("avx2,avx512f,avx512bw"))) void ScanAvx512(const uint8_t* blocks, int64_t n,
                                                                 int64_t mp, const uint8_t* lut,
                                                                 Sink& sink) {
  const int64_t block_bytes = mp * 16;
  const __m512i low4 = _mm512_set1_epi8(0x0f);
  alignas(32) uint16_t sums[kBlockSize];
  for (int64_t b = 0; b < NumBlocks(n); ++b) {
    const uint8_t* block = blocks + b * block_bytes;
    __m512i a_lo = _mm512_setzero_si512(), b_lo = a_lo, a_hi = a_lo, b_hi = a_lo;
    // Four sub-quantizers a step (mp is a multiple of 4), one per 128-bit lane.
    for (int64_t s = 0; s < mp; s += 4) {
      const __m512i codes = _mm512_loadu_si512(block + s * 16);
      const __m512i table = _mm512_loadu_si512(lut + s * 16);
      const __m512i lo = _mm512_shuffle_epi8(table, _mm512_and_si512(codes, low4));
      const __m512i hi =
          _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srli_epi16(codes, 4), low4));
      a_lo = _mm512_add_epi16(a_lo, lo);
      b_lo = _mm512_add_epi16(b_lo, _mm512_srli_epi16(lo, 8));
      a_hi = _mm512_add_epi16(a_hi, hi);
      b_hi = _mm512_add_epi16(b_hi, _mm512_srli_epi16(hi, 8));
    }
    const uint32_t mask =
        FinishBlock(Fold(a_lo), Fold(b_lo), Fold(a_hi), Fold(b_hi), sink.threshold16(), sums) &
        ValidMask(b, n);
    if (mask != 0) sink.Collect(b * kBlockSize, mask, sums);
  }
}

#else  // not x86: only the reference kernel exists (KernelSupported says so).

void ScanAvx2(const uint8_t* blocks, int64_t n, int64_t mp, const uint8_t* lut, Sink& sink) {
  ScanScalar(blocks, n, mp, lut, sink);
}
void ScanAvx512(const uint8_t* blocks, int64_t n, int64_t mp, const uint8_t* lut, Sink& sink) {
  ScanScalar(blocks, n, mp, lut, sink);
}

#endif

}  // namespace quantd::fastscan::internal
