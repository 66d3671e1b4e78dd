// Shared helpers of the test suite: where the real data lives, temporary directories.
#ifndef QUANTD_TESTS_TEST_SUPPORT_H_
#define QUANTD_TESTS_TEST_SUPPORT_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace quantd::testing {

// Path of a file under ../shared/data (or $QUANTD_TEST_DATA_DIR). Fails the current test with a
// clear message if the file is missing, and returns "" then.
std::string DataFile(const std::string& relative);

// Path of a Fashion-MNIST IDX file (from Debian's dataset-fashion-mnist); "" and a failure if
// it is missing.
std::string FashionMnistFile(const std::string& name);

// A fresh empty directory under the system temp dir, removed with the object.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Writes `bytes` to `path`, replacing it.
void WriteFile(const std::string& path, const std::string& bytes);

// Names of the entries of directory `dir`, sorted (empty if it cannot be read).
std::vector<std::string> Entries(const std::string& dir);

// The whole HTTP/1.0 response (headers and body) to GET `path` from `address` ("host:port",
// IPv4); "" if the connection fails.
std::string HttpGet(const std::string& address, const std::string& path);

// Ids 0..n-1 and n x d rows of a fixed integer pattern (many distinct rows), for tests that
// need items but not real data.
std::vector<uint64_t> FirstIds(int64_t n);
std::vector<float> PatternRows(int64_t n, int64_t d);

// Seeded choices for the randomized tests (the same seed gives the same run).
class SeededRandom {
 public:
  explicit SeededRandom(uint64_t seed) : rng_(seed) {}

  // Uniform in [0, n); 0 for n == 0.
  uint64_t Below(uint64_t n) {
    return n == 0 ? 0 : std::uniform_int_distribution<uint64_t>(0, n - 1)(rng_);
  }
  bool OneIn(uint64_t n) { return Below(n) == 0; }
  template <typename T>
  T Pick(const std::vector<T>& values) {
    return values[Below(values.size())];
  }
  std::mt19937_64& engine() { return rng_; }

 protected:
  std::mt19937_64 rng_;
};

// The bytes of `value`, little-endian unless `big_endian` (for building test files).
template <typename T>
inline std::string Raw(T value, bool big_endian = false) {
  std::string bytes(sizeof(T), '\0');
  std::memcpy(bytes.data(), &value, sizeof(T));
  if (big_endian) std::reverse(bytes.begin(), bytes.end());
  return bytes;
}

}  // namespace quantd::testing

#endif  // QUANTD_TESTS_TEST_SUPPORT_H_
