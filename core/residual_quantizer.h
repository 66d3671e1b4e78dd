// Residual quantizer (RQ-KMeans): L codebooks, level l clustering the residuals left by levels
// 0..l-1. Each level is plain k-means or balanced k-means (every cluster's size within
// [size_min, size_max] over the training items, as k-means-constrained guarantees), which is
// what keeps semantic-ID collisions low.
//
// Shapes: x is n x d row-major float32; codes are n x L row-major int32; codebook l is
// k_l x d row-major.
#ifndef QUANTD_CORE_RESIDUAL_QUANTIZER_H_
#define QUANTD_CORE_RESIDUAL_QUANTIZER_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/balanced_assignment.h"
#include "core/gemm.h"
#include "core/kmeans.h"

namespace quantd {

struct RqLevelOptions {
  int64_t k = 256;
  bool balanced = false;
  // Cluster-size bounds over the n training items; when size_max is 0 they come from
  // RqOptions::balance_slack.
  SizeBounds bounds;
  // Warm start of the level's k-means (KMeansOptions::initial_centroids): k x d, or empty.
  std::vector<float> initial_centroids;
};

struct RqOptions {
  std::vector<RqLevelOptions> levels;
  // Slack of balanced levels without explicit bounds (see BoundsFromSlack).
  double balance_slack = 0.1;
  // Every level's k-means, plain or balanced, runs with these options (max_iterations,
  // tolerance, restarts, init, max_points_per_centroid, threads, ...), except that k comes from
  // the level and level l uses seed kmeans.seed + l. kmeans.on_iteration is ignored: use
  // on_progress.
  KMeansOptions kmeans;
  // Called after every k-means iteration with (level, iteration, objective), the iteration
  // numbered as KMeansOptions::on_iteration does (across restarts); false cancels.
  std::function<bool(int, int, double)> on_progress;
};

struct RqLevelReport {
  int64_t k = 0;
  bool balanced = false;
  SizeBounds bounds;         // enforced bounds (balanced levels only)
  int iterations = 0;        // Lloyd iterations run by the level's winning restart
  int total_iterations = 0;  // over all of the level's restarts
  int restart = 0;           // the winning restart
  // Final objective of the level: sum over the n rows of the squared distance from the level's
  // input (the residual of the levels before) to the assigned codeword.
  double objective = 0;
  double mse_after = 0;  // mean squared residual per component after this level (objective / nd)
};

class ResidualQuantizer {
 public:
  ResidualQuantizer() = default;
  // codebooks[l] holds ks[l] x d values. INVALID_ARGUMENT on inconsistent shapes.
  static absl::StatusOr<ResidualQuantizer> FromCodebooks(int64_t d, std::vector<int64_t> ks,
                                                         std::vector<std::vector<float>> codebooks);

  int64_t dimension() const { return d_; }
  int64_t levels() const { return static_cast<int64_t>(ks_.size()); }
  int64_t codebook_size(int64_t level) const { return ks_[level]; }
  const std::vector<int64_t>& codebook_sizes() const { return ks_; }
  const std::vector<float>& codebook(int64_t level) const { return codebooks_[level]; }

  // Nearest code per level, greedily on the residual; codes is n x L. Batched matrix products.
  void Encode(const float* x, int64_t n, int32_t* codes, int num_threads = 0) const;
  // Sum of the chosen codewords; out is n x d.
  void Decode(const int32_t* codes, int64_t n, float* out) const;
  // Mean squared residual per component after each level (L values) for x and its codes.
  std::vector<double> LevelMse(const float* x, int64_t n, const int32_t* codes) const;

  // Byte blob, host (little-endian) byte order: magic "QDRESQ\0\0" (8 bytes), format version
  // (uint32), d (int64), L (int64), the L codebook sizes k_l (int64 each), then the codebooks,
  // level after level, each k_l x d float32 row-major. Nothing follows.
  std::string Serialize() const;
  // Reads a Serialize() blob. INVALID_ARGUMENT, naming the field, for a wrong magic or version,
  // d outside [1, kMaxDimension], L outside [1, kMaxSidLevels], k_l outside [1, 2^31), a
  // codebook longer than the bytes left (checked before allocating), a non-finite value or
  // trailing bytes: a damaged blob never crashes nor allocates more than its own size.
  static absl::StatusOr<ResidualQuantizer> Deserialize(absl::string_view blob);

 private:
  int64_t d_ = 0;
  std::vector<int64_t> ks_;
  std::vector<std::vector<float>> codebooks_;
  // Per level, for encoding: the codebook packed for the product kernel, its squared norms.
  std::vector<PackedRhs> packed_;
  std::vector<std::vector<float>> norms_;
};

struct RqTrainResult {
  ResidualQuantizer quantizer;
  std::vector<int32_t> codes;  // n x L codes of the training rows (balanced labels where asked)
  std::vector<RqLevelReport> levels;
};

// Trains on x (n x d). INVALID_ARGUMENT for no levels, more than 16 levels, a k outside
// [1, n], infeasible bounds (naming the level and the numbers), or non-finite data.
absl::StatusOr<RqTrainResult> TrainResidualQuantizer(const float* x, int64_t n, int64_t d,
                                                     const RqOptions& options);

}  // namespace quantd

#endif  // QUANTD_CORE_RESIDUAL_QUANTIZER_H_
