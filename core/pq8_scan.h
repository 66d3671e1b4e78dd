// Scan of 8-bit PQ codes in the plain (row-major) layout: n codes of m bytes, code i at
// codes + i m, and a float table sim (m x 256: entry [s][j] = sub-distance of sub-code j of
// sub-quantizer s). The distance of code i is
//   base + ((a0 + a1) + (a2 + a3)),  accumulator r summing sim[s][code_s] over s = r mod 4 in
//   increasing s (m a multiple of 4), or  base + (a0 + a1)  with s mod 2 otherwise,
// a float sum in one fixed order, so every kernel reports the same distances.
//
// The SIMD kernel is an exact filter in front of that sum. Per (query, list) the table is
// quantised into a lower bound in bytes,
//   q[s][j] = min(255, floor((sim[s][j] - t_s) * scale)),  t_s = min_j sim[s][j],
// whose sum over a code's sub-codes is <= scale (distance - base - sum_s t_s) up to the rounding
// of the float sums (bounded and added as a margin). `scale` is chosen from the heap's threshold
// when the list starts, so that the threshold sits near 64 m (of at most 255 m). Blocks of 64
// codes are transposed in registers (AVX-512 VBMI two-table byte permutes) so that each register
// holds one sub-quantizer's sub-codes of 64 codes, looked up in the 256-byte table by two
// 128-entry permutes and a blend, and summed (saturating, which keeps a lower bound) into 16-bit
// lanes. Codes whose bound passes the threshold are rescored with the float sum above; the rest
// cannot enter the heap. So the heap ends exactly as after the scalar scan: the same candidates,
// pushed in the same order, with the same distances.
#ifndef QUANTD_CORE_PQ8_SCAN_H_
#define QUANTD_CORE_PQ8_SCAN_H_

#include <cstdint>
#include <vector>

#include "core/top_k.h"

namespace quantd::pq8 {

enum class Kernel { kScalar = 0, kAvx512Vbmi = 1 };

// "scalar" or "AVX-512 VBMI".
const char* KernelName(Kernel kernel);
// Whether this CPU (and OS) can run the kernel; kScalar always.
bool KernelSupported(Kernel kernel);
// The fastest supported kernel.
Kernel BestKernel();
// The kernel Scan uses: BestKernel() unless SetKernel chose another; SetKernel returns false
// (and changes nothing) for an unsupported kernel. For tests and benchmarks.
Kernel ActiveKernel();
bool SetKernel(Kernel kernel);

// Work space of a scan (the quantised table), reused across the scans of one thread.
struct Scratch {
  std::vector<uint8_t> lut;
};

// What a scan did, for benchmarks and tests.
struct ScanCounts {
  int64_t filtered = 0;  // codes tested by the SIMD bound
  int64_t rescored = 0;  // of those, codes whose bound passed (rescored in float)
};

// Scans codes[0, n) (m >= 1 bytes each) with the table sim (m x 256 finite floats), pushing into
// `top` every code i whose distance is <= top.threshold() at the time it is reached, with id
// ids[i], as the scalar loop does. Adds to *counts when not null.
void Scan(const uint8_t* codes, const uint64_t* ids, int64_t n, int64_t m, const float* sim,
          float base, TopK& top, Scratch& scratch, ScanCounts* counts = nullptr);
// As Scan with a given kernel (which must be supported).
void ScanWith(Kernel kernel, const uint8_t* codes, const uint64_t* ids, int64_t n, int64_t m,
              const float* sim, float base, TopK& top, Scratch& scratch,
              ScanCounts* counts = nullptr);

// The distance of one code (the float sum above).
float Distance(const uint8_t* code, int64_t m, const float* sim, float base);

#if defined(__x86_64__)
namespace internal {

// The lower-bound table of one (query, list) scan and its threshold conversion.
class Bound {
 public:
  // Quantises sim (m x 256) into lut (m x 256 bytes) for a heap threshold `threshold`. Returns
  // false when no scale applies (threshold at or below the table's least distance, or values
  // that are not finite): the caller then scans in float. Needs the AVX-512 VBMI kernel's CPU.
  bool Build(const float* sim, int64_t m, float base, float threshold, uint8_t* lut);
  // The largest byte sum a code at or under `threshold` can have; -1 when none can.
  int32_t Limit(float threshold) const;

 private:
  double floor_ = 0;   // base + sum_s t_s
  double margin_ = 0;  // bound on the rounding of a float distance
  double scale_ = 0;   // as used by the quantisation (a float)
};

// Sums to scale targets: the threshold maps to about kTargetPerSub a sub-quantizer.
constexpr double kTargetPerSub = 64.0;
// Codes left in a list below which the table is not worth building (the scalar loop runs).
constexpr int64_t kMinCodes = 192;

// Per row s of sim (m x 256): its minimum into mins[s] (NaN entries may be skipped).
void RowMinsAvx512(const float* sim, int64_t m, float* mins);
// lut[s][j] = min(255, floor((sim[s][j] - mins[s]) * scale)), m x 256 bytes.
void QuantizeRowsAvx512(const float* sim, const float* mins, int64_t m, float scale, uint8_t* lut);
// AVX-512 VBMI kernel over whole blocks of 64 codes starting at codes (`blocks` of them): the
// codes whose byte sum is <= limit get the float distance and go to top; limit follows top's
// threshold through `bound`. Returns the codes rescored.
int64_t ScanBlocksAvx512Vbmi(const uint8_t* codes, const uint64_t* ids, int64_t blocks, int64_t m,
                             const uint8_t* lut, const Bound& bound, const float* sim, float base,
                             TopK& top);

}  // namespace internal
#endif  // __x86_64__
}  // namespace quantd::pq8

#endif  // QUANTD_CORE_PQ8_SCAN_H_
