// Helpers shared by the benchmark programs: timing, fatal errors, data loading and the
// synthetic Gaussian mixture.
#ifndef QUANTD_BENCH_BENCH_UTIL_H_
#define QUANTD_BENCH_BENCH_UTIL_H_

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "core/residual_quantizer.h"
#include "core/semantic_id.h"
#include "io/vector_file.h"

namespace quantd::bench {

using Clock = std::chrono::steady_clock;

inline double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Calls per second x per_call of body(call number), run for at least min_seconds after one
// warm-up call (body(0)), in rounds of 16 calls.
template <typename Body>
double Throughput(int64_t per_call, double min_seconds, const Body& body) {
  body(0);
  int64_t calls = 0;
  const auto start = Clock::now();
  double elapsed = 0;
  while (elapsed < min_seconds) {
    for (int i = 0; i < 16; ++i) body(calls++);
    elapsed = SecondsSince(start);
  }
  return static_cast<double>(calls * per_call) / elapsed;
}

// An empty directory "quantd-bench-<name>" under the system temp dir (removed first if present).
std::string FreshDir(const std::string& name);

// The k exact nearest base rows of every query by squared L2 (ties by lower row), nearest first:
// nq x k row numbers. Distances by the product kernel in blocks of queries.
std::vector<int64_t> ExactNeighbors(const Matrix& base, const Matrix& queries, int64_t k,
                                    int threads = 0);

// The shared real data (sift5k/, movielens/, sasrec/): $QUANTD_TEST_DATA_DIR when set and not
// empty, else ../shared/data beside the checkout.
std::string DataDir();

// Debian's dataset-fashion-mnist training images (60000 x 784 IDX, gzip), as ReadMatrix reads
// them: QUANTD_FASHION_MNIST_DIR (a CMake cache path) + "/train-images-idx3-ubyte.gz".
std::string FashionMnistTrainImages();

// LETTER index JSON: {"0": ["<a_183>", "<b_70>", "<c_232>", "<d_6>"], ...}. codes is items x
// levels, row-major, in item id order; ids must be 0..items-1. Dies on anything else.
struct LetterIndex {
  int64_t items = 0;
  int64_t levels = 0;
  std::vector<int32_t> codes;
};
LetterIndex ParseLetterIndex(const std::string& path);

// Collisions of the first `levels` codes of n items (codes with `stride` ints between items)
// and codebook usage per level; a level's codebook size is the larger of min_codebook_size and
// its largest code + 1.
struct CodeSummary {
  CollisionStats collisions;
  std::vector<LevelUsage> usage;
};
CodeSummary SummarizeCodes(const int32_t* codes, int64_t n, int64_t levels, int64_t stride,
                           int64_t min_codebook_size);

// RQ-KMeans as the benchmarks train it: `levels` levels of k codes, plain or balanced (slack
// 0.1), k-means seed `seed`, max_iterations with tolerance 0 (every iteration runs), threads.
RqOptions RqKMeansOptions(int levels, int64_t k, bool balanced, uint64_t seed, int max_iterations,
                          int threads);

// Seconds of CPU time this process has used (all its threads).
double ProcessCpuSeconds();

// The CPU's model name from /proc/cpuinfo ("unknown" where it has none).
std::string CpuModel();

// The SIMD features among sse4_2, avx, avx2, fma, avx512f/bw/vl/vbmi/vnni that /proc/cpuinfo
// lists for the first processor, space-separated ("none" where it lists none).
std::string CpuSimdFeatures();

// Prints "<program>: <message>" to stderr and exits with status 1.
[[noreturn]] void Die(const std::string& message);

// The matrix in `path` (any format ReadMatrix knows), its first max_rows rows if >= 0; dies if
// it cannot be read.
Matrix LoadMatrix(const std::string& path, int64_t max_rows = -1);

// n rows of a mixture of `centers` Gaussians in d dimensions: centre components ~ N(0, 1) (from
// center_seed), each row = a uniformly chosen centre + N(0, 1) noise (from row_seed). The same
// seeds give the same matrix, so a query set can share a base set's centres.
Matrix GaussianMixture(int64_t n, int64_t d, int64_t centers, uint64_t center_seed,
                       uint64_t row_seed);

}  // namespace quantd::bench

#endif  // QUANTD_BENCH_BENCH_UTIL_H_
