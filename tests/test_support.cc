#include "tests/test_support.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"

namespace quantd::testing {
namespace {

std::string CheckedPath(const std::string& path, const std::string& hint) {
  if (std::filesystem::exists(path)) return path;
  ADD_FAILURE() << "test data " << path << " is missing: " << hint;
  return "";
}

}  // namespace

std::string DataFile(const std::string& relative) {
  const char* env = std::getenv("QUANTD_TEST_DATA_DIR");
  const std::string root = env != nullptr ? env : QUANTD_TEST_DATA_DIR;
  return CheckedPath(root + "/" + relative,
                     "the shared data lives in ../shared/data beside the checkout, or set "
                     "QUANTD_TEST_DATA_DIR");
}

std::string FashionMnistFile(const std::string& name) {
  return CheckedPath(std::string(QUANTD_FASHION_MNIST_DIR) + "/" + name,
                     "install Debian's dataset-fashion-mnist (deploy/install-deps.sh does)");
}

TempDir::TempDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "quantd-test-XXXXXX").string();
  char* made = mkdtemp(pattern.data());
  if (made == nullptr) ADD_FAILURE() << "mkdtemp failed";
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string HttpGet(const std::string& address, const std::string& path) {
  const size_t colon = address.rfind(':');
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
  inet_pton(AF_INET, address.substr(0, colon).c_str(), &addr.sin_addr);
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "";
  }
  const std::string request = "GET " + path + " HTTP/1.0\r\nHost: x\r\n\r\n";
  if (write(fd, request.data(), request.size()) < 0) {
    close(fd);
    return "";
  }
  std::string response;
  char buffer[4096];
  ssize_t got;
  while ((got = read(fd, buffer, sizeof(buffer))) > 0) response.append(buffer, got);
  close(fd);
  return response;
}

std::vector<std::string> Entries(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code error;
  for (std::filesystem::directory_iterator it(dir, error), end; !error && it != end;
       it.increment(error)) {
    names.push_back(it->path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<uint64_t> FirstIds(int64_t n) {
  std::vector<uint64_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[i] = static_cast<uint64_t>(i);
  return ids;
}

std::vector<float> PatternRows(int64_t n, int64_t d) {
  std::vector<float> rows(static_cast<size_t>(n * d));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < d; ++j) rows[i * d + j] = static_cast<float>((i * 31 + j * 17) % 101);
  }
  return rows;
}

}  // namespace quantd::testing
