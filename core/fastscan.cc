#include "core/fastscan.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

#include "core/kernel_choice.h"

namespace quantd::fastscan {
namespace {

// Byte offset (inside a block) of slot v's byte for sub-quantizer s, and the nibble's shift.
inline int64_t SlotByte(int64_t v, int64_t s) { return s * 16 + (v & 7) * 2 + ((v >> 3) & 1); }
inline int SlotShift(int64_t v) { return v < 16 ? 0 : 4; }

}  // namespace

void SetCode(uint8_t* blocks, int64_t m, int64_t i, const uint8_t* code) {
  uint8_t* block = blocks + (i / kBlockSize) * BlockBytes(m);
  const int64_t v = i & (kBlockSize - 1);
  const int shift = SlotShift(v);
  const uint8_t keep = static_cast<uint8_t>(0xf0 >> shift);  // the other slot's nibble
  for (int64_t s = 0; s < m; ++s) {
    const int sub = (s & 1) ? (code[s >> 1] >> 4) : (code[s >> 1] & 15);
    uint8_t& byte = block[SlotByte(v, s)];
    byte = static_cast<uint8_t>((byte & keep) | (sub << shift));
  }
}

void GetCode(const uint8_t* blocks, int64_t m, int64_t i, uint8_t* code) {
  const uint8_t* block = blocks + (i / kBlockSize) * BlockBytes(m);
  const int64_t v = i & (kBlockSize - 1);
  const int shift = SlotShift(v);
  for (int64_t t = 0; t < (m + 1) / 2; ++t) code[t] = 0;
  for (int64_t s = 0; s < m; ++s) {
    const int sub = (block[SlotByte(v, s)] >> shift) & 15;
    code[s >> 1] = static_cast<uint8_t>(code[s >> 1] | (sub << ((s & 1) * 4)));
  }
}

void ClearCode(uint8_t* blocks, int64_t m, int64_t i) {
  uint8_t* block = blocks + (i / kBlockSize) * BlockBytes(m);
  const int64_t v = i & (kBlockSize - 1);
  const uint8_t keep = static_cast<uint8_t>(0xf0 >> SlotShift(v));
  for (int64_t s = 0; s < m; ++s) block[SlotByte(v, s)] &= keep;
}

void QuantizeLutWith(Kernel kernel, const float* table, const float* add, int64_t m, float base,
                     uint8_t* lut, float* bias, float* inv_scale) {
  float rows[kMaxM * 16];  // T, m x 16
  float mins[kMaxM];
  float range = 0;
  if (kernel == Kernel::kAvx512) {
    range = internal::TableRowsAvx512(table, add, m, rows, mins);
  } else if (kernel == Kernel::kAvx2) {
    range = internal::TableRowsAvx2(table, add, m, rows, mins);
  } else {
    for (int64_t s = 0; s < m; ++s) {
      float* t = rows + s * 16;
      for (int j = 0; j < 16; ++j)
        t[j] = add == nullptr ? table[s * 16 + j] : table[s * 16 + j] + add[s * 16 + j];
      float lo = t[0], hi = t[0];
      for (int j = 1; j < 16; ++j) {
        lo = std::min(lo, t[j]);
        hi = std::max(hi, t[j]);
      }
      mins[s] = lo;
      range = std::max(range, hi - lo);
    }
  }
  float sum_min = base;
  for (int64_t s = 0; s < m; ++s) sum_min += mins[s];
  const float scale = range > 0 ? 255.0f / range : 0.0f;
  if (kernel == Kernel::kAvx512) {
    internal::QuantizeRowsAvx512(rows, mins, m, scale, lut);
  } else if (kernel == Kernel::kAvx2) {
    internal::QuantizeRowsAvx2(rows, mins, m, scale, lut);
  } else {
    for (int64_t s = 0; s < m; ++s) {
      for (int j = 0; j < 16; ++j) {
        const float q = (rows[s * 16 + j] - mins[s]) * scale + 0.5f;
        // As the SIMD min(q, 255): q when q < 255, else 255 (also for a NaN from an overflowed
        // table); q >= 0.5, so truncation rounds.
        lut[s * 16 + j] = static_cast<uint8_t>(q < 255.0f ? q : 255.0f);
      }
    }
  }
  std::fill(lut + m * 16, lut + LutBytes(m), uint8_t{0});
  *bias = sum_min;
  *inv_scale = range > 0 ? 1.0f / scale : 0.0f;
}

void QuantizeLut(const float* table, const float* add, int64_t m, float base, uint8_t* lut,
                 float* bias, float* inv_scale) {
  QuantizeLutWith(ActiveKernel(), table, add, m, base, lut, bias, inv_scale);
}

const char* KernelName(Kernel kernel) {
  switch (kernel) {
    case Kernel::kAvx512:
      return "AVX-512BW";
    case Kernel::kAvx2:
      return "AVX2";
    case Kernel::kHighway:
      return "Highway";
    case Kernel::kScalar:
      break;
  }
  return "scalar";
}

const char* HighwayTargetName() { return internal::HighwayTargetName(); }

bool KernelSupported(Kernel kernel) {
  if (kernel == Kernel::kHighway) return internal::HighwayTarget() != 0;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  switch (kernel) {
    case Kernel::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
    case Kernel::kAvx2:
      return __builtin_cpu_supports("avx2");
    case Kernel::kScalar:
      return true;
    case Kernel::kHighway:
      break;
  }
  return false;
#else
  return kernel == Kernel::kScalar;
#endif
}

Kernel BestKernel() {
  if (KernelSupported(Kernel::kAvx512)) return Kernel::kAvx512;
  if (KernelSupported(Kernel::kAvx2)) return Kernel::kAvx2;
  if (KernelSupported(Kernel::kHighway)) return Kernel::kHighway;
  return Kernel::kScalar;
}

namespace {
constinit KernelChoice<Kernel> kernel_choice(&BestKernel, &KernelSupported);
}  // namespace

Kernel ActiveKernel() { return kernel_choice.Active(); }

bool SetKernel(Kernel kernel) { return kernel_choice.Set(kernel); }

void ScanWith(Kernel kernel, const uint8_t* blocks, int64_t n, int64_t m, const uint8_t* lut,
              float bias, float inv_scale, const uint64_t* ids, TopK& top) {
  if (n <= 0) return;
  internal::Sink sink(bias, inv_scale, ids, top);
  const int64_t mp = PaddedM(m);
  switch (kernel) {
    case Kernel::kAvx512:
      internal::ScanAvx512(blocks, n, mp, lut, sink);
      return;
    case Kernel::kAvx2:
      internal::ScanAvx2(blocks, n, mp, lut, sink);
      return;
    case Kernel::kHighway:
      internal::ScanHighway(blocks, n, mp, lut, sink);
      return;
    case Kernel::kScalar:
      break;
  }
  internal::ScanScalar(blocks, n, mp, lut, sink);
}

void Scan(const uint8_t* blocks, int64_t n, int64_t m, const uint8_t* lut, float bias,
          float inv_scale, const uint64_t* ids, TopK& top) {
  ScanWith(ActiveKernel(), blocks, n, m, lut, bias, inv_scale, ids, top);
}

void ScanMultiWith(Kernel kernel, const uint8_t* blocks, int64_t n, int64_t m, const uint64_t* ids,
                   const QueryTable* queries, int64_t count) {
  if (n <= 0) return;
  const int64_t mp = PaddedM(m);
  // Groups of at most kMaxQueries (AVX2: 3, as its 16 registers hold 3 x 4 accumulators but
  // not 4 x 4), as even as possible (5 -> 2 + 3, not 4 + 1): a lone query would read the codes
  // again for itself alone.
  // The Highway kernel has no multi-query form: its queries go one at a time.
  const int64_t most = kernel == Kernel::kAvx2 ? 3 : kernel == Kernel::kHighway ? 1 : kMaxQueries;
  const int64_t groups = (count + most - 1) / most;
  int64_t first = 0;
  for (int64_t g = 0; g < groups; ++g) {
    const int q = static_cast<int>((count - first) / (groups - g));
    if (q == 1) {  // the single-query kernels (AVX-512 holds the table in registers)
      const QueryTable& t = queries[first];
      ScanWith(kernel, blocks, n, m, t.lut, t.bias, t.inv_scale, ids, *t.top);
      ++first;
      continue;
    }
    std::optional<internal::Sink> sinks[kMaxQueries];
    internal::Sink* sink_ptrs[kMaxQueries];
    const uint8_t* luts[kMaxQueries];
    for (int j = 0; j < q; ++j) {
      const QueryTable& t = queries[first + j];
      sink_ptrs[j] = &sinks[j].emplace(t.bias, t.inv_scale, ids, *t.top);
      luts[j] = t.lut;
    }
    switch (kernel) {
      case Kernel::kAvx512:
        internal::ScanMultiAvx512(blocks, n, mp, luts, sink_ptrs, q);
        break;
      case Kernel::kAvx2:
        internal::ScanMultiAvx2(blocks, n, mp, luts, sink_ptrs, q);
        break;
      case Kernel::kHighway:  // groups of one (above): not reached
      case Kernel::kScalar:
        internal::ScanMultiScalar(blocks, n, mp, luts, sink_ptrs, q);
        break;
    }
    first += q;
  }
}

void ScanMulti(const uint8_t* blocks, int64_t n, int64_t m, const uint64_t* ids,
               const QueryTable* queries, int64_t count) {
  ScanMultiWith(ActiveKernel(), blocks, n, m, ids, queries, count);
}

namespace internal {

Sink::Sink(float bias, float inv_scale, const uint64_t* ids, TopK& top)
    : bias_(bias), inv_scale_(inv_scale), ids_(ids), top_(top) {
  UpdateThreshold();
}

void Sink::UpdateThreshold() {
  const float threshold = top_.threshold();
  if (!(threshold < std::numeric_limits<float>::infinity()) || inv_scale_ <= 0) {
    threshold16_ = 0xffff;
    return;
  }
  // Largest sum whose distance bias + sum * inv_scale can be <= threshold, with a slack for the
  // float rounding of that expression (relative 2^-24 of each magnitude involved) so the 16-bit
  // test never rejects what the exact test in Collect would accept.
  const double scale = 1.0 / static_cast<double>(inv_scale_);
  const double exact = (static_cast<double>(threshold) - bias_) * scale;
  const double magnitude = std::fabs(threshold) + std::fabs(bias_) + 65536.0 * inv_scale_;
  const double limit = std::floor(exact + magnitude * 0x1p-21 * scale + 2.0);
  threshold16_ = limit < 0 ? 0 : limit > 65535 ? 0xffff : static_cast<uint16_t>(limit);
}

void Sink::Collect(int64_t first, uint32_t mask, const uint16_t* sums) {
  while (mask != 0) {
    const int v = __builtin_ctz(mask);
    mask &= mask - 1;
    if (sums[v] > threshold16_) continue;  // the threshold tightened since the block's test
    const float distance = bias_ + static_cast<float>(sums[v]) * inv_scale_;
    const float before = top_.threshold();
    if (!(distance <= before)) continue;
    top_.Push(distance, ids_[first + v]);
    if (top_.threshold() != before) UpdateThreshold();
  }
}

}  // namespace internal
}  // namespace quantd::fastscan
