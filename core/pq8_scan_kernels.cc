// The AVX-512 VBMI kernel of pq8_scan.h, compiled for that target by function attributes only
// (the file builds without -march and runs only where KernelSupported says so).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/pq8_scan.h"

#if defined(__x86_64__)
#include <immintrin.h>
// GCC 12's AVX-512 intrinsics (extract / shuffle through _mm512_undefined_*) trip a false
// -Wmaybe-uninitialized once inlined here.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace quantd::pq8::internal {

#if defined(__x86_64__)
namespace {

#define QUANTD_VBMI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi")))

// In-register transpose of 64 codes x 16 sub-quantizers. Register r (0..15) is loaded with the
// 16 bytes of one chunk of sub-quantizers of codes 4r .. 4r + 3, so byte p of register r is
// sub-quantizer p & 15 of code 4r + (p >> 4): an element's register number is 4 bits and its
// byte position 6 bits. Level l exchanges bit l of the register number with bit l of the byte
// position, between registers a (bit l clear) and b = a | 2^l, by two two-table byte permutes
// (index bit 6 picks the table):
//   a'[p] = (p bit l ? b : a)[p with bit l cleared],  b'[p] = (p bit l ? b : a)[p with bit l set].
// After levels 0..3, register s holds sub-quantizer s of the chunk, and byte position p holds
// code 4 (p & 15) + (p >> 4).
struct TransposeIndex {
  alignas(64) uint8_t lo[4][64];
  alignas(64) uint8_t hi[4][64];
};
constexpr TransposeIndex MakeTransposeIndex() {
  TransposeIndex t{};
  for (int l = 0; l < 4; ++l) {
    for (int p = 0; p < 64; ++p) {
      const int from_b = ((p >> l) & 1) * 64;
      t.lo[l][p] = static_cast<uint8_t>(from_b + (p & ~(1 << l)));
      t.hi[l][p] = static_cast<uint8_t>(from_b + (p | (1 << l)));
    }
  }
  return t;
}
constexpr TransposeIndex kTranspose = MakeTransposeIndex();

inline int64_t CodeAt(int pos) { return 4 * (pos & 15) + (pos >> 4); }

QUANTD_VBMI inline __m512i Join(__m128i a, __m128i b, __m128i c, __m128i d) {
  __m512i x = _mm512_castsi128_si512(a);
  x = _mm512_inserti32x4(x, b, 1);
  x = _mm512_inserti32x4(x, c, 2);
  return _mm512_inserti32x4(x, d, 3);
}

// Loads chunk c (sub-quantizers 16c .. 16c + 15, those < m) of the block's 64 codes into x as
// the transpose wants it; sub-quantizers >= m read as 0 and are never looked up.
template <int kM>
QUANTD_VBMI inline void LoadChunk(const uint8_t* block, int64_t m_runtime, int64_t c, __m512i* x) {
  const int64_t m = kM > 0 ? kM : m_runtime;
  if constexpr (kM == 16) {
#pragma GCC unroll 16
    for (int r = 0; r < 16; ++r) x[r] = _mm512_loadu_si512(block + 64 * r);
  } else if constexpr (kM == 32) {
    // Two loads hold codes 4r .. 4r + 3 (32 bytes each): 16-byte lanes 0 and 2 of each are the
    // first chunk, lanes 1 and 3 the second.
    if (c == 0) {
#pragma GCC unroll 16
      for (int r = 0; r < 16; ++r) {
        x[r] = _mm512_shuffle_i64x2(_mm512_loadu_si512(block + 128 * r),
                                    _mm512_loadu_si512(block + 128 * r + 64), 0x88);
      }
    } else {
#pragma GCC unroll 16
      for (int r = 0; r < 16; ++r) {
        x[r] = _mm512_shuffle_i64x2(_mm512_loadu_si512(block + 128 * r),
                                    _mm512_loadu_si512(block + 128 * r + 64), 0xdd);
      }
    }
  } else {
    const uint8_t* p = block + 16 * c;
    if (m - 16 * c >= 16) {
#pragma GCC unroll 16
      for (int r = 0; r < 16; ++r) {
        const uint8_t* q = p + 4 * r * m;
        x[r] = Join(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q)),
                    _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + m)),
                    _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 2 * m)),
                    _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 3 * m)));
      }
    } else {  // the last, partial chunk: masked loads never touch bytes past the code
      const auto mask = static_cast<__mmask16>((1u << (m - 16 * c)) - 1);
#pragma GCC unroll 16
      for (int r = 0; r < 16; ++r) {
        const uint8_t* q = p + 4 * r * m;
        x[r] = Join(_mm_maskz_loadu_epi8(mask, q), _mm_maskz_loadu_epi8(mask, q + m),
                    _mm_maskz_loadu_epi8(mask, q + 2 * m), _mm_maskz_loadu_epi8(mask, q + 3 * m));
      }
    }
  }
}

QUANTD_VBMI inline void Transpose(__m512i* x) {
#pragma GCC unroll 4
  for (int l = 0; l < 4; ++l) {
    const __m512i lo = _mm512_load_si512(kTranspose.lo[l]);
    const __m512i hi = _mm512_load_si512(kTranspose.hi[l]);
#pragma GCC unroll 16
    for (int a = 0; a < 16; ++a) {
      if (a & (1 << l)) continue;
      const int b = a | (1 << l);
      const __m512i na = _mm512_permutex2var_epi8(x[a], lo, x[b]);
      const __m512i nb = _mm512_permutex2var_epi8(x[a], hi, x[b]);
      x[a] = na;
      x[b] = nb;
    }
  }
}

// table[code] for 64 codes: two 128-entry permutes (low 7 bits) and a blend on bit 7.
QUANTD_VBMI inline __m512i Lookup(__m512i code, const uint8_t* table) {
  const __m512i low =
      _mm512_permutex2var_epi8(_mm512_loadu_si512(table), code, _mm512_loadu_si512(table + 64));
  const __m512i high = _mm512_permutex2var_epi8(_mm512_loadu_si512(table + 128), code,
                                                _mm512_loadu_si512(table + 192));
  return _mm512_mask_blend_epi8(_mm512_movepi8_mask(code), low, high);
}

template <int kM>
QUANTD_VBMI int64_t ScanBlocks(const uint8_t* codes, const uint64_t* ids, int64_t blocks,
                               int64_t m_runtime, const uint8_t* lut, const Bound& bound,
                               const float* sim, float base, TopK& top) {
  const int64_t m = kM > 0 ? kM : m_runtime;
  const int64_t chunks = (m + 15) / 16;
  int32_t limit = bound.Limit(top.threshold());
  int64_t rescored = 0;
  for (int64_t b = 0; b < blocks && limit >= 0; ++b) {
    const uint8_t* block = codes + b * 64 * m;
    // The lists stream from memory in short runs (about 16 KB a list at 1M x 16 bytes) that the
    // hardware prefetcher picks up late: fetch two blocks ahead (a prefetch past the end of the
    // list is harmless).
    for (int64_t offset = 0; offset < 64 * m; offset += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(block + 2 * 64 * m + offset), _MM_HINT_T0);
    }
    // Sums of codes at byte positions 0..31 and 32..63, 16 bits each (saturating).
    __m512i sum_lo = _mm512_setzero_si512();
    __m512i sum_hi = _mm512_setzero_si512();
    for (int64_t c = 0; c < chunks; ++c) {
      __m512i x[16];
      LoadChunk<kM>(block, m, c, x);
      Transpose(x);
      const uint8_t* table = lut + c * 16 * 256;
      const int64_t count = std::min<int64_t>(16, m - 16 * c);
#pragma GCC unroll 8
      for (int s = 0; s < 16; s += 2) {
        if (s >= count) break;
        __m512i v = Lookup(x[s], table + s * 256);
        // Two sub-quantizers in bytes (saturating: still a lower bound), then widened.
        if (s + 1 < count) v = _mm512_adds_epu8(v, Lookup(x[s + 1], table + (s + 1) * 256));
        sum_lo = _mm512_adds_epu16(sum_lo, _mm512_cvtepu8_epi16(_mm512_castsi512_si256(v)));
        sum_hi = _mm512_adds_epu16(sum_hi, _mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64(v, 1)));
      }
    }
    const __m512i limit16 = _mm512_set1_epi16(static_cast<int16_t>(static_cast<uint16_t>(limit)));
    uint64_t pass = static_cast<uint64_t>(_mm512_cmple_epu16_mask(sum_lo, limit16)) |
                    (static_cast<uint64_t>(_mm512_cmple_epu16_mask(sum_hi, limit16)) << 32);
    while (pass != 0) {
      const int pos = __builtin_ctzll(pass);
      pass &= pass - 1;
      const int64_t i = b * 64 + CodeAt(pos);
      const float distance = Distance(codes + i * m, m, sim, base);
      ++rescored;
      if (distance <= top.threshold()) {
        top.Push(distance, ids[i]);
        limit = bound.Limit(top.threshold());
      }
    }
  }
  return rescored;
}

}  // namespace

QUANTD_VBMI void RowMinsAvx512(const float* sim, int64_t m, float* mins) {
  for (int64_t s = 0; s < m; ++s) {
    const float* row = sim + s * 256;
    // Four chains, so the minimum is not one long dependency.
    __m512 a = _mm512_loadu_ps(row), b = _mm512_loadu_ps(row + 16);
    __m512 c = _mm512_loadu_ps(row + 32), d = _mm512_loadu_ps(row + 48);
    for (int j = 64; j < 256; j += 64) {
      a = _mm512_min_ps(a, _mm512_loadu_ps(row + j));
      b = _mm512_min_ps(b, _mm512_loadu_ps(row + j + 16));
      c = _mm512_min_ps(c, _mm512_loadu_ps(row + j + 32));
      d = _mm512_min_ps(d, _mm512_loadu_ps(row + j + 48));
    }
    mins[s] = _mm512_reduce_min_ps(_mm512_min_ps(_mm512_min_ps(a, b), _mm512_min_ps(c, d)));
  }
}

QUANTD_VBMI void QuantizeRowsAvx512(const float* sim, const float* mins, int64_t m, float scale,
                                    uint8_t* lut) {
  const __m512 factor = _mm512_set1_ps(scale);
  for (int64_t s = 0; s < m; ++s) {
    const float* row = sim + s * 256;
    const __m512 lo = _mm512_set1_ps(mins[s]);
    for (int j = 0; j < 256; j += 16) {
      // (v - lo) >= 0, so truncation is the floor; past 2^32 it converts to all ones, and the
      // unsigned saturating narrowing clamps at 255.
      const __m512 x = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(row + j), lo), factor);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(lut + s * 256 + j),
                       _mm512_cvtusepi32_epi8(_mm512_cvttps_epu32(x)));
    }
  }
}

int64_t ScanBlocksAvx512Vbmi(const uint8_t* codes, const uint64_t* ids, int64_t blocks, int64_t m,
                             const uint8_t* lut, const Bound& bound, const float* sim, float base,
                             TopK& top) {
  switch (m) {
    case 16:
      return ScanBlocks<16>(codes, ids, blocks, m, lut, bound, sim, base, top);
    case 32:
      return ScanBlocks<32>(codes, ids, blocks, m, lut, bound, sim, base, top);
    default:
      return ScanBlocks<0>(codes, ids, blocks, m, lut, bound, sim, base, top);
  }
}

#endif  // __x86_64__

}  // namespace quantd::pq8::internal
