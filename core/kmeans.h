// k-means clustering (Lloyd), in the shape of FAISS's Clustering: k-means++ or random init,
// distances as matrix products (||x||^2 - 2 x.c + ||c||^2) in row blocks so memory stays
// bounded, empty clusters split from large ones, training on a subsample when n is large,
// optional spherical mode (unit-norm centroids, for cosine), multi-threaded, deterministic for
// a given seed and thread count.
//
// Shapes: data is n x d row-major float32; centroids are k x d row-major.
#ifndef QUANTD_CORE_KMEANS_H_
#define QUANTD_CORE_KMEANS_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "core/gemm.h"

namespace quantd {

// Largest KMeansOptions::restarts accepted (k-means-constrained's n_init; seed 000 uses 3).
inline constexpr int kMaxKMeansRestarts = 100;

struct KMeansOptions {
  int64_t k = 256;
  // Lloyd iterations per restart, at least 0.
  int max_iterations = 25;
  // Stop a restart once an iteration's objective improves on the previous iteration's by no more
  // than this fraction of it: (previous - objective) <= tolerance * previous. Never tested after
  // the first iteration (there is no previous one). In [0, 1); 0 runs until the objective stops
  // decreasing or max_iterations.
  double tolerance = 1e-4;
  // Independent runs (k-means-constrained's n_init), in [1, kMaxKMeansRestarts]. Restart r
  // initialises from seed RestartSeed(seed, r) (restart 0 from `seed` itself) on the same
  // training rows; the run whose final objective (over all n rows) is lowest is returned, the
  // earliest on ties. Costs `restarts` times one run.
  int restarts = 1;
  enum class Init { kKMeansPlusPlus, kRandom };
  Init init = Init::kKMeansPlusPlus;
  // Warm start: when not empty (k x d finite values), restart 0 starts from these centroids
  // instead of `init` (e.g. a previous model's, so that codes keep their meaning across
  // retrains); the other restarts use `init`.
  std::vector<float> initial_centroids;
  uint64_t seed = 1234;
  // Train on a random subsample of k * max_points_per_centroid rows when n is larger (0: never
  // subsample). The final assignments still cover all n rows.
  int64_t max_points_per_centroid = 256;
  // Spherical k-means: centroids are renormalised to unit length after every update.
  bool spherical = false;
  // Worker threads; 0 uses std::thread::hardware_concurrency().
  int num_threads = 0;
  // Called after every iteration with (iteration, objective): objective is that of the
  // iteration's assignment step over the training rows (before its centroid update), and
  // iteration is r * max_iterations + i for iteration i (from 0) of restart r, so it increases
  // across restarts (iteration / max_iterations is the restart; a restart that stops early skips
  // the rest of its numbers). Returning false cancels training (CANCELLED).
  std::function<bool(int, double)> on_iteration;
};

struct KMeansResult {
  int64_t k = 0;
  int64_t d = 0;
  std::vector<float> centroids;      // k x d
  std::vector<int32_t> assignments;  // n: nearest centroid of every input row
  double objective = 0;              // sum over the n rows of the squared distance to it
  int iterations = 0;                // Lloyd iterations run by the returned (winning) restart
  int total_iterations = 0;          // Lloyd iterations run by all restarts together
  int restart = 0;                   // the winning restart, in [0, restarts)
  int64_t training_rows = 0;         // rows used for training (n, or the subsample size)
};

// Clusters `data` (n x d). INVALID_ARGUMENT for d == 0, k < 1, k > n, or NaN/Inf components,
// and for options ValidateKMeansOptions rejects. The initial centroids of restart r are
// InitCentroids(training rows, ..., RestartSeed(options.seed, r)); the result is the same for a
// given seed and thread count (and does not depend on the thread count either).
absl::StatusOr<KMeansResult> TrainKMeans(const float* data, int64_t n, int64_t d,
                                         const KMeansOptions& options);

// Building blocks, shared with balanced k-means, the residual quantizer and the IVF index.

// Squared L2 distances between every row of x (n x d) and every centroid (k x d), written to
// out (n x k). Computed as ||x||^2 - 2 x.c + ||c||^2 with GEMM over row blocks, clamped at 0.
void SquaredDistances(const float* x, int64_t n, const float* centroids, int64_t k, int64_t d,
                      float* out, int num_threads = 0);

// As SquaredDistances, against centroids packed once (PackedRhs) with their squared norms (k), for
// repeated calls against the same centroids (cost rows computed in small blocks).
void SquaredDistancesPacked(const float* x, int64_t n, const PackedRhs& centroids,
                            const float* centroid_squared_norms, float* out, int num_threads = 0);

// Nearest centroid of every row of x: labels (n) and squared distances (n, may be null). Blocked
// so that only a bounded n_block x k tile of distances exists at a time.
void AssignNearest(const float* x, int64_t n, const float* centroids, int64_t k, int64_t d,
                   int32_t* labels, float* distances, int num_threads = 0);

// As AssignNearest, against centroids packed once (PackedRhs) with their squared norms (k), for
// repeated calls against the same centroids (encoding).
void AssignNearestPacked(const float* x, int64_t n, const PackedRhs& centroids,
                         const float* centroid_squared_norms, int32_t* labels, float* distances,
                         int num_threads = 0);

// Recomputes centroids (k x d) as the means of their assigned rows. A cluster left empty takes
// a split of a large cluster (FAISS's rule: pick one with probability proportional to its size
// beyond 1, copy its centroid and move both copies apart by a small symmetric perturbation).
// Rows whose label is outside [0, k) are ignored. Sums are taken in double, per centroid in row
// order, so the result does not depend on num_threads. Returns the number of empty clusters that
// were split.
int64_t UpdateCentroids(const float* x, int64_t n, int64_t d, const int32_t* labels, int64_t k,
                        uint64_t seed, float* centroids, int num_threads = 0);

// The centroids (k x d) a restart starts from: options.initial_centroids for the first restart
// when given, else InitCentroids with options.init and `seed`.
void StartingCentroids(const float* x, int64_t n, int64_t d, const KMeansOptions& options,
                       uint64_t seed, bool first_restart, float* centroids, int num_threads = 0);
// INVALID_ARGUMENT unless options.initial_centroids is empty or k x d finite values.
absl::Status ValidateInitialCentroids(const KMeansOptions& options, int64_t d);

// Picks k initial centroids (k x d) from x by k-means++ (D^2 sampling) or uniformly at random.
void InitCentroids(const float* x, int64_t n, int64_t d, int64_t k, KMeansOptions::Init init,
                   uint64_t seed, float* centroids, int num_threads = 0);

// Squared norms (k) of the k rows of m (k x d), as the distance functions compute them.
std::vector<float> SquaredNorms(const float* m, int64_t k, int64_t d);

// min(m, n) distinct rows of [0, n), drawn uniformly without replacement from `seed`, in
// increasing order (training subsamples).
std::vector<int64_t> SampleRows(int64_t n, int64_t m, uint64_t seed);

// Checks data and parameters as TrainKMeans does.
absl::Status ValidateKMeansInput(const float* data, int64_t n, int64_t d, int64_t k);

// Checks the options other than k (TrainKMeans and TrainBalancedKMeans): INVALID_ARGUMENT naming
// the field and its value for max_iterations < 0, a tolerance outside [0, 1) or not finite,
// restarts outside [1, kMaxKMeansRestarts], or a negative max_points_per_centroid or num_threads.
absl::Status ValidateKMeansOptions(const KMeansOptions& options);

// The seed of restart r (0 <= r < restarts): options.seed itself for r = 0, so one restart is the
// run it always was; a SplitMix64 mix of (seed, r) otherwise.
uint64_t RestartSeed(uint64_t seed, int restart);

// The run of the lowest objective over options.restarts runs (the earliest on ties), with
// total_iterations summed over all and `restart` set: run(seed, first_iteration) is restart r's
// run from RestartSeed(options.seed, r), numbering its iterations from r * max_iterations. The
// first error is returned as it is.
absl::StatusOr<KMeansResult> BestOfRestarts(
    const KMeansOptions& options,
    absl::FunctionRef<absl::StatusOr<KMeansResult>(uint64_t seed, int first_iteration)> run);

// Whether a run has converged: `previous` is the objective of the iteration before (+inf before
// the first, which never converges), `objective` this iteration's, both over the same rows.
// True when (previous - objective) <= tolerance * previous.
bool KMeansConverged(double previous, double objective, double tolerance);

// Training rows of k-means (plain or balanced, so that both train on the same rows): all n rows
// of data (n x d), or when max_points_per_centroid > 0 and n > k * max_points_per_centroid, k *
// max_points_per_centroid of them drawn uniformly without replacement from `seed`, in row order,
// copied to *sample. Returns the rows (*rows of them, rows x d).
const float* KMeansTrainingRows(const float* data, int64_t n, int64_t d, int64_t k,
                                int64_t max_points_per_centroid, uint64_t seed,
                                std::vector<float>* sample, int64_t* rows);

}  // namespace quantd

#endif  // QUANTD_CORE_KMEANS_H_
