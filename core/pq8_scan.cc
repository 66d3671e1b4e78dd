#include "core/pq8_scan.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/container/inlined_vector.h"
#include "core/kernel_choice.h"

namespace quantd::pq8 {
namespace {

// Distance of one code with m a multiple of 4 known at compile time (kM > 0) or not (kM == 0):
// four accumulators, accumulator r taking sub-quantizers s = r mod 4 in increasing s. The code
// bytes are read 8 (or 4) at a time and split with shifts: one load instead of eight leaves the
// load ports to the table lookups, which bound this loop (1.37x fewer ns a code at M = 16 on
// AMD Zen 5 than byte loads; float gathers measured 2-3x slower than scalar lookups there).
template <int kM>
inline float Distance4(const uint8_t* c, int64_t m_runtime, const float* sim, float base) {
  const int64_t m = kM > 0 ? kM : m_runtime;
  float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  int64_t s = 0;
  for (; s + 8 <= m; s += 8) {
    uint64_t w;
    std::memcpy(&w, c + s, sizeof(w));
    const float* t = sim + s * 256;
    a0 += t[w & 255];
    a1 += t[256 + ((w >> 8) & 255)];
    a2 += t[512 + ((w >> 16) & 255)];
    a3 += t[768 + ((w >> 24) & 255)];
    a0 += t[1024 + ((w >> 32) & 255)];
    a1 += t[1280 + ((w >> 40) & 255)];
    a2 += t[1536 + ((w >> 48) & 255)];
    a3 += t[1792 + (w >> 56)];
  }
  if (s < m) {  // m mod 8 == 4
    uint32_t w;
    std::memcpy(&w, c + s, sizeof(w));
    const float* t = sim + s * 256;
    a0 += t[w & 255];
    a1 += t[256 + ((w >> 8) & 255)];
    a2 += t[512 + ((w >> 16) & 255)];
    a3 += t[768 + (w >> 24)];
  }
  return base + ((a0 + a1) + (a2 + a3));
}

// Any m: two accumulators (s mod 2).
inline float Distance2(const uint8_t* c, int64_t m, const float* sim, float base) {
  float a0 = 0, a1 = 0;
  int64_t s = 0;
  for (; s + 2 <= m; s += 2) {
    a0 += sim[s * 256 + c[s]];
    a1 += sim[(s + 1) * 256 + c[s + 1]];
  }
  if (s < m) a0 += sim[s * 256 + c[s]];
  return base + (a0 + a1);
}

template <int kM>
void ScanFixed(const uint8_t* codes, const uint64_t* ids, int64_t n, int64_t m, const float* sim,
               float base, TopK& top) {
  for (int64_t i = 0; i < n; ++i) {
    const float distance = Distance4<kM>(codes + i * (kM > 0 ? kM : m), m, sim, base);
    if (distance <= top.threshold()) top.Push(distance, ids[i]);
  }
}

// ScanFixed at m if m is one of kMs (returns true), else nothing (false).
template <int... kMs>
bool ScanIfFixed(const uint8_t* codes, const uint64_t* ids, int64_t n, int64_t m, const float* sim,
                 float base, TopK& top) {
  return ((m == kMs && (ScanFixed<kMs>(codes, ids, n, m, sim, base, top), true)) || ...);
}

void ScanScalar(const uint8_t* codes, const uint64_t* ids, int64_t n, int64_t m, const float* sim,
                float base, TopK& top) {
  if (ScanIfFixed<4, 8, 12, 16, 24, 32, 48, 64>(codes, ids, n, m, sim, base, top)) return;
  if (m % 4 == 0) return ScanFixed<0>(codes, ids, n, m, sim, base, top);
  for (int64_t i = 0; i < n; ++i) {
    const float distance = Distance2(codes + i * m, m, sim, base);
    if (distance <= top.threshold()) top.Push(distance, ids[i]);
  }
}

}  // namespace

float Distance(const uint8_t* code, int64_t m, const float* sim, float base) {
  return m % 4 == 0 ? Distance4<0>(code, m, sim, base) : Distance2(code, m, sim, base);
}

const char* KernelName(Kernel kernel) {
  return kernel == Kernel::kAvx512Vbmi ? "AVX-512 VBMI" : "scalar";
}

bool KernelSupported(Kernel kernel) {
  if (kernel == Kernel::kScalar) return true;
#if defined(__x86_64__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vbmi");
#else
  return false;
#endif
}

Kernel BestKernel() {
  return KernelSupported(Kernel::kAvx512Vbmi) ? Kernel::kAvx512Vbmi : Kernel::kScalar;
}

namespace {
constinit KernelChoice<Kernel> kernel_choice(&BestKernel, &KernelSupported);
}  // namespace

Kernel ActiveKernel() { return kernel_choice.Active(); }

bool SetKernel(Kernel kernel) { return kernel_choice.Set(kernel); }

void Scan(const uint8_t* codes, const uint64_t* ids, int64_t n, int64_t m, const float* sim,
          float base, TopK& top, Scratch& scratch, ScanCounts* counts) {
  ScanWith(ActiveKernel(), codes, ids, n, m, sim, base, top, scratch, counts);
}

void ScanWith(Kernel kernel, const uint8_t* codes, const uint64_t* ids, int64_t n, int64_t m,
              const float* sim, float base, TopK& top, Scratch& scratch, ScanCounts* counts) {
  int64_t i = 0;
#if defined(__x86_64__)
  if (kernel == Kernel::kAvx512Vbmi && n >= internal::kMinCodes) {
    // The bound needs a threshold: float until the heap is full.
    constexpr int64_t kStep = 16;
    while (i < n && std::isinf(top.threshold())) {
      const int64_t step = std::min(kStep, n - i);
      ScanScalar(codes + i * m, ids + i, step, m, sim, base, top);
      i += step;
    }
    if (n - i >= internal::kMinCodes) {
      scratch.lut.resize(static_cast<size_t>(m * 256));
      internal::Bound bound;
      if (bound.Build(sim, m, base, top.threshold(), scratch.lut.data())) {
        const int64_t blocks = (n - i) / 64;
        const int64_t rescored = internal::ScanBlocksAvx512Vbmi(
            codes + i * m, ids + i, blocks, m, scratch.lut.data(), bound, sim, base, top);
        if (counts != nullptr) {
          counts->filtered += blocks * 64;
          counts->rescored += rescored;
        }
        i += blocks * 64;
      }
    }
  }
#else
  (void)kernel;
  (void)scratch;
  (void)counts;
#endif
  ScanScalar(codes + i * m, ids + i, n - i, m, sim, base, top);
}

#if defined(__x86_64__)
namespace internal {

bool Bound::Build(const float* sim, int64_t m, float base, float threshold, uint8_t* lut) {
  absl::InlinedVector<float, 64> mins(static_cast<size_t>(m));  // no allocation up to M 64
  RowMinsAvx512(sim, m, mins.data());
  double floor = base, magnitude = std::fabs(static_cast<double>(base));
  for (int64_t s = 0; s < m; ++s) {
    floor += mins[s];
    magnitude += std::fabs(static_cast<double>(mins[s]));
  }
  // Rounding. A float distance (a sum of m + 1 terms, at most m / 2 + 2 deep) is within
  // (m + 2) 2^-24 of the sum of its terms' magnitudes from the real sum; for a code that could
  // pass the threshold those are at most |base| + sum_s |t_s| + (threshold - floor) (each entry
  // is t_s plus a non-negative excess, and the excesses sum to about threshold - floor). Twice
  // that covers the sums in double here too. Tables with infinities or NaN make floor or the
  // range non-finite and the caller scans in float (a NaN entry elsewhere gives a NaN distance,
  // which the float test never admits, and quantises to 255).
  const double room = static_cast<double>(threshold) - floor;
  magnitude += std::fabs(room);
  margin_ = 2.0 * static_cast<double>(m + 2) * std::ldexp(1.0, -24) * magnitude;
  floor_ = floor;
  const double range = room + margin_;
  if (!(range > 0) || !std::isfinite(range)) return false;
  const auto scale = static_cast<float>(kTargetPerSub * static_cast<double>(m) / range);
  if (!(scale > 0) || !std::isfinite(scale)) return false;
  scale_ = scale;
  QuantizeRowsAvx512(sim, mins.data(), m, scale, lut);
  return true;
}

int32_t Bound::Limit(float threshold) const {
  // sum_s q <= scale (1 + u)^2 sum_s (sim - t_s) (real) <= scale (1 + 1e-6) (threshold - floor
  // + margin) for a code whose float distance is <= threshold.
  const double v = (static_cast<double>(threshold) - floor_ + margin_) * scale_ * (1.0 + 1e-6);
  if (!(v >= 0)) return -1;
  if (v >= 65535.0) return 65535;
  return static_cast<int32_t>(v);
}

}  // namespace internal
#endif  // __x86_64__
}  // namespace quantd::pq8
