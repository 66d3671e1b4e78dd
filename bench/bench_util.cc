#include "bench/bench_util.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numbers>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/kmeans.h"

namespace quantd::bench {

void Die(const std::string& message) {
  std::fprintf(stderr, "%s: %s\n", program_invocation_short_name, message.c_str());
  std::exit(1);
}

std::string FreshDir(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / ("quantd-bench-" + name);
  std::filesystem::remove_all(dir);
  return dir.string();
}

std::vector<int64_t> ExactNeighbors(const Matrix& base, const Matrix& queries, int64_t k,
                                    int threads) {
  const int64_t n = base.rows;
  const int64_t block = std::max<int64_t>(1, std::min<int64_t>(256, (int64_t{1} << 25) / n));
  std::vector<float> tile(static_cast<size_t>(block * n));
  std::vector<int64_t> truth(static_cast<size_t>(queries.rows * k));
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t q0 = 0; q0 < queries.rows; q0 += block) {
    const int64_t rows = std::min(block, queries.rows - q0);
    SquaredDistances(queries.values.data() + q0 * base.dim, rows, base.values.data(), n, base.dim,
                     tile.data(), threads);
    for (int64_t i = 0; i < rows; ++i) {
      const float* dist = tile.data() + i * n;
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + k, order.end(),
                        [dist](int64_t a, int64_t b) {
                          return dist[a] < dist[b] || (dist[a] == dist[b] && a < b);
                        });
      std::copy_n(order.begin(), k, truth.begin() + (q0 + i) * k);
    }
  }
  return truth;
}

Matrix LoadMatrix(const std::string& path, int64_t max_rows) {
  auto matrix = ReadMatrix(path, max_rows);
  if (!matrix.ok()) Die(absl::StrCat("cannot read ", path, ": ", matrix.status().ToString()));
  return std::move(*matrix);
}

Matrix GaussianMixture(int64_t n, int64_t d, int64_t centers, uint64_t center_seed,
                       uint64_t row_seed) {
  auto make_rng = [](uint64_t seed) {
    return [state = seed]() mutable {  // SplitMix64
      uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
      return z ^ (z >> 31);
    };
  };
  auto fill_normal = [](auto& next, float* out, int64_t count) {  // Box-Muller
    auto uniform = [&next] { return (static_cast<double>(next() >> 11) + 0.5) * 0x1.0p-53; };
    for (int64_t i = 0; i < count; i += 2) {
      const double r = std::sqrt(-2.0 * std::log(uniform()));
      const double theta = 2.0 * std::numbers::pi * uniform();
      out[i] = static_cast<float>(r * std::cos(theta));
      if (i + 1 < count) out[i + 1] = static_cast<float>(r * std::sin(theta));
    }
  };
  auto center_rng = make_rng(center_seed);
  std::vector<float> center_values(static_cast<size_t>(centers * d));
  fill_normal(center_rng, center_values.data(), centers * d);
  auto rng = make_rng(row_seed);
  Matrix m;
  m.rows = n;
  m.dim = d;
  m.values.resize(static_cast<size_t>(n * d));
  for (int64_t i = 0; i < n; ++i) {
    float* row = m.values.data() + i * d;
    const float* center = center_values.data() + static_cast<int64_t>(rng() % centers) * d;
    fill_normal(rng, row, d);
    for (int64_t j = 0; j < d; ++j) row[j] += center[j];
  }
  return m;
}

std::string DataDir() {
  if (const char* dir = std::getenv("QUANTD_TEST_DATA_DIR"); dir != nullptr && *dir) return dir;
  return QUANTD_DATA_DIR;
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(colon + 2);
    }
  }
  return "unknown";
}

}  // namespace quantd::bench
