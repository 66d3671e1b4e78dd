#include "bench/bench_util.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <numbers>
#include <numeric>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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

std::string FashionMnistTrainImages() {
  return std::string(QUANTD_FASHION_MNIST_DIR) + "/train-images-idx3-ubyte.gz";
}

LetterIndex ParseLetterIndex(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) Die("cannot open " + path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  size_t pos = 0;
  auto fail = [&](const std::string& what) -> void {
    Die(absl::StrCat(path, ": ", what, " at byte ", pos));
  };
  auto skip_ws = [&] {
    while (pos < text.size() && std::isspace(static_cast<unsigned char>(text[pos]))) ++pos;
  };
  auto expect = [&](char c) {
    skip_ws();
    if (pos >= text.size() || text[pos] != c) fail(std::string("expected '") + c + "'");
    ++pos;
  };
  // Consumes a ',' after optional whitespace, if there is one.
  auto comma = [&] {
    skip_ws();
    if (pos >= text.size() || text[pos] != ',') return false;
    ++pos;
    return true;
  };
  auto string_value = [&]() -> std::string {
    expect('"');
    const size_t end = text.find('"', pos);
    if (end == std::string::npos) fail("unterminated string");
    std::string s = text.substr(pos, end - pos);
    if (s.find('\\') != std::string::npos) fail("escapes are not expected");
    pos = end + 1;
    return s;
  };
  std::map<int64_t, std::vector<int32_t>> by_id;
  expect('{');
  skip_ws();
  if (pos < text.size() && text[pos] == '}') fail("empty index");
  while (true) {
    const std::string key = string_value();
    char* end = nullptr;
    const long long id = std::strtoll(key.c_str(), &end, 10);
    if (key.empty() || *end != '\0' || id < 0) fail("item id \"" + key + "\" is not an integer");
    expect(':');
    expect('[');
    std::vector<int32_t> tokens;
    while (true) {
      const std::string token = string_value();
      // "<a_183>": the letter must follow the position.
      const char letter = static_cast<char>('a' + tokens.size());
      if (token.size() < 5 || token[0] != '<' || token[1] != letter || token[2] != '_' ||
          token.back() != '>') {
        fail("bad token \"" + token + "\"");
      }
      const long code = std::strtol(token.c_str() + 3, &end, 10);
      if (*end != '>' || code < 0) fail("bad token \"" + token + "\"");
      tokens.push_back(static_cast<int32_t>(code));
      if (comma()) continue;
      expect(']');
      break;
    }
    if (!by_id.emplace(id, std::move(tokens)).second) fail("duplicate item id " + key);
    if (comma()) continue;
    expect('}');
    break;
  }
  LetterIndex index;
  index.items = static_cast<int64_t>(by_id.size());
  index.levels = static_cast<int64_t>(by_id.begin()->second.size());
  index.codes.reserve(static_cast<size_t>(index.items * index.levels));
  int64_t expected_id = 0;
  for (const auto& [id, tokens] : by_id) {
    if (id != expected_id++) Die(absl::StrCat(path, ": item ids are not 0..n-1 (", id, ")"));
    if (static_cast<int64_t>(tokens.size()) != index.levels) {
      Die(absl::StrCat(path, ": item ", id, " has ", tokens.size(), " tokens"));
    }
    index.codes.insert(index.codes.end(), tokens.begin(), tokens.end());
  }
  return index;
}

CodeSummary SummarizeCodes(const int32_t* codes, int64_t n, int64_t levels, int64_t stride,
                           int64_t min_codebook_size) {
  CodeSummary summary;
  // ComputeCollisions wants a dense n x levels matrix.
  std::vector<int32_t> dense(static_cast<size_t>(n * levels));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t l = 0; l < levels; ++l) dense[i * levels + l] = codes[i * stride + l];
  }
  summary.collisions = ComputeCollisions(dense.data(), n, levels);
  for (int64_t l = 0; l < levels; ++l) {
    int32_t max_code = 0;
    for (int64_t i = 0; i < n; ++i) max_code = std::max(max_code, codes[i * stride + l]);
    summary.usage.push_back(ComputeLevelUsage(codes + l, n, stride,
                                              std::max<int64_t>(min_codebook_size, max_code + 1)));
  }
  return summary;
}

RqOptions RqKMeansOptions(int levels, int64_t k, bool balanced, uint64_t seed, int max_iterations,
                          int threads) {
  RqOptions options;
  for (int l = 0; l < levels; ++l) {
    RqLevelOptions level;
    level.k = k;
    level.balanced = balanced;
    options.levels.push_back(level);
  }
  options.balance_slack = 0.1;
  options.kmeans.seed = seed;
  options.kmeans.max_iterations = max_iterations;
  options.kmeans.tolerance = 0;
  options.kmeans.num_threads = threads;
  return options;
}

double ProcessCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, name, family, model;
  // The first processor's fields; a virtual machine may give a bare "AMD EPYC" as the name, so
  // the family and model numbers follow it (AMD family 26 is Zen 5).
  while (std::getline(in, line) && !line.empty()) {
    const auto colon = line.find(':');
    if (colon == std::string::npos || colon + 2 > line.size()) continue;
    const std::string value = line.substr(colon + 2);
    if (line.rfind("model name", 0) == 0) name = value;
    if (line.rfind("cpu family", 0) == 0) family = value;
    if (line.rfind("model\t", 0) == 0) model = value;
  }
  if (name.empty()) return "unknown";
  if (!family.empty()) absl::StrAppend(&name, " (family ", family, ", model ", model, ")");
  return name;
}

std::string CpuSimdFeatures() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line) && line.rfind("flags", 0) != 0) {
  }
  std::istringstream flags(line.substr(std::min(line.size(), line.find(':') + 1)));
  const std::vector<std::string> wanted = {"sse4_2",   "avx",        "avx2",
                                           "fma",      "avx512f",    "avx512bw",
                                           "avx512vl", "avx512vbmi", "avx512_vnni"};
  std::vector<std::string> have;
  for (std::string flag; flags >> flag;) {
    if (std::find(wanted.begin(), wanted.end(), flag) != wanted.end()) have.push_back(flag);
  }
  return have.empty() ? "none" : absl::StrJoin(have, " ");
}

}  // namespace quantd::bench
