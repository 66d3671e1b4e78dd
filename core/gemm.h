// out = x . c^T for float32 row-major matrices, the product behind every distance computation
// (k-means, residual encoding, and later IVF-PQ). The right-hand side c (k x d) is packed once
// into panels of NR centroids, then multiplied by any number of row blocks of x.
//
// Kernels are chosen at run time: AVX-512F (6 x 32 micro-kernel), AVX2 + FMA (6 x 16), or
// Eigen's portable product. Nothing here needs -march flags, so one binary runs on any x86-64
// and uses the widest vectors the CPU has.
#ifndef QUANTD_CORE_GEMM_H_
#define QUANTD_CORE_GEMM_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/strings/string_view.h"

namespace quantd {

enum class GemmKernel { kPortable, kAvx2, kAvx512 };

// The widest kernel this CPU supports.
GemmKernel BestGemmKernel();
absl::string_view GemmKernelName(GemmKernel kernel);

// c (k x d) rearranged for a kernel: panel j holds rows j*NR .. j*NR+NR-1 of c transposed,
// d x NR floats, zero-padded past row k. Owns its data (copyable); immutable once built, so
// threads may share it.
class PackedRhs {
 public:
  PackedRhs(const float* c, int64_t k, int64_t d, GemmKernel kernel = BestGemmKernel());
  // Packs c (k x d) in place of what this object held, keeping its storage: no allocation once
  // it has held a matrix as large (the dense layers repack their changing weights every step).
  void Repack(const float* c, int64_t k, int64_t d);
  // As Repack for c given transposed: c_t is d x k row-major (so c = c_t^T). Packing from c_t
  // copies contiguous runs, and spares the caller a transpose (products a . b with b stored as
  // it is).
  void RepackTransposed(const float* c_t, int64_t k, int64_t d);

  int64_t k() const { return k_; }
  int64_t d() const { return d_; }
  GemmKernel kernel() const { return kernel_; }

  // out (m x k, row stride ldo >= k) = x (m x d, row stride d) . c^T.
  void Multiply(const float* x, int64_t m, float* out, int64_t ldo) const;

 private:
  int64_t k_;
  int64_t d_;
  GemmKernel kernel_;
  void Pack(const float* source, int64_t k, int64_t d, bool transposed);
  int64_t nr_ = 0;             // panel width of the kernel
  std::vector<float> packed_;  // panels for the vector kernels; a copy of c for the portable one
};

}  // namespace quantd

#endif  // QUANTD_CORE_GEMM_H_
