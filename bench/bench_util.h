// Helpers shared by the benchmark programs: timing, fatal errors, data loading and the
// synthetic Gaussian mixture.
#ifndef QUANTD_BENCH_BENCH_UTIL_H_
#define QUANTD_BENCH_BENCH_UTIL_H_

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

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

// The CPU's model name from /proc/cpuinfo ("unknown" where it has none).
std::string CpuModel();

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
