// Product quantizer (PQ): a d-dimensional vector is cut into M sub-vectors of dsub = d / M
// components, and sub-vector m is replaced by the index of its nearest centroid in codebook m
// (ksub = 2^nbits centroids, trained by k-means on sub-space m). nbits is 8 (one code a byte)
// or 4 (two codes a byte: sub-quantizer 2i in the low nibble, 2i + 1 in the high nibble).
//
// Shapes: vectors are n x d row-major float32; codes are n x code_size() bytes; centroids are
// M x ksub x dsub (codebook m at offset m * ksub * dsub); distance tables are M x ksub per
// query, so a batch of nq queries gives nq x M x ksub floats.
#ifndef QUANTD_CORE_PRODUCT_QUANTIZER_H_
#define QUANTD_CORE_PRODUCT_QUANTIZER_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/gemm.h"
#include "core/kmeans.h"

namespace quantd {

struct ProductQuantizerOptions {
  int64_t m = 16;  // sub-quantizers; d must be a multiple of it
  int nbits = 8;   // 4 or 8 bits a code
  // k-means per sub-space (FAISS's ProductQuantizer defaults: 25 iterations, random init, no
  // early stop, at most 256 training rows per centroid). Sub-space m uses seed + m.
  int max_iterations = 25;
  KMeansOptions::Init init = KMeansOptions::Init::kRandom;
  double tolerance = 0;
  int64_t max_points_per_centroid = 256;
  uint64_t seed = 1234;
  int num_threads = 0;  // 0: hardware concurrency
  // Called with the fraction of sub-quantizers trained (0..1] after each one, one call at a time
  // (from whichever worker finished it); returning false cancels the training (Train then
  // returns CANCELLED, and sub-quantizers not yet started are skipped).
  std::function<bool(double)> on_progress;
};

class ProductQuantizer {
 public:
  ProductQuantizer() = default;

  // Trains on `data` (n x d). INVALID_ARGUMENT when d < 1, m < 1, d % m != 0, nbits not 4 or 8,
  // n < 2^nbits, or a component is not finite.
  static absl::StatusOr<ProductQuantizer> Train(const float* data, int64_t n, int64_t d,
                                                const ProductQuantizerOptions& options);
  // Rebuilds a quantizer from its centroids (M x ksub x dsub), e.g. after deserialization.
  static absl::StatusOr<ProductQuantizer> FromCentroids(int64_t d, int64_t m, int nbits,
                                                        std::vector<float> centroids);
  // Checks (d, m, nbits) as Train does.
  static absl::Status ValidateShape(int64_t d, int64_t m, int nbits);

  int64_t d() const { return d_; }
  int64_t m() const { return m_; }
  int64_t dsub() const { return dsub_; }
  int nbits() const { return nbits_; }
  int64_t ksub() const { return ksub_; }
  // Bytes of one code: ceil(M * nbits / 8).
  int64_t code_size() const { return code_size_; }
  const std::vector<float>& centroids() const { return centroids_; }
  // Centroid `code` of sub-quantizer m: dsub floats.
  const float* centroid(int64_t m, int64_t code) const {
    return centroids_.data() + (m * ksub_ + code) * dsub_;
  }

  // Codes of the rows of x (x.size() / d rows; INVALID_ARGUMENT if x.size() is not a multiple
  // of d or a component is not finite) into codes (rows x code_size()). Nearest centroids come
  // from matrix products against the packed codebooks, in row blocks.
  absl::Status Encode(absl::Span<const float> x, uint8_t* codes, int num_threads = 1) const;
  // As Encode, unchecked: x is n x d with finite components.
  void EncodeUnchecked(const float* x, int64_t n, uint8_t* codes, int num_threads = 1) const;
  // Reconstructions (n x d) of n codes.
  void Decode(const uint8_t* codes, int64_t n, float* out) const;

  // Code of sub-quantizer m in one vector's code bytes.
  int64_t GetCode(const uint8_t* code, int64_t m) const {
    if (nbits_ == 8) return code[m];
    const uint8_t byte = code[m >> 1];
    return (m & 1) ? (byte >> 4) : (byte & 15);
  }

  // Per query (x is nq x d): tables[q][m][j] = <x_m, c_mj> (inner products), nq x M x ksub.
  void InnerProductTables(const float* x, int64_t nq, float* tables) const;
  // Per query: tables[q][m][j] = ||x_m - c_mj||^2 (squared L2), nq x M x ksub.
  void L2Tables(const float* x, int64_t nq, float* tables) const;
  // Sum over m of table[m][code_m] for one code (asymmetric distance from a table).
  float TableSum(const float* table, const uint8_t* code) const;

 private:
  void Init();  // derived sizes, packed codebooks and norms from d_, m_, nbits_, centroids_

  int64_t d_ = 0;
  int64_t m_ = 0;
  int64_t dsub_ = 0;
  int nbits_ = 8;
  int64_t ksub_ = 0;
  int64_t code_size_ = 0;
  std::vector<float> centroids_;       // M x ksub x dsub
  std::vector<PackedRhs> packed_;      // M codebooks (ksub x dsub) packed for the products
  std::vector<float> centroid_norms_;  // M x ksub squared norms
};

}  // namespace quantd

#endif  // QUANTD_CORE_PRODUCT_QUANTIZER_H_
