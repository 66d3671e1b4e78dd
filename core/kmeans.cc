#include "core/kmeans.h"

// Eigen must not spawn threads of its own: we parallelise over row blocks with ParallelFor and
// every GEMM below runs on one core.
#define EIGEN_DONT_PARALLELIZE

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <unordered_set>
#include <vector>

#include "Eigen/Core"
#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "core/gemm.h"
#include "core/parallel.h"
#include "core/vectors.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace quantd {
namespace {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowVector = Eigen::Matrix<float, 1, Eigen::Dynamic>;

// A worker's distance tile (rows x k floats) stays within this budget; 16 MiB.
constexpr int64_t kTileFloats = (int64_t{16} << 20) / sizeof(float);
// Upper bound on the rows of a block, so that there are blocks enough to share among threads
// and a tile of small k still fits in cache between the GEMM and the argmin that reads it.
constexpr int64_t kMaxBlockRows = 1024;
// Relative perturbation of split centroids, as in FAISS.
constexpr float kSplitEpsilon = 1.0f / 1024.0f;

// Rows per block for k centroids: block x k <= kTileFloats (at least one row). The partition of
// the rows depends only on n and k, never on the thread count, so every row's result does not
// depend on the number of threads either.
int64_t RowsPerBlock(int64_t k) {
  return std::clamp<int64_t>(kTileFloats / std::max<int64_t>(k, 1), 1, kMaxBlockRows);
}

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

std::vector<float> SquaredNorms(const float* m, int64_t k, int64_t d) {
  std::vector<float> norms(k);
  Eigen::Map<Eigen::VectorXf>(norms.data(), k) =
      Eigen::Map<const RowMatrix>(m, k, d).rowwise().squaredNorm();
  return norms;
}

namespace {

// Index of the smallest h[j] - t[j] over j in [0, k) (the first one on ties), its value in
// *best. This is the inner loop of every assignment: one subtraction, compare and select a
// component.
inline int32_t ArgminOfDifference(const float* t, const float* h, int64_t k, float* best) {
  int64_t j = 0;
  float best_value = std::numeric_limits<float>::infinity();
  int32_t best_index = 0;
#if defined(__SSE2__)
  if (k >= 4) {
    // Four lanes, each keeping the first minimum of the indices j = lane (mod 4).
    __m128 lane_min = _mm_set1_ps(std::numeric_limits<float>::infinity());
    __m128i lane_index = _mm_setzero_si128();
    __m128i index = _mm_setr_epi32(0, 1, 2, 3);
    const __m128i four = _mm_set1_epi32(4);
    for (; j + 4 <= k; j += 4) {
      const __m128 v = _mm_sub_ps(_mm_loadu_ps(h + j), _mm_loadu_ps(t + j));
      const __m128i less = _mm_castps_si128(_mm_cmplt_ps(v, lane_min));
      lane_min = _mm_min_ps(v, lane_min);
      lane_index = _mm_or_si128(_mm_and_si128(less, index), _mm_andnot_si128(less, lane_index));
      index = _mm_add_epi32(index, four);
    }
    alignas(16) float mins[4];
    alignas(16) int32_t indices[4];
    _mm_store_ps(mins, lane_min);
    _mm_store_si128(reinterpret_cast<__m128i*>(indices), lane_index);
    best_value = mins[0];
    best_index = indices[0];
    for (int lane = 1; lane < 4; ++lane) {
      if (mins[lane] < best_value || (mins[lane] == best_value && indices[lane] < best_index)) {
        best_value = mins[lane];
        best_index = indices[lane];
      }
    }
  }
#endif
  for (; j < k; ++j) {
    const float v = h[j] - t[j];
    if (v < best_value) {
      best_value = v;
      best_index = static_cast<int32_t>(j);
    }
  }
  *best = best_value;
  return best_index;
}

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Uniform in [0, bound) for bound > 0, by rejection (no modulo bias). Written out rather than
// std::uniform_int_distribution so that results are the same with every standard library.
uint64_t UniformBelow(std::mt19937_64& rng, uint64_t bound) {
  const uint64_t reject_below = (0 - bound) % bound;  // 2^64 mod bound
  for (;;) {
    const uint64_t r = rng();
    if (r >= reject_below) return r % bound;
  }
}

// Uniform in [0, 1) with 53 random bits.
double UniformUnit(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

// m distinct indices of [0, n), uniformly (Floyd's algorithm: O(m) time and memory), in the
// order drawn.
std::vector<int64_t> SampleWithoutReplacement(int64_t n, int64_t m, std::mt19937_64& rng) {
  std::vector<int64_t> sample;
  sample.reserve(m);
  std::unordered_set<int64_t> chosen;
  chosen.reserve(m);
  for (int64_t j = n - m; j < n; ++j) {
    const int64_t t = static_cast<int64_t>(UniformBelow(rng, static_cast<uint64_t>(j) + 1));
    const int64_t pick = chosen.insert(t).second ? t : j;
    if (pick == j) chosen.insert(j);
    sample.push_back(pick);
  }
  return sample;
}

}  // namespace

absl::Status ValidateKMeansInput(const float* data, int64_t n, int64_t d, int64_t k) {
  if (d < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("d %d: the dimension must be at least 1", d));
  }
  if (n < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("n %d: need at least one row", n));
  }
  if (k < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("k %d: need at least one centroid", k));
  }
  if (k > n) {
    return absl::InvalidArgumentError(absl::StrFormat("k %d exceeds n %d rows", k, n));
  }
  if (k > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("k %d exceeds the int32 range of the assignments", k));
  }
  if (n > std::numeric_limits<int64_t>::max() / d) {
    return absl::InvalidArgumentError(absl::StrFormat("n %d x d %d overflows", n, d));
  }
  if (data == nullptr) return absl::InvalidArgumentError("data is null");
  for (int64_t row = 0; row < n; ++row) {
    const float* v = data + row * d;
    for (int64_t j = 0; j < d; ++j) {
      if (!std::isfinite(v[j])) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "data[row %d, component %d] = %f: components must be finite", row, j, v[j]));
      }
    }
  }
  return absl::OkStatus();
}

void SquaredDistances(const float* x, int64_t n, const float* centroids, int64_t k, int64_t d,
                      float* out, int num_threads) {
  if (n <= 0 || k <= 0) return;
  const std::vector<float> c_norms = SquaredNorms(centroids, k, d);
  const PackedRhs c(centroids, k, d);  // packed once, shared by the workers
  SquaredDistancesPacked(x, n, c, c_norms.data(), out, num_threads);
}

void SquaredDistancesPacked(const float* x, int64_t n, const PackedRhs& centroids,
                            const float* centroid_squared_norms, float* out, int num_threads) {
  const int64_t k = centroids.k();
  const int64_t d = centroids.d();
  if (n <= 0 || k <= 0) return;
  const Eigen::Map<const Eigen::RowVectorXf> c_norm_row(centroid_squared_norms, k);
  const int64_t block = RowsPerBlock(k);
  const int64_t num_blocks = CeilDiv(n, block);
  ParallelFor(num_blocks, ParallelWorkers(num_threads, num_blocks), [&](int64_t b, int) {
    const int64_t row0 = b * block;
    const int64_t m = std::min(block, n - row0);
    const Eigen::Map<const RowMatrix> xb(x + row0 * d, m, d);
    // The block of the output (m x k) holds x.c first, then the distances.
    Eigen::Map<RowMatrix> tile(out + row0 * k, m, k);
    centroids.Multiply(x + row0 * d, m, out + row0 * k, k);
    for (int64_t i = 0; i < m; ++i) {
      const float x_norm = xb.row(i).squaredNorm();
      tile.row(i) = ((c_norm_row - 2.0f * tile.row(i)).array() + x_norm).cwiseMax(0.0f).matrix();
    }
  });
}

void AssignNearest(const float* x, int64_t n, const float* centroids, int64_t k, int64_t d,
                   int32_t* labels, float* distances, int num_threads) {
  if (n <= 0 || k <= 0) return;
  const PackedRhs packed(centroids, k, d);  // packed once, shared by the workers
  const std::vector<float> norms = SquaredNorms(centroids, k, d);
  AssignNearestPacked(x, n, packed, norms.data(), labels, distances, num_threads);
}

void AssignNearestPacked(const float* x, int64_t n, const PackedRhs& centroids,
                         const float* centroid_squared_norms, int32_t* labels, float* distances,
                         int num_threads) {
  const int64_t k = centroids.k();
  const int64_t d = centroids.d();
  if (n <= 0 || k <= 0) return;
  // argmin_j ||x||^2 - 2 x.c_j + ||c_j||^2 = argmin_j (||c_j||^2 / 2 - x.c_j); halving is exact,
  // so the values compared are those of the full expression divided by 2.
  std::vector<float> half_c_norms(centroid_squared_norms, centroid_squared_norms + k);
  for (float& v : half_c_norms) v *= 0.5f;
  const int64_t block = std::min(RowsPerBlock(k), n);
  const int64_t num_blocks = CeilDiv(n, block);
  const int workers = ParallelWorkers(num_threads, num_blocks);
  // One tile (block x k) per worker, allocated on first use by that worker.
  std::vector<std::vector<float>> tiles(workers);
  ParallelFor(num_blocks, workers, [&](int64_t b, int worker) {
    const int64_t row0 = b * block;
    const int64_t m = std::min(block, n - row0);
    std::vector<float>& tile_storage = tiles[worker];
    if (tile_storage.empty()) tile_storage.resize(block * k);
    centroids.Multiply(x + row0 * d, m, tile_storage.data(), k);  // x.c, m x k
    const Eigen::Map<const RowMatrix> xb(x + row0 * d, m, d);
    for (int64_t i = 0; i < m; ++i) {
      float best;
      labels[row0 + i] =
          ArgminOfDifference(tile_storage.data() + i * k, half_c_norms.data(), k, &best);
      if (distances != nullptr) {
        distances[row0 + i] = std::max(0.0f, xb.row(i).squaredNorm() + 2.0f * best);
      }
    }
  });
}

int64_t UpdateCentroids(const float* x, int64_t n, int64_t d, const int32_t* labels, int64_t k,
                        uint64_t seed, float* centroids, int num_threads) {
  if (k <= 0 || d <= 0) return 0;
  // Each task owns a contiguous range of centroids and sums, in row order and in double, the
  // rows labelled into its range. Every centroid's sum is therefore the same whatever the thread
  // count, and no partial sums need merging.
  std::vector<int64_t> counts(k, 0);
  const int workers = ParallelWorkers(num_threads, k);
  const int64_t per_task = CeilDiv(k, workers);
  ParallelFor(workers, workers, [&](int64_t task, int) {
    const int64_t c0 = task * per_task;
    const int64_t c1 = std::min(k, c0 + per_task);
    if (c0 >= c1) return;
    std::vector<double> sums((c1 - c0) * d, 0.0);  // (c1 - c0) x d
    for (int64_t i = 0; i < n; ++i) {
      const int64_t label = labels[i];
      if (label < c0 || label >= c1) continue;
      ++counts[label];
      double* sum = sums.data() + (label - c0) * d;
      const float* row = x + i * d;
      for (int64_t j = 0; j < d; ++j) sum[j] += row[j];
    }
    for (int64_t c = c0; c < c1; ++c) {
      if (counts[c] == 0) continue;
      const double inverse = 1.0 / static_cast<double>(counts[c]);
      const double* sum = sums.data() + (c - c0) * d;
      float* centroid = centroids + c * d;
      for (int64_t j = 0; j < d; ++j) centroid[j] = static_cast<float>(sum[j] * inverse);
    }
  });

  // Empty clusters: split a cluster picked with probability proportional to (size - 1), as
  // FAISS does; the counts are then shared as if the split cluster had divided evenly.
  std::mt19937_64 rng(seed);
  int64_t splits = 0;
  for (int64_t empty = 0; empty < k; ++empty) {
    if (counts[empty] != 0) continue;
    int64_t total_weight = 0;
    for (int64_t c = 0; c < k; ++c) total_weight += std::max<int64_t>(counts[c] - 1, 0);
    if (total_weight == 0) break;  // only when labels fall outside [0, k): nothing to split
    int64_t r = static_cast<int64_t>(UniformBelow(rng, static_cast<uint64_t>(total_weight)));
    int64_t big = 0;
    for (; big < k; ++big) {
      r -= std::max<int64_t>(counts[big] - 1, 0);
      if (r < 0) break;
    }
    float* to = centroids + empty * d;
    float* from = centroids + big * d;
    std::memcpy(to, from, sizeof(float) * d);
    for (int64_t j = 0; j < d; ++j) {
      const float sign = j % 2 == 0 ? 1.0f : -1.0f;
      to[j] *= 1.0f + sign * kSplitEpsilon;
      from[j] *= 1.0f - sign * kSplitEpsilon;
    }
    counts[empty] = counts[big] / 2;
    counts[big] -= counts[empty];
    ++splits;
  }
  return splits;
}

void InitCentroids(const float* x, int64_t n, int64_t d, int64_t k, KMeansOptions::Init init,
                   uint64_t seed, float* centroids, int num_threads) {
  if (n <= 0 || k <= 0 || d <= 0) return;
  k = std::min(k, n);
  std::mt19937_64 rng(seed);
  auto copy_row = [&](int64_t row, int64_t c) {
    std::memcpy(centroids + c * d, x + row * d, sizeof(float) * d);
  };
  if (init == KMeansOptions::Init::kRandom) {
    const std::vector<int64_t> rows = SampleWithoutReplacement(n, k, rng);
    for (int64_t c = 0; c < k; ++c) copy_row(rows[c], c);
    return;
  }

  // k-means++: each next centroid is a row drawn with probability proportional to its squared
  // distance to the nearest centroid so far. min_distance (n) holds those distances; the sums
  // per block of rows (fixed partition, summed in block order) make the draw independent of the
  // thread count.
  constexpr int64_t kBlock = 4096;
  const int64_t num_blocks = CeilDiv(n, kBlock);
  const int workers = ParallelWorkers(num_threads, num_blocks);
  std::vector<float> min_distance(n);
  std::vector<double> block_sums(num_blocks);
  const Eigen::Map<const RowMatrix> xm(x, n, d);
  auto add_centroid = [&](int64_t c) {
    const Eigen::Map<const RowVector> centroid(centroids + c * d, d);
    ParallelFor(num_blocks, workers, [&](int64_t b, int) {
      const int64_t row0 = b * kBlock;
      const int64_t row1 = std::min(n, row0 + kBlock);
      double sum = 0;
      for (int64_t i = row0; i < row1; ++i) {
        const float distance = (xm.row(i) - centroid).squaredNorm();
        if (c == 0 || distance < min_distance[i]) min_distance[i] = distance;
        sum += min_distance[i];
      }
      block_sums[b] = sum;
    });
  };
  copy_row(static_cast<int64_t>(UniformBelow(rng, n)), 0);
  for (int64_t c = 1; c < k; ++c) {
    add_centroid(c - 1);
    double total = 0;
    for (double s : block_sums) total += s;
    int64_t pick = -1;
    if (total > 0) {
      double r = UniformUnit(rng) * total;
      int64_t b = 0;
      while (b + 1 < num_blocks && r >= block_sums[b]) r -= block_sums[b++];
      double cumulative = 0;
      int64_t last_positive = -1;
      for (int64_t i = b * kBlock, end = std::min(n, i + kBlock); i < end; ++i) {
        if (min_distance[i] <= 0) continue;
        last_positive = i;
        cumulative += min_distance[i];
        if (r < cumulative) {
          pick = i;
          break;
        }
      }
      if (pick < 0) pick = last_positive;  // rounding at the end of the block
    }
    // Every row coincides with a centroid already (duplicates): any row will do.
    if (pick < 0) pick = static_cast<int64_t>(UniformBelow(rng, n));
    copy_row(pick, c);
  }
}

absl::Status ValidateKMeansOptions(const KMeansOptions& options) {
  if (options.max_iterations < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("max_iterations %d: must be at least 0", options.max_iterations));
  }
  if (!(options.tolerance >= 0 && options.tolerance < 1)) {  // also NaN
    return absl::InvalidArgumentError(
        absl::StrFormat("tolerance %g: must be finite and in [0, 1) (a fraction of the objective)",
                        options.tolerance));
  }
  if (options.restarts < 1 || options.restarts > kMaxKMeansRestarts) {
    return absl::InvalidArgumentError(
        absl::StrFormat("restarts %d: must be in [1, %d]", options.restarts, kMaxKMeansRestarts));
  }
  // Iteration numbers reported to on_iteration (r * max_iterations + i) must fit an int.
  if (int64_t{options.restarts} * options.max_iterations > std::numeric_limits<int>::max()) {
    return absl::InvalidArgumentError(absl::StrFormat("restarts %d x max_iterations %d exceeds %d",
                                                      options.restarts, options.max_iterations,
                                                      std::numeric_limits<int>::max()));
  }
  if (options.max_points_per_centroid < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "max_points_per_centroid %d: must be at least 0", options.max_points_per_centroid));
  }
  if (options.num_threads < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("num_threads %d: must be at least 0", options.num_threads));
  }
  return absl::OkStatus();
}

uint64_t RestartSeed(uint64_t seed, int restart) {
  if (restart == 0) return seed;
  return SplitMix64(seed ^ (0xd1b54a32d192ed03ULL * static_cast<uint64_t>(restart)));
}

bool KMeansConverged(double previous, double objective, double tolerance) {
  // Before the first iteration previous is +inf, and inf - x <= tolerance * inf would hold.
  if (!std::isfinite(previous)) return false;
  return previous - objective <= tolerance * previous;
}

const float* KMeansTrainingRows(const float* data, int64_t n, int64_t d, int64_t k,
                                int64_t max_points_per_centroid, uint64_t seed,
                                std::vector<float>* sample, int64_t* rows) {
  *rows = n;
  // n > k * max_points_per_centroid, without overflow.
  if (max_points_per_centroid <= 0 || k <= 0 || max_points_per_centroid > n / k ||
      k * max_points_per_centroid >= n) {
    return data;
  }
  const int64_t m = k * max_points_per_centroid;
  const std::vector<int64_t> picked = SampleRows(n, m, seed ^ 0x5a4d504c45ULL);
  sample->resize(static_cast<size_t>(m * d));
  for (int64_t i = 0; i < m; ++i) {
    std::memcpy(sample->data() + i * d, data + picked[i] * d, sizeof(float) * d);
  }
  *rows = m;
  return sample->data();
}

namespace {

// One run of Lloyd from seed `seed` on the training rows train (n_train x d); the final
// assignment covers all n rows of data. Iterations are reported to on_iteration as
// first_reported + i.
absl::StatusOr<KMeansResult> RunLloyd(const float* data, int64_t n, const float* train,
                                      int64_t n_train, int64_t d, const KMeansOptions& options,
                                      uint64_t seed, int first_reported, int threads) {
  const int64_t k = options.k;
  KMeansResult result;
  result.k = k;
  result.d = d;
  result.training_rows = n_train;
  result.centroids.resize(k * d);
  float* centroids = result.centroids.data();
  StartingCentroids(train, n_train, d, options, seed, first_reported == 0, centroids, threads);
  if (options.spherical) NormalizeRows(centroids, k, d);

  std::vector<int32_t> labels(n_train);
  std::vector<float> distances(n_train);
  double previous = std::numeric_limits<double>::infinity();
  for (int iteration = 0; iteration < options.max_iterations; ++iteration) {
    AssignNearest(train, n_train, centroids, k, d, labels.data(), distances.data(), threads);
    double objective = 0;
    for (float v : distances) objective += v;
    const uint64_t split_seed = SplitMix64(seed + 0x9e3779b97f4a7c15ULL * (iteration + 1));
    UpdateCentroids(train, n_train, d, labels.data(), k, split_seed, centroids, threads);
    if (options.spherical) NormalizeRows(centroids, k, d);
    result.iterations = iteration + 1;
    if (options.on_iteration && !options.on_iteration(first_reported + iteration, objective)) {
      return absl::CancelledError(
          absl::StrFormat("k-means cancelled by on_iteration after iteration %d (objective %g)",
                          first_reported + iteration, objective));
    }
    if (KMeansConverged(previous, objective, options.tolerance)) break;
    previous = objective;
  }

  // Final assignment of every input row to the trained centroids.
  labels = {};
  distances.assign(n, 0.0f);
  result.assignments.resize(n);
  AssignNearest(data, n, centroids, k, d, result.assignments.data(), distances.data(), threads);
  for (float v : distances) result.objective += v;
  return result;
}

}  // namespace

absl::StatusOr<KMeansResult> TrainKMeans(const float* data, int64_t n, int64_t d,
                                         const KMeansOptions& options) {
  const int64_t k = options.k;
  if (absl::Status status = ValidateKMeansInput(data, n, d, k); !status.ok()) return status;
  if (absl::Status status = ValidateKMeansOptions(options); !status.ok()) return status;
  if (absl::Status status = ValidateInitialCentroids(options, d); !status.ok()) return status;
  const int threads = ResolveThreads(options.num_threads);

  // Training rows: all n, or k * max_points_per_centroid of them (the same for every restart).
  std::vector<float> sample;
  int64_t n_train = n;
  const float* train = KMeansTrainingRows(data, n, d, k, options.max_points_per_centroid,
                                          options.seed, &sample, &n_train);

  return BestOfRestarts(options, [&](uint64_t seed, int first_iteration) {
    return RunLloyd(data, n, train, n_train, d, options, seed, first_iteration, threads);
  });
}

void StartingCentroids(const float* x, int64_t n, int64_t d, const KMeansOptions& options,
                       uint64_t seed, bool first_restart, float* centroids, int num_threads) {
  if (first_restart && !options.initial_centroids.empty()) {
    std::copy(options.initial_centroids.begin(), options.initial_centroids.end(), centroids);
    return;
  }
  InitCentroids(x, n, d, options.k, options.init, seed, centroids, num_threads);
}

absl::Status ValidateInitialCentroids(const KMeansOptions& options, int64_t d) {
  const std::vector<float>& initial = options.initial_centroids;
  if (initial.empty()) return absl::OkStatus();
  if (static_cast<int64_t>(initial.size()) != options.k * d) {
    return absl::InvalidArgumentError(
        absl::StrFormat("initial_centroids has %d values; k %d x d %d needs %d", initial.size(),
                        options.k, d, options.k * d));
  }
  for (size_t i = 0; i < initial.size(); ++i) {
    if (!std::isfinite(initial[i])) {
      return absl::InvalidArgumentError(
          absl::StrFormat("initial_centroids[%d] = %g is not finite", i, initial[i]));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<KMeansResult> BestOfRestarts(
    const KMeansOptions& options,
    absl::FunctionRef<absl::StatusOr<KMeansResult>(uint64_t seed, int first_iteration)> run) {
  KMeansResult best;
  int total_iterations = 0;
  for (int restart = 0; restart < options.restarts; ++restart) {
    absl::StatusOr<KMeansResult> result =
        run(RestartSeed(options.seed, restart), restart * options.max_iterations);
    if (!result.ok()) return result.status();
    total_iterations += result->iterations;
    if (restart == 0 || result->objective < best.objective) {
      best = *std::move(result);
      best.restart = restart;
    }
  }
  best.total_iterations = total_iterations;
  return best;
}

std::vector<int64_t> SampleRows(int64_t n, int64_t m, uint64_t seed) {
  std::mt19937_64 rng(SplitMix64(seed));
  std::vector<int64_t> rows = SampleWithoutReplacement(n, std::min(m, n), rng);
  std::sort(rows.begin(), rows.end());
  return rows;
}

}  // namespace quantd
