#include "core/residual_quantizer.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "absl/strings/str_format.h"
#include "core/semantic_id.h"

namespace quantd {
namespace {

// Rows encoded per block, so Encode's residual buffer stays small.
constexpr int64_t kEncodeBlockRows = 4096;

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

}  // namespace

absl::StatusOr<KMeansResult> TrainBalancedKMeans(const float* data, int64_t n, int64_t d,
                                                 const SizeBounds& bounds,
                                                 const KMeansOptions& options) {
  const int64_t k = options.k;
  if (auto status = ValidateKMeansInput(data, n, d, k); !status.ok()) return status;
  if (auto status = CheckBoundsFeasible(n, k, bounds); !status.ok()) return status;

  // Training rows: all of them, or a sample as plain k-means would take.
  std::vector<float> sample;
  const float* train = data;
  int64_t m = n;
  if (options.max_points_per_centroid > 0 && n > k * options.max_points_per_centroid) {
    m = k * options.max_points_per_centroid;
    sample.resize(static_cast<size_t>(m * d));
    const std::vector<int64_t> rows = SampleRows(n, m, options.seed ^ 0x9e3779b97f4a7c15ull);
    for (int64_t i = 0; i < m; ++i) {
      std::copy_n(data + rows[i] * d, d, sample.data() + i * d);
    }
    train = sample.data();
  }
  const SizeBounds train_bounds = ScaleBounds(bounds, n, m, k);

  KMeansResult result;
  result.k = k;
  result.d = d;
  result.training_rows = m;
  result.centroids.resize(static_cast<size_t>(k * d));
  InitCentroids(train, m, d, k, options.init, options.seed, result.centroids.data(),
                options.num_threads);

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
  double previous = std::numeric_limits<double>::infinity();
  for (int iteration = 1; iteration <= options.max_iterations; ++iteration) {
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
    UpdateCentroids(train, m, d, labels.data(), k, options.seed + iteration,
                    result.centroids.data(), options.num_threads);
    if (options.spherical) {
      for (int64_t c = 0; c < k; ++c) {
        float* centroid = result.centroids.data() + c * d;
        double norm = 0;
        for (int64_t j = 0; j < d; ++j) norm += static_cast<double>(centroid[j]) * centroid[j];
        if (norm > 0) {
          const float scale = static_cast<float>(1.0 / std::sqrt(norm));
          for (int64_t j = 0; j < d; ++j) centroid[j] *= scale;
        }
      }
    }
    result.iterations = iteration;
    // Iterations count from 0 in the callback, as in TrainKMeans.
    if (options.on_iteration && !options.on_iteration(iteration - 1, objective)) {
      return absl::CancelledError("balanced k-means cancelled");
    }
    if (previous - objective <= options.tolerance * previous) break;
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

absl::StatusOr<ResidualQuantizer> ResidualQuantizer::FromCodebooks(
    int64_t d, std::vector<int64_t> ks, std::vector<std::vector<float>> codebooks) {
  if (d < 1) return absl::InvalidArgumentError(absl::StrFormat("dimension %d < 1", d));
  if (ks.empty() || ks.size() != codebooks.size() || static_cast<int>(ks.size()) > kMaxSidLevels) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%d codebook sizes for %d codebooks (1..%d levels)", ks.size(),
                        codebooks.size(), kMaxSidLevels));
  }
  for (size_t l = 0; l < ks.size(); ++l) {
    if (ks[l] < 1 || static_cast<int64_t>(codebooks[l].size()) != ks[l] * d) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "codebook %d has %d values, expected k %d x d %d", l, codebooks[l].size(), ks[l], d));
    }
  }
  ResidualQuantizer rq;
  rq.d_ = d;
  rq.ks_ = std::move(ks);
  rq.codebooks_ = std::move(codebooks);
  for (size_t l = 0; l < rq.ks_.size(); ++l) {
    const std::vector<float>& codebook = rq.codebooks_[l];
    rq.packed_.emplace_back(codebook.data(), rq.ks_[l], d);
    // The same norms AssignNearest computes, so encoding reproduces training assignments.
    rq.norms_.push_back(SquaredNorms(codebook.data(), rq.ks_[l], d));
  }
  return rq;
}

void ResidualQuantizer::Encode(const float* x, int64_t n, int32_t* codes, int num_threads) const {
  const int64_t levels = this->levels();
  std::vector<float> residual;
  std::vector<int32_t> labels;
  for (int64_t start = 0; start < n; start += kEncodeBlockRows) {
    const int64_t rows = std::min(kEncodeBlockRows, n - start);
    residual.assign(x + start * d_, x + (start + rows) * d_);
    labels.resize(static_cast<size_t>(rows));
    for (int64_t l = 0; l < levels; ++l) {
      AssignNearestPacked(residual.data(), rows, packed_[l], norms_[l].data(), labels.data(),
                          nullptr, num_threads);
      for (int64_t i = 0; i < rows; ++i) {
        codes[(start + i) * levels + l] = labels[i];
        const float* codeword = codebooks_[l].data() + static_cast<int64_t>(labels[i]) * d_;
        float* r = residual.data() + i * d_;
        for (int64_t j = 0; j < d_; ++j) r[j] -= codeword[j];
      }
    }
  }
}

void ResidualQuantizer::Decode(const int32_t* codes, int64_t n, float* out) const {
  const int64_t levels = this->levels();
  std::fill(out, out + n * d_, 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    float* row = out + i * d_;
    for (int64_t l = 0; l < levels; ++l) {
      const float* codeword =
          codebooks_[l].data() + static_cast<int64_t>(codes[i * levels + l]) * d_;
      for (int64_t j = 0; j < d_; ++j) row[j] += codeword[j];
    }
  }
}

std::vector<double> ResidualQuantizer::LevelMse(const float* x, int64_t n,
                                                const int32_t* codes) const {
  const int64_t levels = this->levels();
  std::vector<double> squared(static_cast<size_t>(levels), 0.0);
  std::vector<float> residual(static_cast<size_t>(d_));
  for (int64_t i = 0; i < n; ++i) {
    std::copy_n(x + i * d_, d_, residual.data());
    for (int64_t l = 0; l < levels; ++l) {
      const float* codeword =
          codebooks_[l].data() + static_cast<int64_t>(codes[i * levels + l]) * d_;
      double sum = 0;
      for (int64_t j = 0; j < d_; ++j) {
        residual[j] -= codeword[j];
        sum += static_cast<double>(residual[j]) * residual[j];
      }
      squared[l] += sum;
    }
  }
  for (double& value : squared) value = n > 0 ? value / static_cast<double>(n * d_) : 0;
  return squared;
}

absl::StatusOr<RqTrainResult> TrainResidualQuantizer(const float* x, int64_t n, int64_t d,
                                                     const RqOptions& options) {
  const int64_t levels = static_cast<int64_t>(options.levels.size());
  if (levels < 1 || levels > kMaxSidLevels) {
    return absl::InvalidArgumentError(
        absl::StrFormat("levels %d is outside 1..%d", levels, kMaxSidLevels));
  }
  std::vector<SizeBounds> bounds(static_cast<size_t>(levels));
  for (int64_t l = 0; l < levels; ++l) {
    const RqLevelOptions& level = options.levels[l];
    if (auto status = ValidateKMeansInput(x, n, d, level.k); !status.ok()) {
      return absl::Status(status.code(), absl::StrFormat("level %d: %s", l, status.message()));
    }
    if (!level.balanced) continue;
    bounds[l] = level.bounds.size_max > 0 ? level.bounds
                                          : BoundsFromSlack(n, level.k, options.balance_slack);
    if (auto status = CheckBoundsFeasible(n, level.k, bounds[l]); !status.ok()) {
      return absl::Status(status.code(), absl::StrFormat("level %d: %s", l, status.message()));
    }
  }

  RqTrainResult result;
  result.codes.resize(static_cast<size_t>(n * levels));
  std::vector<float> residual(x, x + n * d);
  std::vector<int64_t> ks;
  std::vector<std::vector<float>> codebooks;
  for (int64_t l = 0; l < levels; ++l) {
    const RqLevelOptions& level = options.levels[l];
    KMeansOptions kmeans = options.kmeans;
    kmeans.k = level.k;
    kmeans.seed = options.kmeans.seed + static_cast<uint64_t>(l);
    if (options.on_progress) {
      kmeans.on_iteration = [&options, l](int iteration, double objective) {
        return options.on_progress(static_cast<int>(l), iteration, objective);
      };
    }
    auto trained = level.balanced ? TrainBalancedKMeans(residual.data(), n, d, bounds[l], kmeans)
                                  : TrainKMeans(residual.data(), n, d, kmeans);
    if (!trained.ok()) return trained.status();
    RqLevelReport report;
    report.k = level.k;
    report.balanced = level.balanced;
    report.bounds = bounds[l];
    report.iterations = trained->iterations;
    double squared = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int32_t code = trained->assignments[i];
      result.codes[i * levels + l] = code;
      const float* codeword = trained->centroids.data() + static_cast<int64_t>(code) * d;
      float* r = residual.data() + i * d;
      for (int64_t j = 0; j < d; ++j) {
        r[j] -= codeword[j];
        squared += static_cast<double>(r[j]) * r[j];
      }
    }
    report.mse_after = squared / static_cast<double>(n * d);
    result.levels.push_back(report);
    ks.push_back(level.k);
    codebooks.push_back(std::move(trained->centroids));
  }
  auto quantizer = ResidualQuantizer::FromCodebooks(d, std::move(ks), std::move(codebooks));
  if (!quantizer.ok()) return quantizer.status();
  result.quantizer = std::move(*quantizer);
  return result;
}

}  // namespace quantd
