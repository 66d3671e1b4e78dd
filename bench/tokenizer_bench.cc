// Semantic-ID tokenizer benchmark, one run, four tables:
//
//   1. Tokenization quality of RQ-KMeans, plain and balanced (slack 0.1), on the SASRec item
//      embeddings of Amazon Beauty / Instruments (4 x 256 and 3 x 256) and on Fashion-MNIST
//      (3 x 256): collisions, codebook usage, perplexity, reconstruction MSE, train time. Next to
//      the SASRec rows, the LETTER reference tokenization shipped with the data.
//   2. Train time of balanced vs plain RQ-KMeans 3 x 256 (ratio balanced / plain, target <= 2).
//   3. First-level k-means (k 256, 25 iterations, random init, 256 points per centroid, no early
//      stop) against faiss::Clustering, 1 and 2 threads: seconds, objectives, ratio ours / FAISS.
//   4. Encode throughput: ResidualQuantizer::Encode in-process, and Encode RPCs on loopback
//      against an in-process QuantdServer (vectors/s; p50 / p99 latency per request).
//   5. Balanced vs plain at the same iteration count (25, tolerance 0), one level of 256 codes
//      and RQ 3 x 256, on Fashion-MNIST and the 1M x 128 mixture: iterations counted, seconds,
//      ratio (target <= 2), MSE; and the kFast balanced assignment's objective against the exact
//      one (min-cost flow) on 3000 rows x 256 clusters (target within 1%).
//
//   build-bench/bench/tokenizer_bench [--quick] [--only=quality,balance,faiss,encode,iterations]
//
// --quick skips the 1M x 128 synthetic Gaussian mixture (tables 2 and 3 then cover
// Fashion-MNIST only; the d = 128 encode rows use a 50k-row mixture). All RQ / k-means runs use
// seed 42, 25 iterations and tolerance 0 (every iteration runs, so times compare like for like).
// Data: QUANTD_TEST_DATA_DIR (default: the checkout's ../shared/data) for sasrec/, and Debian's
// dataset-fashion-mnist.
#include <dlfcn.h>
#include <link.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <numbers>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "bench/bench_util.h"
#include "client/client.h"
#include "core/balanced_assignment.h"
#include "core/balanced_kmeans.h"
#include "core/gemm.h"
#include "core/kmeans.h"
#include "core/residual_quantizer.h"
#include "core/semantic_id.h"
#include "faiss/Clustering.h"
#include "faiss/IndexFlat.h"
#include "grpcpp/grpcpp.h"
#include "io/vector_file.h"
#include "server/heap.h"
#include "server/server.h"

namespace quantd {
namespace {

using bench::Clock;
using bench::Die;
using bench::FreshDir;
using bench::SecondsSince;
using bench::Throughput;

constexpr uint64_t kSeed = 42;
constexpr int kIterations = 25;
constexpr int64_t kCodes = 256;

struct Flags {
  bool quick = false;
  std::set<std::string> only;  // empty: every section
  bool Run(const std::string& section) const { return only.empty() || only.contains(section); }
};

// ------------------------------------------------------------------------------------------
// Environment: threads, CPU, BLAS.

// Shared objects with "blas" or "lapack" in their name, resolved through symlinks (that is how
// the Debian alternative libblas.so.3 shows which implementation it is).
std::vector<std::string> LoadedBlasLibraries() {
  std::vector<std::string> found;
  dl_iterate_phdr(
      [](struct dl_phdr_info* info, size_t, void* data) {
        const std::string name = info->dlpi_name ? info->dlpi_name : "";
        if (name.find("blas") != std::string::npos) {
          std::error_code error;
          const auto real = std::filesystem::canonical(name, error);
          static_cast<std::vector<std::string>*>(data)->push_back(
              error ? name : name + " -> " + real.string());
        }
        return 0;
      },
      &found);
  return found;
}

using OpenBlasSetThreads = void (*)(int);
using OpenBlasString = char* (*)();

OpenBlasSetThreads OpenBlasSetNumThreads() {
  return reinterpret_cast<OpenBlasSetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
}

std::string BlasDescription() {
  auto config = reinterpret_cast<OpenBlasString>(dlsym(RTLD_DEFAULT, "openblas_get_config"));
  auto core = reinterpret_cast<OpenBlasString>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  std::string text;
  if (config != nullptr) {
    text = absl::StrCat("OpenBLAS (", config(), "; core ", core ? core() : "?", ")");
  } else {
    text = "not OpenBLAS (no openblas_get_config symbol): reference BLAS or other";
  }
  for (const std::string& lib : LoadedBlasLibraries()) absl::StrAppend(&text, "\n    ", lib);
  return text;
}

// Threads for FAISS: OpenMP for its loops, OpenBLAS for its sgemm calls.
void SetPeerThreads(int threads) {
  omp_set_num_threads(threads);
  if (auto set = OpenBlasSetNumThreads()) set(threads);
}

// ------------------------------------------------------------------------------------------
// Data.

std::string SasrecDir() { return bench::DataDir() + "/sasrec"; }

Matrix Load(const std::string& path) { return bench::LoadMatrix(path); }

Matrix FirstRows(const Matrix& m, int64_t rows) {
  Matrix out;
  out.rows = std::min(rows, m.rows);
  out.dim = m.dim;
  out.values.assign(m.values.begin(), m.values.begin() + out.rows * m.dim);
  return out;
}

// ------------------------------------------------------------------------------------------
// Table 1 / 2: RQ-KMeans runs.

struct TokenizationRow {
  std::string dataset;
  std::string config;  // "4x256"
  std::string method;  // "plain", "balanced", "LETTER"
  int64_t items = 0;
  CollisionStats collisions;
  std::vector<LevelUsage> usage;
  std::optional<double> mse;
  std::optional<double> seconds;
  std::string iterations;
};

void Summarize(const int32_t* codes, int64_t n, int64_t levels, int64_t stride,
               TokenizationRow& row) {
  row.items = n;
  bench::CodeSummary summary = bench::SummarizeCodes(codes, n, levels, stride, kCodes);
  row.collisions = summary.collisions;
  row.usage = std::move(summary.usage);
}

struct RqRun {
  TokenizationRow row;
  RqTrainResult result;
  // Seconds inside Lloyd iterations (from the per-iteration callbacks), summed over levels; the
  // rest of the train time is initialisation, the final assignment of all n rows and residuals.
  double lloyd_seconds = 0;
};

RqRun TrainRq(const std::string& dataset, const Matrix& m, int levels, bool balanced,
              int max_iterations = kIterations) {
  RqOptions options = bench::RqKMeansOptions(levels, kCodes, balanced, kSeed, max_iterations,
                                             /*threads=*/0);  // all cores
  std::fprintf(stderr, "  training %s %dx%lld %s ...\n", dataset.c_str(), levels,
               static_cast<long long>(kCodes), balanced ? "balanced" : "plain");
  // Per level: times of the first and last iteration callbacks, and the iteration count.
  std::vector<Clock::time_point> first(levels), last(levels);
  std::vector<int> seen(levels, 0);
  options.on_progress = [&](int level, int, double) {
    const auto now = Clock::now();
    if (seen[level]++ == 0) first[level] = now;
    last[level] = now;
    return true;
  };
  const auto start = Clock::now();
  auto trained = TrainResidualQuantizer(m.values.data(), m.rows, m.dim, options);
  const double seconds = SecondsSince(start);
  if (!trained.ok()) Die(absl::StrCat(dataset, ": ", trained.status().ToString()));
  RqRun run;
  run.row.dataset = dataset;
  run.row.config = absl::StrCat(levels, "x", kCodes);
  run.row.method = balanced ? "balanced" : "plain";
  run.row.seconds = seconds;
  for (int l = 0; l < levels; ++l) {
    // Callbacks come after each iteration: the span first..last covers seen - 1 iterations.
    if (seen[l] > 1) {
      run.lloyd_seconds +=
          std::chrono::duration<double>(last[l] - first[l]).count() * seen[l] / (seen[l] - 1);
    }
  }
  run.row.mse = trained->levels.back().mse_after;
  std::vector<std::string> iterations;
  for (const RqLevelReport& level : trained->levels)
    iterations.push_back(absl::StrCat(level.iterations));
  run.row.iterations = absl::StrJoin(iterations, "/");
  Summarize(trained->codes.data(), m.rows, levels, levels, run.row);
  run.result = std::move(*trained);
  return run;
}

void PrintTokenizationHeader() {
  std::printf("%-14s %-6s %-10s %7s %7s %8s %-17s %-17s %-16s %10s %8s %s\n", "dataset", "L x K",
              "method", "items", "unique", "collide%", "codes used/level", "perplexity/level",
              "L0 size min..max", "MSE last", "train s", "iters/level");
}

void PrintTokenizationRow(const TokenizationRow& row) {
  std::vector<std::string> used, perplexity;
  for (const LevelUsage& u : row.usage) {
    used.push_back(absl::StrCat(u.codes_used));
    perplexity.push_back(absl::StrCat(static_cast<int64_t>(std::lround(u.perplexity))));
  }
  const std::string sizes =
      row.usage.empty() ? "-" : absl::StrCat(row.usage[0].size_min, "..", row.usage[0].size_max);
  char mse[32] = "-", seconds[32] = "-";
  if (row.mse) std::snprintf(mse, sizeof(mse), "%.4g", *row.mse);
  if (row.seconds) std::snprintf(seconds, sizeof(seconds), "%.2f", *row.seconds);
  std::printf(
      "%-14s %-6s %-10s %7lld %7lld %7.2f%% %-17s %-17s %-16s %10s %8s %s\n", row.dataset.c_str(),
      row.config.c_str(), row.method.c_str(), static_cast<long long>(row.items),
      static_cast<long long>(row.collisions.unique_tuples), 100.0 * row.collisions.collision_rate,
      absl::StrJoin(used, "/").c_str(), absl::StrJoin(perplexity, "/").c_str(), sizes.c_str(), mse,
      seconds, row.iterations.empty() ? "-" : row.iterations.c_str());
  std::fflush(stdout);
}

// ------------------------------------------------------------------------------------------
// Table 3: k-means against FAISS.

struct KMeansComparison {
  std::string dataset;
  int threads = 0;
  int64_t training_rows = 0;
  double ours_seconds = 0;        // TrainKMeans, including its final assignment of all n rows
  double ours_train_seconds = 0;  // up to the end of the last iteration
  double ours_objective = 0;      // last iteration's objective over the training rows
  double ours_objective_all = 0;  // final centroids, all n rows
  double faiss_seconds = 0;
  double faiss_objective = 0;
  double faiss_objective_all = 0;
};

double ObjectiveAll(const Matrix& m, const std::vector<float>& centroids, int64_t k) {
  std::vector<int32_t> labels(static_cast<size_t>(m.rows));
  std::vector<float> distances(static_cast<size_t>(m.rows));
  AssignNearest(m.values.data(), m.rows, centroids.data(), k, m.dim, labels.data(),
                distances.data(), 0);
  double sum = 0;
  for (float v : distances) sum += v;
  return sum;
}

KMeansComparison CompareKMeans(const std::string& dataset, const Matrix& m, int threads) {
  KMeansComparison c;
  c.dataset = dataset;
  c.threads = threads;
  std::fprintf(stderr, "  k-means %s, %d thread(s): quantd ...\n", dataset.c_str(), threads);

  KMeansOptions options;
  options.k = kCodes;
  options.max_iterations = kIterations;
  options.tolerance = 0;
  options.init = KMeansOptions::Init::kRandom;
  options.seed = kSeed;
  options.max_points_per_centroid = 256;
  options.num_threads = threads;
  Clock::time_point start;
  options.on_iteration = [&](int, double objective) {
    c.ours_objective = objective;
    c.ours_train_seconds = SecondsSince(start);
    return true;
  };
  start = Clock::now();
  auto ours = TrainKMeans(m.values.data(), m.rows, m.dim, options);
  c.ours_seconds = SecondsSince(start);
  if (!ours.ok()) Die(ours.status().ToString());
  c.training_rows = ours->training_rows;
  c.ours_objective_all = ours->objective;

  std::fprintf(stderr, "  k-means %s, %d thread(s): FAISS ...\n", dataset.c_str(), threads);
  SetPeerThreads(threads);
  faiss::ClusteringParameters parameters;
  parameters.niter = kIterations;
  parameters.seed = static_cast<int>(kSeed);
  parameters.max_points_per_centroid = 256;
  parameters.verbose = false;
  faiss::Clustering clustering(static_cast<int>(m.dim), static_cast<int>(kCodes), parameters);
  faiss::IndexFlatL2 index(m.dim);
  start = Clock::now();
  clustering.train(m.rows, m.values.data(), index);
  c.faiss_seconds = SecondsSince(start);
  c.faiss_objective = clustering.iteration_stats.back().obj;
  c.faiss_objective_all = ObjectiveAll(m, clustering.centroids, kCodes);
  return c;
}

void PrintKMeansHeader() {
  std::printf("%-14s %7s %8s | %9s %9s %12s %12s | %9s %12s %12s | %10s %10s %10s\n", "dataset",
              "threads", "train n", "ours s", "ours it s", "ours obj", "ours obj(n)", "FAISS s",
              "FAISS obj", "FAISS obj(n)", "ours/FAISS", "it/FAISS", "obj o/F");
}

void PrintKMeansRow(const KMeansComparison& c) {
  std::printf(
      "%-14s %7d %8lld | %9.2f %9.2f %12.5g %12.5g | %9.2f %12.5g %12.5g | %9.2fx %9.2fx %10.4f\n",
      c.dataset.c_str(), c.threads, static_cast<long long>(c.training_rows), c.ours_seconds,
      c.ours_train_seconds, c.ours_objective, c.ours_objective_all, c.faiss_seconds,
      c.faiss_objective, c.faiss_objective_all, c.ours_seconds / c.faiss_seconds,
      c.ours_train_seconds / c.faiss_seconds, c.ours_objective / c.faiss_objective);
  std::fflush(stdout);
}

// ------------------------------------------------------------------------------------------
// Table 5: balanced vs plain at the same iteration count.

// One k-means level (k 256, seed 42, 25 iterations, tolerance 0, k-means++ init, default 256
// points per centroid for both), plain or balanced (slack 0.1). Iterations are counted from the
// callbacks, never assumed.
struct LevelRun {
  int iterations = 0;        // callbacks seen
  double seconds = 0;        // the whole call (init, iterations, final assignment of all n)
  double lloyd_seconds = 0;  // first to last callback, scaled to all iterations
  double objective = 0;      // final, over all n rows
  int64_t training_rows = 0;
  KMeansResult result;
};

LevelRun TrainLevel(const Matrix& m, bool balanced, int max_iterations) {
  KMeansOptions options;
  options.k = kCodes;
  options.max_iterations = max_iterations;
  options.tolerance = 0;
  options.seed = kSeed;
  options.num_threads = 0;
  LevelRun run;
  Clock::time_point first, last;
  options.on_iteration = [&](int, double) {
    const auto now = Clock::now();
    if (run.iterations++ == 0) first = now;
    last = now;
    return true;
  };
  std::fprintf(stderr, "  one level %s ...\n", balanced ? "balanced" : "plain");
  const auto start = Clock::now();
  auto trained = balanced ? TrainBalancedKMeans(m.values.data(), m.rows, m.dim,
                                                BoundsFromSlack(m.rows, kCodes, 0.1), options)
                          : TrainKMeans(m.values.data(), m.rows, m.dim, options);
  run.seconds = SecondsSince(start);
  if (!trained.ok()) Die(trained.status().ToString());
  if (run.iterations > 1) {
    run.lloyd_seconds =
        std::chrono::duration<double>(last - first).count() * run.iterations / (run.iterations - 1);
  }
  run.objective = trained->objective;
  run.training_rows = trained->training_rows;
  run.result = std::move(*trained);
  return run;
}

// kFast (polished, and unpolished as inside the Lloyd iterations) against kExact (min-cost flow)
// on `rows` rows of m (the first ones) x the k centroids given, bounds of slack 0.1 over them.
struct ExactComparison {
  int64_t rows = 0;
  SizeBounds bounds;
  double exact = 0, fast = 0, unpolished = 0;
  double exact_seconds = 0, fast_seconds = 0;
};

ExactComparison CompareWithExact(const Matrix& m, const std::vector<float>& centroids,
                                 int64_t rows) {
  ExactComparison c;
  c.rows = std::min(rows, m.rows);
  // Rows spread over the whole set (every stride-th), not just its start.
  const int64_t stride = m.rows / c.rows;
  std::vector<float> x(static_cast<size_t>(c.rows * m.dim));
  for (int64_t i = 0; i < c.rows; ++i) {
    std::copy_n(m.values.data() + i * stride * m.dim, m.dim, x.data() + i * m.dim);
  }
  std::vector<float> costs(static_cast<size_t>(c.rows * kCodes));
  SquaredDistances(x.data(), c.rows, centroids.data(), kCodes, m.dim, costs.data(), 0);
  c.bounds = BoundsFromSlack(c.rows, kCodes, 0.1);
  auto solve = [&](BalancedMode mode, bool polish, double* seconds) {
    BalancedOptions options;
    options.mode = mode;
    options.polish = polish;
    double objective = 0;
    options.objective = &objective;
    const auto start = Clock::now();
    auto labels = BalancedAssign(costs.data(), c.rows, kCodes, c.bounds, options);
    if (seconds != nullptr) *seconds = SecondsSince(start);
    if (!labels.ok()) Die(labels.status().ToString());
    return objective;
  };
  std::fprintf(stderr, "  exact balanced assignment %lld x %lld ...\n",
               static_cast<long long>(c.rows), static_cast<long long>(kCodes));
  c.exact = solve(BalancedMode::kExact, true, &c.exact_seconds);
  c.fast = solve(BalancedMode::kFast, true, &c.fast_seconds);
  c.unpolished = solve(BalancedMode::kFast, false, nullptr);
  return c;
}

void SameIterationsSection(const std::vector<std::pair<std::string, const Matrix*>>& sets, int hw) {
  std::printf(
      "== 5. Balanced vs plain at the same iteration count (k 256, max %d iterations, "
      "tolerance 0, the longer run re-run to the shorter one's count; seed 42; k-means++; 256 "
      "points/centroid for both; %d threads) ==\n",
      kIterations, hw);
  std::printf(
      "   it = iterations actually run (counted from the callbacks; RQ: per level); s = whole "
      "call; lloyd s = inside the iterations; obj = final objective over all n rows; MSE = obj / "
      "(n d)\n");
  std::printf("%-14s %-8s %8s | %5s %8s %8s %12s | %5s %8s %8s %12s | %7s %7s %9s\n", "dataset",
              "config", "train n", "it", "plain s", "lloyd s", "plain MSE", "it", "bal s",
              "lloyd s", "bal MSE", "bal/pl", "lloyd", "target");
  // Tolerance 0 still stops a run whose objective does not decrease: plain Lloyd once no label
  // changes, balanced k-means also when its (unpolished, hence not exactly optimal) assignment
  // comes out a hair above the previous one. So the run that went further is run again with
  // max_iterations = the other's count (the runs are deterministic: it follows the same path and
  // stops there), until both ran the same number.
  for (const auto& [name, m] : sets) {
    LevelRun plain = TrainLevel(*m, false, kIterations);
    LevelRun balanced = TrainLevel(*m, true, kIterations);
    while (plain.iterations != balanced.iterations) {
      if (plain.iterations > balanced.iterations) {
        plain = TrainLevel(*m, false, balanced.iterations);
      } else {
        balanced = TrainLevel(*m, true, plain.iterations);
      }
    }
    const double nd = static_cast<double>(m->rows * m->dim);
    const double ratio = balanced.seconds / plain.seconds;
    std::printf(
        "%-14s %-8s %8lld | %5d %8.2f %8.2f %12.6g | %5d %8.2f %8.2f %12.6g | %6.2fx %6.2fx "
        "%9s\n",
        name.c_str(), "1x256", static_cast<long long>(plain.training_rows), plain.iterations,
        plain.seconds, plain.lloyd_seconds, plain.objective / nd, balanced.iterations,
        balanced.seconds, balanced.lloyd_seconds, balanced.objective / nd, ratio,
        balanced.lloyd_seconds / plain.lloyd_seconds, ratio <= 2.0 ? "met" : "MISSED");
    std::fflush(stdout);
    // RQ: the same, level by level; a level's input depends on the levels before, so both run
    // again at the least count seen (at most twice: the per-level counts are printed, so any
    // difference left shows).
    int budget = kIterations;
    RqRun rq_plain = TrainRq(name, *m, 3, false, budget);
    RqRun rq_balanced = TrainRq(name, *m, 3, true, budget);
    for (int round = 0; round < 2; ++round) {
      int least = budget;
      for (const RqRun* run : {&rq_plain, &rq_balanced}) {
        for (const RqLevelReport& level : run->result.levels) {
          least = std::min(least, level.iterations);
        }
      }
      if (least == budget) break;
      budget = least;
      rq_plain = TrainRq(name, *m, 3, false, budget);
      rq_balanced = TrainRq(name, *m, 3, true, budget);
    }
    const double rq_ratio = *rq_balanced.row.seconds / *rq_plain.row.seconds;
    std::printf(
        "%-14s %-8s %8lld | %5s %8.2f %8.2f %12.6g | %5s %8.2f %8.2f %12.6g | %6.2fx %6.2fx "
        "%9s\n",
        name.c_str(), "3x256", static_cast<long long>(plain.training_rows),
        rq_plain.row.iterations.c_str(), *rq_plain.row.seconds, rq_plain.lloyd_seconds,
        *rq_plain.row.mse, rq_balanced.row.iterations.c_str(), *rq_balanced.row.seconds,
        rq_balanced.lloyd_seconds, *rq_balanced.row.mse, rq_ratio,
        rq_balanced.lloyd_seconds / rq_plain.lloyd_seconds, rq_ratio <= 2.0 ? "met" : "MISSED");
    std::fflush(stdout);
    const ExactComparison exact = CompareWithExact(*m, balanced.result.centroids, 3000);
    std::printf(
        "%-14s kFast vs kExact (min-cost flow) on %lld rows x %lld clusters (the balanced "
        "level's centroids), sizes %lld..%lld: exact %.6g (%.2f s); fast polished %.6g (%+.3f%%, "
        "%.3f s, target within 1%%: %s); unpolished (inner iterations) %.6g (%+.3f%%)\n",
        name.c_str(), static_cast<long long>(exact.rows), static_cast<long long>(kCodes),
        static_cast<long long>(exact.bounds.size_min),
        static_cast<long long>(exact.bounds.size_max), exact.exact, exact.exact_seconds, exact.fast,
        100 * (exact.fast / exact.exact - 1), exact.fast_seconds,
        exact.fast <= 1.01 * exact.exact ? "met" : "MISSED", exact.unpolished,
        100 * (exact.unpolished / exact.exact - 1));
    std::fflush(stdout);
  }
  std::printf("\n");
}

// ------------------------------------------------------------------------------------------
// Table 4: Encode.

void EncodeInProcess(const std::string& dataset, const Matrix& m, const ResidualQuantizer& rq) {
  const int64_t d = m.dim;
  const int64_t levels = rq.levels();
  std::vector<int32_t> codes(static_cast<size_t>(1024 * levels));
  for (int threads : {1, 0}) {
    const int shown = threads == 0 ? static_cast<int>(std::thread::hardware_concurrency()) : 1;
    for (int64_t batch : {int64_t{1}, int64_t{1024}}) {
      if (batch == 1 && threads != 1) continue;  // one row: a single block, threads are moot
      const int64_t batches = m.rows / batch;
      const double rate = Throughput(batch, 1.0, [&](int64_t call) {
        const int64_t row = (call % batches) * batch;
        rq.Encode(m.values.data() + row * d, batch, codes.data(), threads);
      });
      std::printf("%-26s %5lld %6lld %8d %12.0f %10.2f %12.1f\n", dataset.c_str(),
                  static_cast<long long>(d), static_cast<long long>(batch), shown, rate, 1e6 / rate,
                  1e6 / rate * batch);
      std::fflush(stdout);
    }
  }
}

void CheckRpc(const grpc::Status& status, const std::string& what) {
  if (!status.ok()) Die(absl::StrCat(what, ": ", status.error_message()));
}

// Uploads `m` as a collection, trains a plain 3 x 256 tokenizer through the job API and times
// Encode RPCs of 1 and 1024 vectors.
void EncodeGrpc(v1::Quantd::Stub& stub, const std::string& name, const Matrix& m) {
  const int64_t d = m.dim;
  {
    grpc::ClientContext context;
    v1::CreateCollectionRequest request;
    request.set_name(name);
    request.set_dimension(static_cast<uint32_t>(d));
    request.set_metric(v1::METRIC_L2);
    v1::CreateCollectionResponse response;
    CheckRpc(stub.CreateCollection(&context, request, &response), "CreateCollection");
  }
  const std::string npy =
      (std::filesystem::temp_directory_path() / ("quantd-bench-" + name + ".npy")).string();
  if (auto s = WriteNpy(npy, m.values.data(), m.rows, d); !s.ok()) Die(s.ToString());
  auto reader = VectorReader::Open(npy);
  if (!reader.ok()) Die(reader.status().ToString());
  auto uploaded = UploadVectors(stub, name, **reader, {});
  std::filesystem::remove(npy);
  if (!uploaded.ok()) Die(uploaded.status().ToString());

  std::string job_id;
  {
    grpc::ClientContext context;
    v1::TrainTokenizerRequest request;
    request.set_collection(name);
    for (int l = 0; l < 3; ++l) request.add_codebook_sizes(static_cast<uint32_t>(kCodes));
    request.set_seed(kSeed);
    request.set_max_iterations(kIterations);
    v1::Job job;
    CheckRpc(stub.TrainTokenizer(&context, request, &job), "TrainTokenizer");
    job_id = job.id();
  }
  v1::Job job;
  const auto train_start = Clock::now();
  while (true) {
    grpc::ClientContext context;
    v1::GetJobRequest request;
    request.set_id(job_id);
    CheckRpc(stub.GetJob(&context, request, &job), "GetJob");
    if (job.state() == v1::JOB_STATE_SUCCEEDED) break;
    if (job.state() == v1::JOB_STATE_FAILED || job.state() == v1::JOB_STATE_CANCELLED) {
      Die(absl::StrCat("TrainTokenizer job ", job_id, ": ", job.error()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const double train_seconds = SecondsSince(train_start);

  for (int64_t batch : {int64_t{1}, int64_t{1024}}) {
    const int64_t batches = m.rows / batch;
    v1::EncodeRequest request;
    request.set_collection(name);
    v1::EncodeResponse response;
    std::vector<double> latencies;
    auto call = [&](int64_t i) {
      const float* row = m.values.data() + (i % batches) * batch * d;
      request.clear_vectors();
      request.mutable_vectors()->Add(row, row + batch * d);
      grpc::ClientContext context;
      const auto start = Clock::now();
      CheckRpc(stub.Encode(&context, request, &response), "Encode");
      latencies.push_back(SecondsSince(start));
      if (response.encoded_size() != batch) Die("Encode returned the wrong number of rows");
    };
    const double rate = Throughput(batch, 2.0, call);
    latencies.erase(latencies.begin());  // the warm-up call
    std::sort(latencies.begin(), latencies.end());
    const auto pct = [&](double p) {
      return latencies[std::min(latencies.size() - 1,
                                static_cast<size_t>(p * static_cast<double>(latencies.size())))];
    };
    std::printf(
        "%-26s %5lld %6lld %8s %12.0f %10.2f %12.1f %9.3f %9.3f %8zu   (collection %lld "
        "rows, train job %.1f s)\n",
        (name + " gRPC").c_str(), static_cast<long long>(d), static_cast<long long>(batch),
        "server:1", rate, 1e6 / rate, 1e6 / rate * batch, pct(0.5) * 1e3, pct(0.99) * 1e3,
        latencies.size(), static_cast<long long>(uploaded->rows), train_seconds);
    std::fflush(stdout);
  }
}

void PrintEncodeHeader() {
  std::printf("%-26s %5s %6s %8s %12s %10s %12s %9s %9s %8s\n", "path", "d", "batch", "threads",
              "vectors/s", "us/vector", "us/call", "p50 ms", "p99 ms", "requests");
}

}  // namespace
}  // namespace quantd

int main(int argc, char** argv) {
  using namespace quantd;
  Flags flags;
  bool tune_peer = true;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--quick") {
      flags.quick = true;
    } else if (arg == "--no-peer-tuning") {
      tune_peer = false;
    } else if (arg.rfind("--only=", 0) == 0) {
      for (const auto& part : absl::StrSplit(arg.substr(7), ',')) flags.only.emplace(part);
    } else {
      std::fprintf(stderr,
                   "usage: %s [--quick] [--no-peer-tuning] "
                   "[--only=quality,balance,faiss,encode,iterations]\n"
                   "  --quick           skip the 1M x 128 synthetic mixture\n"
                   "  --no-peer-tuning  leave OPENBLAS_CORETYPE / OMP_WAIT_POLICY as they are\n",
                   argv[0]);
      return 2;
    }
  }
  // The FAISS peer at its best: OpenBLAS 0.3.21 does not recognise recent AVX-512 CPUs (AMD Zen
  // 4/5) and falls back to its Haswell (AVX2) kernels, and libgomp's spinning workers compete
  // with OpenBLAS's threads on a small machine. Both are read when the libraries load, so set
  // them and re-execute once. quantd itself uses neither OpenMP nor BLAS.
  if (tune_peer && std::getenv("QUANTD_BENCH_REEXEC") == nullptr) {
    bool changed = false;
    if (std::getenv("OPENBLAS_CORETYPE") == nullptr && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl")) {
      setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
      changed = true;
    }
    if (std::getenv("OMP_WAIT_POLICY") == nullptr) {
      setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
      changed = true;
    }
    if (changed) {
      setenv("QUANTD_BENCH_REEXEC", "1", 1);
      execv("/proc/self/exe", argv);
      std::perror("execv /proc/self/exe");  // run on untuned
    }
  }
  // The heap as the quantd server sets it up (for every run in the process, FAISS's included).
  KeepFreedHeapForReuse();
  const auto run_start = Clock::now();
  const int hw = static_cast<int>(std::thread::hardware_concurrency());
  std::printf("quantd tokenizer_bench\n");
  std::printf("machine: %d hardware threads, %s\n", hw, bench::CpuModel().c_str());
  std::printf("quantd GEMM kernel: %s (run-time dispatch)\n",
              std::string(GemmKernelName(BestGemmKernel())).c_str());
  std::printf("FAISS peer BLAS: %s\n", BlasDescription().c_str());
  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  const char* wait_policy = std::getenv("OMP_WAIT_POLICY");
  std::printf(
      "FAISS peer environment: OPENBLAS_CORETYPE=%s OMP_WAIT_POLICY=%s; threads per run "
      "set with omp_set_num_threads + openblas_set_num_threads\n",
      coretype ? coretype : "(unset)", wait_policy ? wait_policy : "(unset)");
  if (coretype != nullptr && __builtin_cpu_supports("avx512f") &&
      std::string(coretype) != "SkylakeX" && std::string(coretype) != "Cooperlake") {
    std::printf(
        "WARNING: this CPU has AVX-512 but OPENBLAS_CORETYPE=%s was set by the "
        "environment, so FAISS's BLAS runs narrower kernels; run with "
        "OPENBLAS_CORETYPE=SkylakeX for the fastest peer\n",
        coretype);
  }
  std::printf(
      "settings: seed %llu, %d iterations, tolerance 0, k %lld, balanced slack 0.1, "
      "quantd k-means/RQ on all %d threads unless stated%s\n\n",
      static_cast<unsigned long long>(kSeed), kIterations, static_cast<long long>(kCodes), hw,
      flags.quick ? "; --quick: no 1M synthetic set" : "");
  std::fflush(stdout);

  const std::string sasrec = SasrecDir();
  std::fprintf(stderr, "loading data ...\n");
  const Matrix fmnist = Load(bench::FashionMnistTrainImages());
  const int64_t synthetic_rows = flags.quick ? 50000 : 1000000;
  const auto gen_start = Clock::now();
  const Matrix mixture = bench::GaussianMixture(synthetic_rows, 128, 1000, kSeed, kSeed + 1);
  std::fprintf(stderr, "  mixture %lld x 128 generated in %.1f s\n",
               static_cast<long long>(synthetic_rows), SecondsSince(gen_start));
  const std::string mixture_name = flags.quick ? "mix50k-128" : "mix1M-128";

  std::optional<RqRun> fmnist_plain, fmnist_balanced, mixture_plain, mixture_balanced;

  // 1. Quality.
  if (flags.Run("quality")) {
    std::printf(
        "== 1. Tokenization quality: RQ-KMeans plain vs balanced (slack 0.1); LETTER "
        "reference rows as shipped ==\n");
    std::printf(
        "   unique = distinct full code tuples; collide%% = 1 - unique/items; MSE = mean "
        "squared residual per component after the last level; L0 sizes over items\n");
    PrintTokenizationHeader();
    for (const char* name : {"Beauty", "Instruments"}) {
      const Matrix m = Load(sasrec + "/" + name + "-32d-sasrec.npy");
      const bench::LetterIndex letter =
          bench::ParseLetterIndex(sasrec + "/" + name + ".letter.index.json");
      if (letter.items != m.rows) {
        std::printf("note: LETTER index has %lld items, embeddings %lld rows\n",
                    static_cast<long long>(letter.items), static_cast<long long>(m.rows));
      }
      for (int levels : {4, 3}) {
        for (bool balanced : {false, true})
          PrintTokenizationRow(TrainRq(name, m, levels, balanced).row);
        TokenizationRow reference;
        reference.dataset = name;
        reference.config = absl::StrCat(letter.levels, "x", kCodes);
        reference.method = "LETTER";
        if (levels < letter.levels) {
          reference.config = absl::StrCat(levels, "x", kCodes);
          reference.method = "LETTER:a-c";  // its first three tokens only
        }
        Summarize(letter.codes.data(), letter.items, std::min<int64_t>(levels, letter.levels),
                  letter.levels, reference);
        PrintTokenizationRow(reference);
      }
    }
    fmnist_plain = TrainRq("FashionMNIST", fmnist, 3, false);
    PrintTokenizationRow(fmnist_plain->row);
    fmnist_balanced = TrainRq("FashionMNIST", fmnist, 3, true);
    PrintTokenizationRow(fmnist_balanced->row);
    std::printf("\n");
  }

  // 2. Balanced vs plain train time.
  if (flags.Run("balance")) {
    if (!fmnist_plain) fmnist_plain = TrainRq("FashionMNIST", fmnist, 3, false);
    if (!fmnist_balanced) fmnist_balanced = TrainRq("FashionMNIST", fmnist, 3, true);
    if (!flags.quick) {
      mixture_plain = TrainRq(mixture_name, mixture, 3, false);
      mixture_balanced = TrainRq(mixture_name, mixture, 3, true);
    }
    std::printf(
        "== 2. Train time, balanced vs plain RQ-KMeans 3x256 (%d threads; target "
        "balanced/plain <= 2.00) ==\n",
        hw);
    std::printf(
        "   lloyd s = time inside the 25 Lloyd iterations of all levels; rest s = "
        "init + final assignment of all n rows + residual updates\n");
    std::printf("%-14s %9s %5s %9s %9s %9s %10s %9s %9s %15s %7s %10s %10s\n", "dataset", "n", "d",
                "plain s", "lloyd s", "rest s", "balanced s", "lloyd s", "rest s", "balanced/plain",
                "target", "MSE plain", "MSE bal");
    auto row = [](const RqRun& plain, const RqRun& balanced, int64_t n, int64_t d) {
      const double ratio = *balanced.row.seconds / *plain.row.seconds;
      std::printf(
          "%-14s %9lld %5lld %9.2f %9.2f %9.2f %10.2f %9.2f %9.2f %14.2fx %7s %10.5g "
          "%10.5g\n",
          plain.row.dataset.c_str(), static_cast<long long>(n), static_cast<long long>(d),
          *plain.row.seconds, plain.lloyd_seconds, *plain.row.seconds - plain.lloyd_seconds,
          *balanced.row.seconds, balanced.lloyd_seconds,
          *balanced.row.seconds - balanced.lloyd_seconds, ratio, ratio <= 2.0 ? "met" : "MISSED",
          *plain.row.mse, *balanced.row.mse);
    };
    row(*fmnist_plain, *fmnist_balanced, fmnist.rows, fmnist.dim);
    if (mixture_plain) {
      row(*mixture_plain, *mixture_balanced, mixture.rows, mixture.dim);
      PrintTokenizationHeader();
      PrintTokenizationRow(mixture_plain->row);
      PrintTokenizationRow(mixture_balanced->row);
    }
    std::printf("\n");
    std::fflush(stdout);
  }

  // 3. k-means vs FAISS.
  if (flags.Run("faiss")) {
    std::printf(
        "== 3. First-level k-means vs faiss::Clustering (k 256, 25 iterations, random "
        "init, max 256 points/centroid, seed 42) ==\n");
    std::printf(
        "   ours s = TrainKMeans total (includes its final assignment of all n rows, "
        "which FAISS's train() does not do); ours it s = up to the end of iteration 25\n"
        "   obj = last iteration's objective over the training rows (FAISS: "
        "iteration_stats.back().obj); obj(n) = final centroids over all n rows\n"
        "   ours/FAISS = time ratio (total), it/FAISS = time ratio (iterations only), "
        "obj o/F = objective ratio; FAISS threads = OpenMP + OpenBLAS threads\n");
    PrintKMeansHeader();
    std::vector<std::pair<std::string, const Matrix*>> sets = {{"FashionMNIST", &fmnist}};
    if (!flags.quick) sets.emplace_back(mixture_name, &mixture);
    for (const auto& [name, m] : sets) {
      for (int threads : {1, 2}) PrintKMeansRow(CompareKMeans(name, *m, threads));
    }
    SetPeerThreads(hw);
    std::printf("\n");
  }

  // 4. Encode.
  if (flags.Run("encode")) {
    std::printf(
        "== 4. Encode throughput, plain 3x256 quantizer (in-process: "
        "ResidualQuantizer::Encode; gRPC: Encode RPC on loopback, one client, sequential "
        "requests; the server encodes on 1 thread) ==\n");
    PrintEncodeHeader();
    // Quantizers: reuse the ones trained above, or train on subsets.
    const Matrix mix_train = FirstRows(mixture, 100000);
    if (!mixture_plain) mixture_plain = TrainRq(mixture_name + "[:100k]", mix_train, 3, false);
    if (!fmnist_plain) fmnist_plain = TrainRq("FashionMNIST", fmnist, 3, false);
    EncodeInProcess(mixture_name + " in-process", mixture, mixture_plain->result.quantizer);
    EncodeInProcess("FashionMNIST in-process", fmnist, fmnist_plain->result.quantizer);

    const std::string data_dir = FreshDir("tokenizer");
    auto server = QuantdServer::Start(ServerOptions::Embedded(data_dir, /*sync=*/false));
    if (!server.ok()) Die(server.status().ToString());
    auto stub = v1::Quantd::NewStub(Connect((*server)->address()));
    std::fprintf(stderr, "  gRPC: uploading and training (mix 50k x 128, FashionMNIST 10k) ...\n");
    EncodeGrpc(*stub, "mix50k-128", FirstRows(mixture, 50000));
    EncodeGrpc(*stub, "fmnist10k", FirstRows(fmnist, 10000));
    (*server)->Shutdown(std::chrono::milliseconds(1000));
    std::filesystem::remove_all(data_dir);
    std::printf("\n");
  }

  // 5. Balanced vs plain at the same iteration count.
  if (flags.Run("iterations")) {
    std::vector<std::pair<std::string, const Matrix*>> sets = {{"FashionMNIST", &fmnist}};
    if (!flags.quick) sets.emplace_back(mixture_name, &mixture);
    SameIterationsSection(sets, hw);
  }

  std::printf("total run time %.1f s\n", SecondsSince(run_start));
  return 0;
}
