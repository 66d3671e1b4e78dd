// 4-bit PQ fast-scan: codes of 4-bit product quantizers laid out for in-register table lookups
// (the idea of André et al.'s "Quicker ADC" and FAISS's IndexPQFastScan; this is our own layout
// and kernels), so that one byte shuffle looks up 16 (AVX2: 32, AVX-512: 64) sub-distances.
//
// Vocabulary: M sub-quantizers of 16 centroids each; Mp = M rounded up to a multiple of 4 (the
// padding sub-quantizers have code 0 and an all-zero table, so they add nothing).
//
// Layout of a list of n codes: ceil(n / 32) blocks of BlockBytes(M) = Mp x 16 bytes. Block b
// holds vectors 32b .. 32b + 31 ("slots" 0..31). Inside a block, sub-quantizer s owns the 16
// bytes at offset 16 s, and slot v's code of s is the nibble
//   byte  (v & 7) * 2 + ((v >> 3) & 1),   low nibble for v < 16, high nibble for v >= 16.
// So one 16-byte load of sub-quantizer s gives, after masking the low nibbles, the codes of
// slots 0..15 with slots 0..7 at even bytes and 8..15 at odd bytes (high nibbles: 16..31 the
// same way); consecutive sub-quantizers are consecutive 16-byte lanes, which is what a 32- or
// 64-byte shuffle wants (one table of 16 bytes per lane). Slots >= n in the last block hold
// code 0 and are never reported.
//
// Distances: a per-(query, list) float table T (M x 16) plus a base is quantised to bytes,
//   lut[s][j] = round((T[s][j] - min_j T[s][j]) * scale),  scale = 255 / max_s range_s,
//   distance(v) = bias + sum_s lut[s][code_s(v)] * inv_scale,  bias = base + sum_s min_j T[s][j],
// and the kernels add the bytes exactly into 16-bit sums (Mp <= 256 keeps every sum below 2^16).
// Every kernel reports the same candidates with the same float distance (computed in one place,
// `Collect` in fastscan.cc), so results never depend on the CPU.
#ifndef QUANTD_CORE_FASTSCAN_H_
#define QUANTD_CORE_FASTSCAN_H_

#include <cstdint>

#include "core/top_k.h"

namespace quantd::fastscan {

constexpr int64_t kBlockSize = 32;  // vectors per block
constexpr int64_t kMaxM = 256;      // sums of Mp bytes must fit in 16 bits

inline int64_t PaddedM(int64_t m) { return (m + 3) & ~int64_t{3}; }
// Bytes of one block of 32 codes: Mp sub-quantizers x 16 bytes.
inline int64_t BlockBytes(int64_t m) { return PaddedM(m) * 16; }
inline int64_t NumBlocks(int64_t n) { return (n + kBlockSize - 1) / kBlockSize; }
// Bytes of the lookup table given to a scan: Mp x 16.
inline int64_t LutBytes(int64_t m) { return PaddedM(m) * 16; }

// Writes / reads the code of slot i (i >= 0, inside the allocated blocks) of a blocked list.
// `code` is a ProductQuantizer code with 4-bit sub-codes (ceil(M / 2) bytes, sub-quantizer 2t in
// the low nibble of byte t, 2t + 1 in the high nibble).
void SetCode(uint8_t* blocks, int64_t m, int64_t i, const uint8_t* code);
void GetCode(const uint8_t* blocks, int64_t m, int64_t i, uint8_t* code);
// Sets slot i to code 0 (as a fresh block's slots are).
void ClearCode(uint8_t* blocks, int64_t m, int64_t i);
// Sub-code of sub-quantizer s in slot i.
inline int GetSubCode(const uint8_t* blocks, int64_t m, int64_t i, int64_t s) {
  const int64_t v = i & (kBlockSize - 1);
  const uint8_t byte =
      blocks[(i / kBlockSize) * BlockBytes(m) + s * 16 + (v & 7) * 2 + ((v >> 3) & 1)];
  return v < 16 ? (byte & 15) : (byte >> 4);
}

// kHighway: the kernel written once with Google Highway and dispatched to the CPU's best SIMD
// target (SSSE3 .. AVX-512 on x86, NEON on ARM); the hand-written x86 kernels come first where
// the CPU has them (faster there at the common M), Highway on every other CPU with byte shuffles.
enum class Kernel { kScalar = 0, kAvx2 = 1, kAvx512 = 2, kHighway = 3 };

// Quantises the float table T = table + add (M x 16 each; add may be null: T = table) with
// `base` into lut (LutBytes(M) bytes; rows M..Mp are zero), and returns bias and inv_scale (see
// the header comment). A table with no spread gives an all-zero lut and inv_scale 0. Entries
// must be finite; m <= kMaxM. Every kernel computes the same bytes, bias and scale (the same
// float operations, no fused multiply-add); QuantizeLut uses ActiveKernel().
void QuantizeLut(const float* table, const float* add, int64_t m, float base, uint8_t* lut,
                 float* bias, float* inv_scale);
void QuantizeLutWith(Kernel kernel, const float* table, const float* add, int64_t m, float base,
                     uint8_t* lut, float* bias, float* inv_scale);
// "scalar", "AVX2", "AVX-512BW" or "Highway" (HighwayTargetName says which target it runs).
const char* KernelName(Kernel kernel);
// The SIMD target the Highway kernel dispatches to on this CPU ("AVX3", "NEON", ...), "none"
// when the CPU has none with byte shuffles.
const char* HighwayTargetName();
// Whether this CPU (and OS) can run the kernel; kScalar always.
bool KernelSupported(Kernel kernel);
// The fastest supported kernel.
Kernel BestKernel();
// The kernel Scan uses: BestKernel() unless SetKernel chose another. SetKernel returns false
// (and changes nothing) when the kernel is not supported. For tests and benchmarks; not meant
// to be changed while scans run.
Kernel ActiveKernel();
bool SetKernel(Kernel kernel);

// Scans n codes in blocks (NumBlocks(n) x BlockBytes(m) bytes) with the quantised table lut
// (LutBytes(m) bytes), pushing into `top` every vector i whose distance bias + sum_i * inv_scale
// is <= top.threshold() at the time it is reached, with id ids[i]. m <= kMaxM.
void Scan(const uint8_t* blocks, int64_t n, int64_t m, const uint8_t* lut, float bias,
          float inv_scale, const uint64_t* ids, TopK& top);
// As Scan with a given kernel (which must be supported).
void ScanWith(Kernel kernel, const uint8_t* blocks, int64_t n, int64_t m, const uint8_t* lut,
              float bias, float inv_scale, const uint64_t* ids, TopK& top);

// Multi-query scan: one list's blocks read once for several queries, each with its own table.
// A query's table: lut (LutBytes(m) bytes), bias and inv_scale as from QuantizeLut, and the heap
// it fills (not shared with another query of the same call).
struct QueryTable {
  const uint8_t* lut;
  float bias;
  float inv_scale;
  TopK* top;
};
// Queries a kernel scans together (their accumulators stay in registers while a block's codes
// are loaded once; AVX2 takes at most 3); ScanMulti takes any count and scans it in groups of at
// most this many.
constexpr int kMaxQueries = 4;
// Scans n codes in blocks (as Scan) for queries[0 .. count): every query's heap ends exactly as
// after Scan(blocks, n, m, q.lut, q.bias, q.inv_scale, ids, *q.top) (same candidates pushed in
// the same order with the same distances), whichever kernel runs. m <= kMaxM.
void ScanMulti(const uint8_t* blocks, int64_t n, int64_t m, const uint64_t* ids,
               const QueryTable* queries, int64_t count);
// As ScanMulti with a given kernel (which must be supported).
void ScanMultiWith(Kernel kernel, const uint8_t* blocks, int64_t n, int64_t m, const uint64_t* ids,
                   const QueryTable* queries, int64_t count);

namespace internal {

// Receives the survivors of a block from a kernel: holds the table's decode parameters and the
// current threshold as a 16-bit sum, kept conservative (every sum whose float distance could
// pass the heap's threshold is <= threshold16).
class Sink {
 public:
  Sink(float bias, float inv_scale, const uint64_t* ids, TopK& top);
  uint16_t threshold16() const { return threshold16_; }
  // Slots `mask` (bit v: slot v) of the block starting at vector `first` passed the 16-bit test;
  // sums holds the block's 32 sums in slot order. Pushes those that pass the exact test.
  void Collect(int64_t first, uint32_t mask, const uint16_t* sums);

 private:
  void UpdateThreshold();
  float bias_;
  float inv_scale_;
  const uint64_t* ids_;
  TopK& top_;
  uint16_t threshold16_ = 0xffff;
};

// Mask of the valid slots of block b of a list of n vectors.
inline uint32_t ValidMask(int64_t b, int64_t n) {
  const int64_t left = n - b * kBlockSize;
  return left >= kBlockSize ? 0xffffffffu : ((uint32_t{1} << left) - 1);
}

// Table kernels (fastscan_kernels.cc): T = table + add (add may be null) into rows (m x 16
// floats), per-row minimum into mins (m), and the largest row range; then the bytes.
float TableRowsAvx2(const float* table, const float* add, int64_t m, float* rows, float* mins);
float TableRowsAvx512(const float* table, const float* add, int64_t m, float* rows, float* mins);
void QuantizeRowsAvx2(const float* rows, const float* mins, int64_t m, float scale, uint8_t* lut);
void QuantizeRowsAvx512(const float* rows, const float* mins, int64_t m, float scale, uint8_t* lut);

// Kernels (fastscan_kernels.cc); m is padded (a multiple of 4).
void ScanScalar(const uint8_t* blocks, int64_t n, int64_t mp, const uint8_t* lut, Sink& sink);
void ScanAvx2(const uint8_t* blocks, int64_t n, int64_t mp, const uint8_t* lut, Sink& sink);
void ScanAvx512(const uint8_t* blocks, int64_t n, int64_t mp, const uint8_t* lut, Sink& sink);
// fastscan_hwy.cc: the Highway kernel, and the bit of the Highway target it dispatches to (0:
// none with byte shuffles, then it runs the scalar kernel).
void ScanHighway(const uint8_t* blocks, int64_t n, int64_t mp, const uint8_t* lut, Sink& sink);
int64_t HighwayTarget();
const char* HighwayTargetName();
// Multi-query kernels: q tables (1 <= q <= kMaxQueries) luts[j] with sinks[j]; m padded.
void ScanMultiScalar(const uint8_t* blocks, int64_t n, int64_t mp, const uint8_t* const* luts,
                     Sink* const* sinks, int q);
void ScanMultiAvx2(const uint8_t* blocks, int64_t n, int64_t mp, const uint8_t* const* luts,
                   Sink* const* sinks, int q);
void ScanMultiAvx512(const uint8_t* blocks, int64_t n, int64_t mp, const uint8_t* const* luts,
                     Sink* const* sinks, int q);

}  // namespace internal
}  // namespace quantd::fastscan

#endif  // QUANTD_CORE_FASTSCAN_H_
