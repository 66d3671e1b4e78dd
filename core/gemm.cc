#include "core/gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "Eigen/Core"

namespace quantd {
namespace {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Rows of x per micro-kernel call, and the slice of d one pass keeps in L1 with its panel.
constexpr int kMr = 6;
constexpr int64_t kKc = 256;

// Adds (or stores) an mr x nr tile held in `tile` (row stride nr) into out.
void WriteTile(const float* tile, int mr, int nr, int cols, bool accumulate, float* out,
               int64_t ldo) {
  for (int r = 0; r < mr; ++r) {
    float* o = out + r * ldo;
    const float* t = tile + r * nr;
    if (accumulate) {
      for (int c = 0; c < cols; ++c) o[c] += t[c];
    } else {
      std::memcpy(o, t, sizeof(float) * cols);
    }
  }
}

#pragma GCC push_options
#pragma GCC target("avx2,fma")

// out[r, 0..15] (+)= sum_{p < kc} x[r, p] * b[p, 0..15] for r < MR; b is a packed panel slice.
template <int MR>
void KernelAvx2(const float* x, int64_t ldx, const float* b, int64_t kc, float* out, int64_t ldo,
                int cols, bool accumulate) {
  __m256 acc[MR][2];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (int64_t p = 0; p < kc; ++p) {
    const __m256 b0 = _mm256_loadu_ps(b + p * 16);
    const __m256 b1 = _mm256_loadu_ps(b + p * 16 + 8);
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      const __m256 a = _mm256_broadcast_ss(x + r * ldx + p);
      acc[r][0] = _mm256_fmadd_ps(a, b0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(a, b1, acc[r][1]);
    }
  }
  if (cols == 16) {
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      float* o = out + r * ldo;
      if (accumulate) {
        acc[r][0] = _mm256_add_ps(acc[r][0], _mm256_loadu_ps(o));
        acc[r][1] = _mm256_add_ps(acc[r][1], _mm256_loadu_ps(o + 8));
      }
      _mm256_storeu_ps(o, acc[r][0]);
      _mm256_storeu_ps(o + 8, acc[r][1]);
    }
    return;
  }
  alignas(32) float tile[MR * 16];
  for (int r = 0; r < MR; ++r) {
    _mm256_store_ps(tile + r * 16, acc[r][0]);
    _mm256_store_ps(tile + r * 16 + 8, acc[r][1]);
  }
  WriteTile(tile, MR, 16, cols, accumulate, out, ldo);
}

#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f")

template <int MR>
void KernelAvx512(const float* x, int64_t ldx, const float* b, int64_t kc, float* out, int64_t ldo,
                  int cols, bool accumulate) {
  __m512 acc[MR][2];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int64_t p = 0; p < kc; ++p) {
    const __m512 b0 = _mm512_loadu_ps(b + p * 32);
    const __m512 b1 = _mm512_loadu_ps(b + p * 32 + 16);
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      const __m512 a = _mm512_set1_ps(x[r * ldx + p]);
      acc[r][0] = _mm512_fmadd_ps(a, b0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(a, b1, acc[r][1]);
    }
  }
  const __mmask16 m0 = cols >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << cols) - 1);
  const __mmask16 m1 = cols >= 32   ? 0xFFFF
                       : cols <= 16 ? 0
                                    : static_cast<__mmask16>((1u << (cols - 16)) - 1);
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
    float* o = out + r * ldo;
    if (accumulate) {
      acc[r][0] = _mm512_add_ps(acc[r][0], _mm512_maskz_loadu_ps(m0, o));
      acc[r][1] = _mm512_add_ps(acc[r][1], _mm512_maskz_loadu_ps(m1, o + 16));
    }
    _mm512_mask_storeu_ps(o, m0, acc[r][0]);
    _mm512_mask_storeu_ps(o + 16, m1, acc[r][1]);
  }
}

#pragma GCC pop_options

using KernelFn = void (*)(const float*, int64_t, const float*, int64_t, float*, int64_t, int, bool);

// Kernels by rows (1..kMr) for one instruction set.
struct Kernels {
  KernelFn by_rows[kMr + 1];
};

const Kernels& Avx2Kernels() {
  static const Kernels kernels = {{nullptr, KernelAvx2<1>, KernelAvx2<2>, KernelAvx2<3>,
                                   KernelAvx2<4>, KernelAvx2<5>, KernelAvx2<6>}};
  return kernels;
}

const Kernels& Avx512Kernels() {
  static const Kernels kernels = {{nullptr, KernelAvx512<1>, KernelAvx512<2>, KernelAvx512<3>,
                                   KernelAvx512<4>, KernelAvx512<5>, KernelAvx512<6>}};
  return kernels;
}

}  // namespace

GemmKernel BestGemmKernel() {
  static const GemmKernel best = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return GemmKernel::kAvx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return GemmKernel::kAvx2;
    return GemmKernel::kPortable;
  }();
  return best;
}

absl::string_view GemmKernelName(GemmKernel kernel) {
  switch (kernel) {
    case GemmKernel::kPortable:
      return "portable (Eigen)";
    case GemmKernel::kAvx2:
      return "avx2+fma";
    case GemmKernel::kAvx512:
      return "avx512f";
  }
  return "unknown";
}

PackedRhs::PackedRhs(const float* c, int64_t k, int64_t d, GemmKernel kernel)
    : k_(k), d_(d), kernel_(kernel) {
  Repack(c, k, d);
}

void PackedRhs::Repack(const float* c, int64_t k, int64_t d) { Pack(c, k, d, false); }

void PackedRhs::RepackTransposed(const float* c_t, int64_t k, int64_t d) { Pack(c_t, k, d, true); }

// source is c (k x d), or c^T (d x k) when transposed.
void PackedRhs::Pack(const float* source, int64_t k, int64_t d, bool transposed) {
  k_ = k;
  d_ = d;
  if (kernel_ == GemmKernel::kPortable) {
    packed_.resize(static_cast<size_t>(k * d));
    if (transposed) {
      Eigen::Map<RowMatrix>(packed_.data(), k, d) =
          Eigen::Map<const RowMatrix>(source, d, k).transpose();
    } else {
      std::copy(source, source + k * d, packed_.begin());
    }
    return;
  }
  nr_ = kernel_ == GemmKernel::kAvx512 ? 32 : 16;
  const int64_t panels = (k + nr_ - 1) / nr_;
  packed_.resize(static_cast<size_t>(panels * d * nr_));
  for (int64_t j = 0; j < panels; ++j) {
    float* panel = packed_.data() + j * d * nr_;
    const int64_t cols = std::min(nr_, k - j * nr_);
    if (cols < nr_) std::fill(panel, panel + d * nr_, 0.0f);  // zero padding past row k
    if (transposed) {
      for (int64_t p = 0; p < d; ++p) {
        std::copy_n(source + p * k + j * nr_, cols, panel + p * nr_);
      }
    } else {
      for (int64_t t = 0; t < cols; ++t) {
        const float* row = source + (j * nr_ + t) * d;
        for (int64_t p = 0; p < d; ++p) panel[p * nr_ + t] = row[p];
      }
    }
  }
}

void PackedRhs::Multiply(const float* x, int64_t m, float* out, int64_t ldo) const {
  if (m <= 0 || k_ <= 0) return;
  if (kernel_ == GemmKernel::kPortable) {
    const Eigen::Map<const RowMatrix> xm(x, m, d_);
    const Eigen::Map<const RowMatrix> cm(packed_.data(), k_, d_);
    Eigen::Map<RowMatrix, 0, Eigen::OuterStride<>> om(out, m, k_, Eigen::OuterStride<>(ldo));
    om.noalias() = xm * cm.transpose();
    return;
  }
  if (d_ == 0) {
    for (int64_t i = 0; i < m; ++i) std::fill(out + i * ldo, out + i * ldo + k_, 0.0f);
    return;
  }
  const Kernels& kernels = kernel_ == GemmKernel::kAvx512 ? Avx512Kernels() : Avx2Kernels();
  const int64_t panels = (k_ + nr_ - 1) / nr_;
  for (int64_t p0 = 0; p0 < d_; p0 += kKc) {
    const int64_t kc = std::min(kKc, d_ - p0);
    const bool accumulate = p0 > 0;
    for (int64_t j = 0; j < panels; ++j) {
      const float* b = packed_.data() + (j * d_ + p0) * nr_;
      const int cols = static_cast<int>(std::min(nr_, k_ - j * nr_));
      float* o = out + j * nr_;
      int64_t i = 0;
      for (; i + kMr <= m; i += kMr) {
        kernels.by_rows[kMr](x + i * d_ + p0, d_, b, kc, o + i * ldo, ldo, cols, accumulate);
      }
      if (i < m) {
        kernels.by_rows[m - i](x + i * d_ + p0, d_, b, kc, o + i * ldo, ldo, cols, accumulate);
      }
    }
  }
}

}  // namespace quantd
