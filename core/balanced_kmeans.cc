#include "core/balanced_kmeans.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "core/gemm.h"
#include "core/vectors.h"

namespace quantd {
namespace {

// Bounds for a sample of m of the n rows: the same fractions, rounded outwards.
SizeBounds ScaleBounds(const SizeBounds& bounds, int64_t n, int64_t m, int64_t k) {
  if (m == n) return bounds;
  const double scale = static_cast<double>(m) / static_cast<double>(n);
  SizeBounds scaled;
  scaled.size_min = static_cast<int64_t>(std::floor(bounds.size_min * scale));
  scaled.size_max = static_cast<int64_t>(std::ceil(bounds.size_max * scale));
  scaled.size_max = std::max(scaled.size_max, (m + k - 1) / k);
  scaled.size_min = std::min(scaled.size_min, m / k);
  return scaled;
}

// Squared distances of all n rows of data (n x d) to the chosen centroids: n x chosen.
CostColumnsFn ColumnsOf(const float* data, int64_t n, const float* centroids, int64_t d,
                        int num_threads) {
  return [=](absl::Span<const int32_t> clusters, float* out) {
    std::vector<float> chosen(clusters.size() * static_cast<size_t>(d));
    for (size_t c = 0; c < clusters.size(); ++c) {
      std::copy_n(centroids + static_cast<int64_t>(clusters[c]) * d, d, chosen.data() + c * d);
    }
    SquaredDistances(data, n, chosen.data(), static_cast<int64_t>(clusters.size()), d, out,
                     num_threads);
  };
}

// One balanced run from seed `seed` on the training rows train (m x d, under train_bounds);
// iterations are reported to on_iteration as first_reported + i. The final assignment of all n
// rows of data follows.
absl::StatusOr<KMeansResult> RunBalanced(const float* data, int64_t n, const float* train,
                                         int64_t m, int64_t d, const SizeBounds& bounds,
                                         const SizeBounds& train_bounds,
                                         const KMeansOptions& options, uint64_t seed,
                                         int first_reported) {
  const int64_t k = options.k;
  KMeansResult result;
  result.k = k;
  result.d = d;
  result.training_rows = m;
  result.centroids.resize(static_cast<size_t>(k * d));
  StartingCentroids(train, m, d, options, seed, first_reported == 0, result.centroids.data(),
                    options.num_threads);
  if (options.spherical) NormalizeRows(result.centroids.data(), k, d);

  std::vector<int32_t> labels;
  // Cluster prices carried from one assignment to the next: the centroids move little between
  // iterations, so the previous prices are nearly right and save most of the price sweeps.
  std::vector<double> prices;
  double objective = 0;
  BalancedOptions assign;
  assign.prices = &prices;
  // Likewise every training row's candidate clusters, which seed the next step's scan for them.
  std::vector<int32_t> candidates;
  assign.candidates = &candidates;
  assign.objective = &objective;
  assign.polish = false;  // the centroids move again anyway
  assign.num_threads = options.num_threads;
  double previous = std::numeric_limits<double>::infinity();
  for (int iteration = 0; iteration < options.max_iterations; ++iteration) {
    // Cost rows are made in small tiles while the top candidates are picked from them, so the
    // m x k matrix is never written out.
    const float* centroids = result.centroids.data();
    const PackedRhs packed(centroids, k, d);
    const std::vector<float> norms = SquaredNorms(centroids, k, d);
    const CostRowsFn rows = [&](int64_t begin, int64_t end, float* out) {
      SquaredDistancesPacked(train + begin * d, end - begin, packed, norms.data(), out, 1);
    };
    const CostColumnsFn columns = ColumnsOf(train, m, centroids, d, options.num_threads);
    auto assigned = BalancedAssignRows(rows, m, k, train_bounds, assign, columns);
    if (!assigned.ok()) return assigned.status();
    labels = std::move(*assigned);
    UpdateCentroids(train, m, d, labels.data(), k, seed + iteration + 1, result.centroids.data(),
                    options.num_threads);
    if (options.spherical) NormalizeRows(result.centroids.data(), k, d);
    result.iterations = iteration + 1;
    if (options.on_iteration && !options.on_iteration(first_reported + iteration, objective)) {
      return absl::CancelledError(absl::StrFormat(
          "balanced k-means cancelled by on_iteration after iteration %d (objective %g)",
          first_reported + iteration, objective));
    }
    if (KMeansConverged(previous, objective, options.tolerance)) break;
    previous = objective;
  }

  const float* centroids = result.centroids.data();
  if (m == n) {
    // Training saw every row: one more (polished: optimal sizes) assignment step. Only every
    // row's candidate clusters are kept, never the n x k matrix.
    const PackedRhs packed(centroids, k, d);
    const std::vector<float> norms = SquaredNorms(centroids, k, d);
    const CostRowsFn rows = [&](int64_t begin, int64_t end, float* out) {
      SquaredDistancesPacked(data + begin * d, end - begin, packed, norms.data(), out, 1);
    };
    assign.objective = &result.objective;
    assign.polish = true;
    auto assigned = BalancedAssignRows(rows, n, k, bounds, assign,
                                       ColumnsOf(data, n, centroids, d, options.num_threads));
    if (!assigned.ok()) return assigned.status();
    result.assignments = std::move(*assigned);
    return result;
  }
  // After a subsample: n / m times the rows of a Lloyd step, so no candidate lists. The cluster
  // prices are per cluster, so they carry over from the sample: every row takes its cheapest
  // cluster under them (one fused product pass, as plain k-means assigns: the prices ride on the
  // centroid norms, shifted to be >= 0, which does not change any argmin), and a greedy repair
  // moves the few rows the sample's sizes mispredict.
  std::vector<float> priced_norms = SquaredNorms(centroids, k, d);
  if (static_cast<int64_t>(prices.size()) == k) {
    const double lowest = *std::min_element(prices.begin(), prices.end());
    for (int64_t c = 0; c < k; ++c) priced_norms[c] += static_cast<float>(prices[c] - lowest);
  }
  std::vector<float> here(static_cast<size_t>(n));
  result.assignments.resize(static_cast<size_t>(n));
  {
    const PackedRhs packed(centroids, k, d);
    AssignNearestPacked(data, n, packed, priced_norms.data(), result.assignments.data(),
                        here.data(), options.num_threads);
  }
  const std::vector<float> norms = SquaredNorms(centroids, k, d);
  for (int64_t i = 0; i < n; ++i) {  // back to the plain squared distance
    const int32_t c = result.assignments[i];
    here[i] = std::max(0.0f, here[i] - (priced_norms[c] - norms[c]));
  }
  std::vector<float> gathered;
  const CostRowsOfFn rows_of = [&](absl::Span<const int32_t> points, float* out) {
    gathered.resize(points.size() * static_cast<size_t>(d));
    for (size_t p = 0; p < points.size(); ++p) {
      std::copy_n(data + static_cast<int64_t>(points[p]) * d, d, gathered.data() + p * d);
    }
    SquaredDistances(gathered.data(), static_cast<int64_t>(points.size()), centroids, k, d, out,
                     options.num_threads);
  };
  const CostColumnsFn columns = ColumnsOf(data, n, centroids, d, options.num_threads);
  RepairToBounds(n, k, bounds, rows_of, columns, &result.assignments, &here);
  result.objective = 0;
  for (float cost : here) result.objective += cost;
  return result;
}

}  // namespace

absl::StatusOr<KMeansResult> TrainBalancedKMeans(const float* data, int64_t n, int64_t d,
                                                 const SizeBounds& bounds,
                                                 const KMeansOptions& options) {
  const int64_t k = options.k;
  if (auto status = ValidateKMeansInput(data, n, d, k); !status.ok()) return status;
  if (auto status = ValidateKMeansOptions(options); !status.ok()) return status;
  if (auto status = ValidateInitialCentroids(options, d); !status.ok()) return status;
  if (auto status = CheckBoundsFeasible(n, k, bounds); !status.ok()) return status;

  // Training rows: all of them, or the sample plain k-means takes (the same rows for the same
  // seed), the same for every restart.
  std::vector<float> sample;
  int64_t m = n;
  const float* train =
      KMeansTrainingRows(data, n, d, k, options.max_points_per_centroid, options.seed, &sample, &m);
  const SizeBounds train_bounds = ScaleBounds(bounds, n, m, k);

  return BestOfRestarts(options, [&](uint64_t seed, int first_iteration) {
    return RunBalanced(data, n, train, m, d, bounds, train_bounds, options, seed, first_iteration);
  });
}

}  // namespace quantd
