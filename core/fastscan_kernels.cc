// Fast-scan kernels: the portable reference and x86 kernels compiled with target attributes
// (nothing here needs -march; ActiveKernel picks one at run time from the CPU's features).
//
// The SIMD kernels add the looked-up bytes of 16-bit lanes without unpacking them: a shuffle
// result r holds byte pairs (r[2w], r[2w + 1]) = (slot w, slot w + 8) of a 16-slot group, and
// adding r as 16-bit words into A and (r >> 8) into B gives, modulo 2^16,
//   B = sum r[2w + 1]                 (slots 8..15 of the group)
//   A - (B << 8) = sum r[2w]          (slots 0..7)
// which are exact because every true sum is below 2^16 (Mp x 255 < 65536).
#include <algorithm>
#include <cstring>

#include "core/fastscan.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
// GCC 12's AVX-512 intrinsics (set1 / extract through _mm512_undefined_*) trip a false
// -Wmaybe-uninitialized once inlined here.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace quantd::fastscan::internal {

namespace {

// The 32 sums of one block (slot order) with lut, and the mask of slots <= threshold.
uint32_t BlockSumsScalar(const uint8_t* block, int64_t mp, const uint8_t* lut, uint16_t threshold,
                         uint16_t* sums) {
  uint32_t mask = 0;
  for (int v = 0; v < kBlockSize; ++v) {
    const int byte = (v & 7) * 2 + ((v >> 3) & 1);
    const int shift = v < 16 ? 0 : 4;
    uint32_t sum = 0;
    for (int64_t s = 0; s < mp; ++s) sum += lut[s * 16 + ((block[s * 16 + byte] >> shift) & 15)];
    sums[v] = static_cast<uint16_t>(sum);
    if (sums[v] <= threshold) mask |= uint32_t{1} << v;
  }
  return mask;
}

}  // namespace

void ScanScalar(const uint8_t* blocks, int64_t n, int64_t mp, const uint8_t* lut, Sink& sink) {
  const uint8_t* table = lut;
  Sink* sinks = &sink;
  ScanMultiScalar(blocks, n, mp, &table, &sinks, 1);
}

void ScanMultiScalar(const uint8_t* blocks, int64_t n, int64_t mp, const uint8_t* const* luts,
                     Sink* const* sinks, int q) {
  const int64_t block_bytes = mp * 16;
  uint16_t sums[kBlockSize];
  for (int64_t b = 0; b < NumBlocks(n); ++b) {
    const uint8_t* block = blocks + b * block_bytes;
    // Query by query: each query's threshold is the one its own earlier blocks left.
    for (int j = 0; j < q; ++j) {
      const uint32_t mask =
          BlockSumsScalar(block, mp, luts[j], sinks[j]->threshold16(), sums) & ValidMask(b, n);
      if (mask != 0) sinks[j]->Collect(b * kBlockSize, mask, sums);
    }
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

// Smallest / largest of the 8 lanes (exact: min and max do not round).
__attribute__((target("avx2"))) inline float HorizontalMin(__m256 v) {
  __m128 x = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_min_ps(x, _mm_movehl_ps(x, x));
  x = _mm_min_ss(x, _mm_shuffle_ps(x, x, 1));
  return _mm_cvtss_f32(x);
}
__attribute__((target("avx2"))) inline float HorizontalMax(__m256 v) {
  __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_max_ps(x, _mm_movehl_ps(x, x));
  x = _mm_max_ss(x, _mm_shuffle_ps(x, x, 1));
  return _mm_cvtss_f32(x);
}

}  // namespace

__attribute__((target("avx2"))) float TableRowsAvx2(const float* table, const float* add, int64_t m,
                                                    float* rows, float* mins) {
  float range = 0;
  for (int64_t s = 0; s < m; ++s) {
    __m256 a = _mm256_loadu_ps(table + s * 16);
    __m256 b = _mm256_loadu_ps(table + s * 16 + 8);
    if (add != nullptr) {
      a = _mm256_add_ps(a, _mm256_loadu_ps(add + s * 16));
      b = _mm256_add_ps(b, _mm256_loadu_ps(add + s * 16 + 8));
    }
    _mm256_storeu_ps(rows + s * 16, a);
    _mm256_storeu_ps(rows + s * 16 + 8, b);
    const float lo = HorizontalMin(_mm256_min_ps(a, b));
    const float hi = HorizontalMax(_mm256_max_ps(a, b));
    mins[s] = lo;
    range = std::max(range, hi - lo);
  }
  return range;
}

__attribute__((target("avx2"))) void QuantizeRowsAvx2(const float* rows, const float* mins,
                                                      int64_t m, float scale, uint8_t* lut) {
  const __m256 scale8 = _mm256_set1_ps(scale);
  const __m256 half = _mm256_set1_ps(0.5f);
  const __m256 top = _mm256_set1_ps(255.0f);
  for (int64_t s = 0; s < m; ++s) {
    const __m256 lo = _mm256_set1_ps(mins[s]);
    // Same operations as the scalar path: ((t - min) * scale + 0.5) capped at 255, truncated.
    const __m256 qa = _mm256_min_ps(
        _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(rows + s * 16), lo), scale8),
                      half),
        top);
    const __m256 qb = _mm256_min_ps(
        _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(rows + s * 16 + 8), lo), scale8),
                      half),
        top);
    const __m256i ia = _mm256_cvttps_epi32(qa);
    const __m256i ib = _mm256_cvttps_epi32(qb);
    // 16 int32 in [0, 255] to 16 bytes: pack to int16 (lanes interleave), then to bytes.
    const __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(ia, ib), 0xd8);
    const __m128i bytes =
        _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(lut + s * 16), bytes);
  }
}

__attribute__((target("avx2,avx512f,avx512bw"))) float TableRowsAvx512(const float* table,
                                                                       const float* add, int64_t m,
                                                                       float* rows, float* mins) {
  float range = 0;
  for (int64_t s = 0; s < m; ++s) {
    __m512 t = _mm512_loadu_ps(table + s * 16);
    if (add != nullptr) t = _mm512_add_ps(t, _mm512_loadu_ps(add + s * 16));
    _mm512_storeu_ps(rows + s * 16, t);
    const float lo = _mm512_reduce_min_ps(t);
    const float hi = _mm512_reduce_max_ps(t);
    mins[s] = lo;
    range = std::max(range, hi - lo);
  }
  return range;
}

__attribute__((target("avx2,avx512f,avx512bw"))) void QuantizeRowsAvx512(const float* rows,
                                                                         const float* mins,
                                                                         int64_t m, float scale,
                                                                         uint8_t* lut) {
  const __m512 scale16 = _mm512_set1_ps(scale);
  const __m512 half = _mm512_set1_ps(0.5f);
  const __m512 top = _mm512_set1_ps(255.0f);
  for (int64_t s = 0; s < m; ++s) {
    const __m512 q = _mm512_min_ps(
        _mm512_add_ps(
            _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(rows + s * 16), _mm512_set1_ps(mins[s])),
                          scale16),
            half),
        top);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(lut + s * 16),
                     _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(q)));
  }
}

// kMp > 0: the sub-quantizer count is known at compile time (loops unrolled, the AVX-512 tables
// held in registers); kMp == 0: mp at run time.
template <int kMp>
__attribute__((target("avx2"))) void ScanAvx2Impl(const uint8_t* blocks, int64_t n, int64_t mp,
                                                  const uint8_t* lut, Sink& sink) {
  if constexpr (kMp > 0) mp = kMp;
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

__attribute__((target("avx2"))) void ScanAvx2(const uint8_t* blocks, int64_t n, int64_t mp,
                                              const uint8_t* lut, Sink& sink) {
  switch (mp) {
    case 8:
      return ScanAvx2Impl<8>(blocks, n, mp, lut, sink);
    case 16:
      return ScanAvx2Impl<16>(blocks, n, mp, lut, sink);
    case 32:
      return ScanAvx2Impl<32>(blocks, n, mp, lut, sink);
    case 64:
      return ScanAvx2Impl<64>(blocks, n, mp, lut, sink);
    default:
      return ScanAvx2Impl<0>(blocks, n, mp, lut, sink);
  }
}

// kQ queries a block: the block's codes (and their nibble indices) are loaded once per pair of
// sub-quantizers and shuffled with each query's table into that query's four accumulators.
template <int kMp, int kQ>
__attribute__((target("avx2"))) void ScanMultiAvx2Impl(const uint8_t* blocks, int64_t n, int64_t mp,
                                                       const uint8_t* const* luts,
                                                       Sink* const* sinks) {
  if constexpr (kMp > 0) mp = kMp;
  const int64_t block_bytes = mp * 16;
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  alignas(32) uint16_t sums[kBlockSize];
  const uint8_t* lut[kQ];
  for (int j = 0; j < kQ; ++j) lut[j] = luts[j];
  for (int64_t b = 0; b < NumBlocks(n); ++b) {
    const uint8_t* block = blocks + b * block_bytes;
    __m256i acc[kQ][4];
    for (int j = 0; j < kQ; ++j) {
      for (int i = 0; i < 4; ++i) acc[j][i] = _mm256_setzero_si256();
    }
    // Not unrolled: the kQ x 4 accumulators need the registers (unrolling spills them).
#pragma GCC unroll 1
    for (int64_t s = 0; s < mp; s += 2) {
      const __m256i codes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + s * 16));
      const __m256i low = _mm256_and_si256(codes, low4);
      const __m256i high = _mm256_and_si256(_mm256_srli_epi16(codes, 4), low4);
      for (int j = 0; j < kQ; ++j) {
        const __m256i table = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lut[j] + s * 16));
        const __m256i lo = _mm256_shuffle_epi8(table, low);
        const __m256i hi = _mm256_shuffle_epi8(table, high);
        acc[j][0] = _mm256_add_epi16(acc[j][0], lo);
        acc[j][1] = _mm256_add_epi16(acc[j][1], _mm256_srli_epi16(lo, 8));
        acc[j][2] = _mm256_add_epi16(acc[j][2], hi);
        acc[j][3] = _mm256_add_epi16(acc[j][3], _mm256_srli_epi16(hi, 8));
      }
    }
    const uint32_t valid = ValidMask(b, n);
    for (int j = 0; j < kQ; ++j) {
      const uint32_t mask =
          FinishBlock(acc[j][0], acc[j][1], acc[j][2], acc[j][3], sinks[j]->threshold16(), sums) &
          valid;
      if (mask != 0) sinks[j]->Collect(b * kBlockSize, mask, sums);
    }
  }
}

// kMp as ScanAvx2; q in 1..3 (16 ymm registers hold 3 x 4 accumulators, not 4 x 4).
template <int kMp>
__attribute__((target("avx2"))) void ScanMultiAvx2Q(const uint8_t* blocks, int64_t n, int64_t mp,
                                                    const uint8_t* const* luts, Sink* const* sinks,
                                                    int q) {
  switch (q) {
    case 1:
      return ScanMultiAvx2Impl<kMp, 1>(blocks, n, mp, luts, sinks);
    case 2:
      return ScanMultiAvx2Impl<kMp, 2>(blocks, n, mp, luts, sinks);
    default:
      return ScanMultiAvx2Impl<kMp, 3>(blocks, n, mp, luts, sinks);
  }
}

__attribute__((target("avx2"))) void ScanMultiAvx2(const uint8_t* blocks, int64_t n, int64_t mp,
                                                   const uint8_t* const* luts, Sink* const* sinks,
                                                   int q) {
  if (q > 3) {  // ScanMultiWith sends at most 3; the queries are independent, so split
    ScanMultiAvx2(blocks, n, mp, luts, sinks, 3);
    return ScanMultiAvx2(blocks, n, mp, luts + 3, sinks + 3, q - 3);
  }
  switch (mp) {
    case 16:
      return ScanMultiAvx2Q<16>(blocks, n, mp, luts, sinks, q);
    case 32:
      return ScanMultiAvx2Q<32>(blocks, n, mp, luts, sinks, q);
    case 64:
      return ScanMultiAvx2Q<64>(blocks, n, mp, luts, sinks, q);
    default:
      return ScanMultiAvx2Q<0>(blocks, n, mp, luts, sinks, q);
  }
}

template <int kMp>
__attribute__((target("avx2,avx512f,avx512bw"))) void ScanAvx512Impl(const uint8_t* blocks,
                                                                     int64_t n, int64_t mp,
                                                                     const uint8_t* lut,
                                                                     Sink& sink) {
  if constexpr (kMp > 0) mp = kMp;
  const int64_t block_bytes = mp * 16;
  const __m512i low4 = _mm512_set1_epi8(0x0f);
  alignas(32) uint16_t sums[kBlockSize];
  // Up to 64 sub-quantizers: the 16 tables of 64 bytes stay in registers across blocks.
  constexpr int kHeld = kMp > 0 && kMp <= 64 ? kMp / 4 : 1;
  __m512i held[kHeld];
  if constexpr (kMp > 0 && kMp <= 64) {
    for (int t = 0; t < kHeld; ++t) held[t] = _mm512_loadu_si512(lut + t * 64);
  }
  for (int64_t b = 0; b < NumBlocks(n); ++b) {
    const uint8_t* block = blocks + b * block_bytes;
    __m512i a_lo = _mm512_setzero_si512(), b_lo = a_lo, a_hi = a_lo, b_hi = a_lo;
    // Four sub-quantizers a step (mp is a multiple of 4), one per 128-bit lane.
    for (int64_t s = 0; s < mp; s += 4) {
      const __m512i codes = _mm512_loadu_si512(block + s * 16);
      __m512i table;
      if constexpr (kMp > 0 && kMp <= 64) {
        table = held[s / 4];
      } else {
        table = _mm512_loadu_si512(lut + s * 16);
      }
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

__attribute__((target("avx2,avx512f,avx512bw"))) void ScanAvx512(const uint8_t* blocks, int64_t n,
                                                                 int64_t mp, const uint8_t* lut,
                                                                 Sink& sink) {
  switch (mp) {
    case 8:
      return ScanAvx512Impl<8>(blocks, n, mp, lut, sink);
    case 16:
      return ScanAvx512Impl<16>(blocks, n, mp, lut, sink);
    case 32:
      return ScanAvx512Impl<32>(blocks, n, mp, lut, sink);
    case 64:
      return ScanAvx512Impl<64>(blocks, n, mp, lut, sink);
    default:
      return ScanAvx512Impl<0>(blocks, n, mp, lut, sink);
  }
}

// As ScanMultiAvx2Impl with four sub-quantizers a step (one per 128-bit lane).
template <int kMp, int kQ>
__attribute__((target("avx2,avx512f,avx512bw"))) void ScanMultiAvx512Impl(
    const uint8_t* blocks, int64_t n, int64_t mp, const uint8_t* const* luts, Sink* const* sinks) {
  if constexpr (kMp > 0) mp = kMp;
  const int64_t block_bytes = mp * 16;
  const __m512i low4 = _mm512_set1_epi8(0x0f);
  alignas(32) uint16_t sums[kBlockSize];
  const uint8_t* lut[kQ];
  for (int j = 0; j < kQ; ++j) lut[j] = luts[j];
  for (int64_t b = 0; b < NumBlocks(n); ++b) {
    const uint8_t* block = blocks + b * block_bytes;
    __m512i acc[kQ][4];
    for (int j = 0; j < kQ; ++j) {
      for (int i = 0; i < 4; ++i) acc[j][i] = _mm512_setzero_si512();
    }
    // Not unrolled: the kQ x 4 accumulators need the registers (unrolling spills them).
#pragma GCC unroll 1
    for (int64_t s = 0; s < mp; s += 4) {
      const __m512i codes = _mm512_loadu_si512(block + s * 16);
      const __m512i low = _mm512_and_si512(codes, low4);
      const __m512i high = _mm512_and_si512(_mm512_srli_epi16(codes, 4), low4);
      for (int j = 0; j < kQ; ++j) {
        const __m512i table = _mm512_loadu_si512(lut[j] + s * 16);
        const __m512i lo = _mm512_shuffle_epi8(table, low);
        const __m512i hi = _mm512_shuffle_epi8(table, high);
        acc[j][0] = _mm512_add_epi16(acc[j][0], lo);
        acc[j][1] = _mm512_add_epi16(acc[j][1], _mm512_srli_epi16(lo, 8));
        acc[j][2] = _mm512_add_epi16(acc[j][2], hi);
        acc[j][3] = _mm512_add_epi16(acc[j][3], _mm512_srli_epi16(hi, 8));
      }
    }
    const uint32_t valid = ValidMask(b, n);
    for (int j = 0; j < kQ; ++j) {
      const uint32_t mask = FinishBlock(Fold(acc[j][0]), Fold(acc[j][1]), Fold(acc[j][2]),
                                        Fold(acc[j][3]), sinks[j]->threshold16(), sums) &
                            valid;
      if (mask != 0) sinks[j]->Collect(b * kBlockSize, mask, sums);
    }
  }
}

template <int kMp>
__attribute__((target("avx2,avx512f,avx512bw"))) void ScanMultiAvx512Q(const uint8_t* blocks,
                                                                       int64_t n, int64_t mp,
                                                                       const uint8_t* const* luts,
                                                                       Sink* const* sinks, int q) {
  static_assert(kMaxQueries == 4);
  switch (q) {
    case 1:
      return ScanMultiAvx512Impl<kMp, 1>(blocks, n, mp, luts, sinks);
    case 2:
      return ScanMultiAvx512Impl<kMp, 2>(blocks, n, mp, luts, sinks);
    case 3:
      return ScanMultiAvx512Impl<kMp, 3>(blocks, n, mp, luts, sinks);
    default:
      return ScanMultiAvx512Impl<kMp, 4>(blocks, n, mp, luts, sinks);
  }
}

__attribute__((target("avx2,avx512f,avx512bw"))) void ScanMultiAvx512(const uint8_t* blocks,
                                                                      int64_t n, int64_t mp,
                                                                      const uint8_t* const* luts,
                                                                      Sink* const* sinks, int q) {
  switch (mp) {
    case 16:
      return ScanMultiAvx512Q<16>(blocks, n, mp, luts, sinks, q);
    case 32:
      return ScanMultiAvx512Q<32>(blocks, n, mp, luts, sinks, q);
    case 64:
      return ScanMultiAvx512Q<64>(blocks, n, mp, luts, sinks, q);
    default:
      return ScanMultiAvx512Q<0>(blocks, n, mp, luts, sinks, q);
  }
}

#else  // not x86: only the reference kernels exist (KernelSupported says so).

float TableRowsAvx2(const float*, const float*, int64_t, float*, float*) { return 0; }
float TableRowsAvx512(const float*, const float*, int64_t, float*, float*) { return 0; }
void QuantizeRowsAvx2(const float*, const float*, int64_t, float, uint8_t*) {}
void QuantizeRowsAvx512(const float*, const float*, int64_t, float, uint8_t*) {}

void ScanAvx2(const uint8_t* blocks, int64_t n, int64_t mp, const uint8_t* lut, Sink& sink) {
  ScanScalar(blocks, n, mp, lut, sink);
}
void ScanAvx512(const uint8_t* blocks, int64_t n, int64_t mp, const uint8_t* lut, Sink& sink) {
  ScanScalar(blocks, n, mp, lut, sink);
}
void ScanMultiAvx2(const uint8_t* blocks, int64_t n, int64_t mp, const uint8_t* const* luts,
                   Sink* const* sinks, int q) {
  ScanMultiScalar(blocks, n, mp, luts, sinks, q);
}
void ScanMultiAvx512(const uint8_t* blocks, int64_t n, int64_t mp, const uint8_t* const* luts,
                     Sink* const* sinks, int q) {
  ScanMultiScalar(blocks, n, mp, luts, sinks, q);
}

#endif

}  // namespace quantd::fastscan::internal
