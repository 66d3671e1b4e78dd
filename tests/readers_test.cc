// Vector-file readers: real data (texmex, NumPy, Fashion-MNIST IDX), synthetic files built byte
// by byte, and hostile files that must be rejected with a clear status and no crash.
#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "gtest/gtest.h"
#include "io/vector_file.h"
#include "tests/test_support.h"

namespace quantd {
namespace {

using ::quantd::testing::DataFile;
using ::quantd::testing::FashionMnistFile;
using ::quantd::testing::Raw;
using ::quantd::testing::TempDir;
using ::quantd::testing::WriteFile;

// ---------------------------------------------------------------------------------------------
// Byte-level builders.

template <typename T>
std::string Pack(const std::vector<T>& values, bool big_endian = false) {
  std::string bytes;
  for (const T& v : values) bytes += Raw<T>(v, big_endian);
  return bytes;
}

// "\x93NUMPY", version, and the header length (uint16 for version 1, uint32 after).
std::string NpyPrefix(int major, int minor, uint32_t header_len) {
  std::string out = "\x93NUMPY";
  out.push_back(static_cast<char>(major));
  out.push_back(static_cast<char>(minor));
  out += major == 1 ? Raw<uint16_t>(static_cast<uint16_t>(header_len)) : Raw<uint32_t>(header_len);
  return out;
}

// A NumPy header dict literal as numpy.save writes it.
std::string NpyDict(absl::string_view descr, absl::string_view shape,
                    absl::string_view fortran_order = "False") {
  return absl::StrCat("{'descr': '", descr, "', 'fortran_order': ", fortran_order,
                      ", 'shape': ", shape, ", }");
}

// A whole .npy file: the dict padded with spaces and ending in '\n' so that prefix + header is a
// multiple of 64 bytes (and the header at least `min_header_len` bytes), then `payload`.
std::string Npy(absl::string_view dict, const std::string& payload, int major = 1, int minor = 0,
                size_t min_header_len = 0) {
  const size_t prefix = major == 1 ? 10 : 12;
  size_t total = std::max(prefix + dict.size() + 1, prefix + min_header_len);
  total = (total + 63) / 64 * 64;
  std::string header(dict);
  header.append(total - prefix - dict.size() - 1, ' ');
  header.push_back('\n');
  return NpyPrefix(major, minor, static_cast<uint32_t>(header.size())) + header + payload;
}

// A texmex file: every row prefixed with its dimension as a little-endian int32.
template <typename T>
std::string Xvecs(const std::vector<std::vector<T>>& rows) {
  std::string out;
  for (const auto& row : rows) out += Raw<int32_t>(static_cast<int32_t>(row.size())) + Pack(row);
  return out;
}

// An IDX file: two zero bytes, the type byte, the dimension count, big-endian extents, payload.
std::string Idx(uint8_t type, const std::vector<uint32_t>& extents, const std::string& payload) {
  std::string out("\0\0", 2);
  out.push_back(static_cast<char>(type));
  out.push_back(static_cast<char>(extents.size()));
  for (uint32_t e : extents) out += Raw<uint32_t>(e, /*big_endian=*/true);
  return out + payload;
}

uint32_t Crc32(const std::string& data) {
  uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char c : data) {
    crc ^= c;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

// A valid gzip member holding `data` in stored (uncompressed) deflate blocks, so the test needs
// no zlib of its own.
std::string Gzip(const std::string& data) {
  std::string out("\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff", 10);
  size_t pos = 0;
  do {
    const size_t len = std::min<size_t>(data.size() - pos, 65535);
    const bool last = pos + len == data.size();
    out.push_back(last ? 1 : 0);
    out += Raw<uint16_t>(static_cast<uint16_t>(len));
    out += Raw<uint16_t>(static_cast<uint16_t>(~len));
    out.append(data, pos, len);
    pos += len;
  } while (pos < data.size());
  out += Raw<uint32_t>(Crc32(data));
  out += Raw<uint32_t>(static_cast<uint32_t>(data.size()));
  return out;
}

std::string ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// ---------------------------------------------------------------------------------------------
// Reading helpers.

// Reads every row of `path`, `chunk` rows per Read call, checking rows_read() along the way and
// that a Read at the end returns 0.
absl::StatusOr<std::vector<float>> ReadAllInChunks(const std::string& path, int64_t chunk) {
  auto reader = VectorReader::Open(path);
  if (!reader.ok()) return reader.status();
  VectorReader& r = **reader;
  std::vector<float> values;
  std::vector<float> buffer(static_cast<size_t>(chunk * r.dim()));
  while (true) {
    const int64_t before = r.rows_read();
    auto got = r.Read(chunk, buffer.data());
    if (!got.ok()) return got.status();
    if (*got == 0) break;
    EXPECT_EQ(*got, std::min(chunk, r.rows() - before));
    EXPECT_EQ(r.rows_read(), before + *got);
    values.insert(values.end(), buffer.begin(), buffer.begin() + *got * r.dim());
  }
  EXPECT_EQ(r.rows_read(), r.rows());
  auto again = r.Read(chunk, buffer.data());
  EXPECT_TRUE(again.ok() && *again == 0);
  return values;
}

// The first error of opening `path` and reading all of it (OK if there is none).
absl::Status ReadAllStatus(const std::string& path) { return ReadAllInChunks(path, 1000).status(); }

absl::Status OpenStatus(const std::string& path) { return VectorReader::Open(path).status(); }

// Checks `status` has `code` and a message naming `path` and containing `fragment` (ignoring
// case).
void ExpectError(const absl::Status& status, absl::StatusCode code, const std::string& path,
                 absl::string_view fragment = "") {
  EXPECT_EQ(status.code(), code) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), path)) << "message lacks the path: " << status;
  EXPECT_TRUE(
      absl::StrContains(absl::AsciiStrToLower(status.message()), absl::AsciiStrToLower(fragment)))
      << "message lacks '" << fragment << "': " << status;
}

void ExpectInvalid(const absl::Status& status, const std::string& path,
                   absl::string_view fragment = "") {
  ExpectError(status, absl::StatusCode::kInvalidArgument, path, fragment);
}

// Tests that write their files into a fresh temporary directory.
class TempDirTest : public ::testing::Test {
 protected:
  std::string Write(const std::string& name, const std::string& bytes) {
    const std::string path = dir_.File(name);
    WriteFile(path, bytes);
    return path;
  }
  TempDir dir_;
};

// =============================================================================================
// Real data.

TEST(RealDataTest, SiftBaseFvecs) {
  const std::string path = DataFile("sift5k/sift5k_base.fvecs");
  ASSERT_FALSE(path.empty());
  auto reader = VectorReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->format(), VectorFileFormat::kFvecs);
  EXPECT_EQ((*reader)->element_type(), ElementType::kF32);
  EXPECT_EQ((*reader)->rows(), 5000);
  EXPECT_EQ((*reader)->dim(), 128);
  EXPECT_EQ((*reader)->path(), path);

  auto m = ReadMatrix(path);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->rows, 5000);
  ASSERT_EQ(m->dim, 128);
  ASSERT_EQ(m->values.size(), 5000u * 128u);
  for (float v : m->values) {
    ASSERT_GE(v, 0.0f);
    ASSERT_EQ(v, std::floor(v));
  }
  // Rows 0 and 1 are the raw little-endian floats after each row's 4-byte dimension.
  const std::string bytes = ReadFileBytes(path);
  ASSERT_GE(bytes.size(), 2u * 516u);
  EXPECT_EQ(std::memcmp(m->values.data(), bytes.data() + 4, 512), 0);
  EXPECT_EQ(std::memcmp(m->values.data() + 128, bytes.data() + 520, 512), 0);
}

TEST(RealDataTest, SiftQueryFvecs) {
  const std::string path = DataFile("sift5k/sift5k_query.fvecs");
  ASSERT_FALSE(path.empty());
  auto m = ReadMatrix(path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->rows, 100);
  EXPECT_EQ(m->dim, 128);
  EXPECT_EQ(m->values.size(), 100u * 128u);
}

TEST(RealDataTest, SiftGroundTruthIvecs) {
  const std::string path = DataFile("sift5k/sift5k_groundtruth.ivecs");
  ASSERT_FALSE(path.empty());
  auto reader = VectorReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->format(), VectorFileFormat::kIvecs);
  EXPECT_EQ((*reader)->element_type(), ElementType::kI32);

  auto gt = ReadIntMatrix(path);
  ASSERT_TRUE(gt.ok()) << gt.status();
  ASSERT_EQ(gt->rows, 100);
  ASSERT_EQ(gt->dim, 100);
  ASSERT_EQ(gt->values.size(), 100u * 100u);
  for (int64_t q = 0; q < gt->rows; ++q) {
    std::set<int64_t> distinct;
    for (int64_t k = 0; k < gt->dim; ++k) {
      const int64_t id = gt->values[q * gt->dim + k];
      ASSERT_GE(id, 0) << "query " << q;
      ASSERT_LT(id, 5000) << "query " << q;
      distinct.insert(id);
    }
    EXPECT_EQ(distinct.size(), 100u) << "query " << q << " repeats a neighbour";
  }
}

TEST(RealDataTest, MovielensItemEmbeddingsNpy) {
  const std::string path = DataFile("movielens/ml-10m_item_embed_f32.npy");
  ASSERT_FALSE(path.empty());
  auto m = ReadMatrix(path);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->rows, 7870);
  ASSERT_EQ(m->dim, 128);
  // Row 0 is the all-zero padding row; row 1 is a real embedding.
  for (int64_t j = 0; j < 128; ++j) EXPECT_EQ(m->values[j], 0.0f) << "column " << j;
  EXPECT_TRUE(std::any_of(m->values.begin() + 128, m->values.begin() + 256,
                          [](float v) { return v != 0.0f; }));
  for (float v : m->values) ASSERT_TRUE(std::isfinite(v));
}

TEST(RealDataTest, MovielensBaseFvecsRowsAreRowsOfTheNpy) {
  const std::string base_path = DataFile("movielens/ml-10m_base.fvecs");
  const std::string npy_path = DataFile("movielens/ml-10m_item_embed_f32.npy");
  ASSERT_FALSE(base_path.empty());
  ASSERT_FALSE(npy_path.empty());
  auto base = ReadMatrix(base_path);
  ASSERT_TRUE(base.ok()) << base.status();
  // The data README says 7670 rows, but the file holds 3957204 bytes = 7669 rows of 516 bytes
  // (7669 base + 200 query + 1 padding row = the 7870 rows of the .npy).
  EXPECT_EQ(base->rows, 7669);
  EXPECT_EQ(base->dim, 128);

  auto npy = ReadMatrix(npy_path);
  ASSERT_TRUE(npy.ok()) << npy.status();
  auto row_bytes = [](const Matrix& m, int64_t i) {
    return std::string(reinterpret_cast<const char*>(m.values.data() + i * m.dim),
                       static_cast<size_t>(m.dim) * sizeof(float));
  };
  std::set<std::string> npy_rows;
  for (int64_t i = 0; i < npy->rows; ++i) npy_rows.insert(row_bytes(*npy, i));
  for (int64_t i = 0; i < base->rows; ++i) {
    ASSERT_TRUE(npy_rows.count(row_bytes(*base, i)) == 1) << "base row " << i;
  }
}

TEST(RealDataTest, SasrecNpyThroughOpen) {
  const std::string path = DataFile("sasrec/Beauty-32d-sasrec.npy");
  ASSERT_FALSE(path.empty());
  auto reader = VectorReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  VectorReader& r = **reader;
  EXPECT_EQ(r.format(), VectorFileFormat::kNpy);
  EXPECT_EQ(r.element_type(), ElementType::kF32);
  EXPECT_EQ(r.rows(), 12101);
  EXPECT_EQ(r.dim(), 32);
  EXPECT_EQ(r.rows_read(), 0);

  std::vector<float> first(10 * 32);
  auto got = r.Read(10, first.data());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, 10);
  EXPECT_EQ(r.rows_read(), 10);
  // The payload follows a 128-byte header.
  const std::string bytes = ReadFileBytes(path);
  ASSERT_EQ(bytes.size(), 128u + 12101u * 32u * 4u);
  EXPECT_EQ(std::memcmp(first.data(), bytes.data() + 128, first.size() * sizeof(float)), 0);

  auto ints = r.ReadIntegers(1, std::vector<int64_t>(32).data());
  EXPECT_EQ(ints.status().code(), absl::StatusCode::kFailedPrecondition) << ints.status();
}

TEST(RealDataTest, ChunkedReadsMatchOneRead) {
  for (const char* relative : {"sasrec/Beauty-32d-sasrec.npy", "sift5k/sift5k_base.fvecs",
                               "sift5k/sift5k_groundtruth.ivecs"}) {
    SCOPED_TRACE(relative);
    const std::string path = DataFile(relative);
    ASSERT_FALSE(path.empty());
    auto whole = ReadMatrix(path);
    ASSERT_TRUE(whole.ok()) << whole.status();
    for (int64_t chunk : {1, 7, 333, 100000}) {
      SCOPED_TRACE(chunk);
      auto chunked = ReadAllInChunks(path, chunk);
      ASSERT_TRUE(chunked.ok()) << chunked.status();
      ASSERT_EQ(chunked->size(), whole->values.size());
      EXPECT_EQ(std::memcmp(chunked->data(), whole->values.data(), chunked->size() * 4), 0);
    }
  }
}

TEST(RealDataTest, ReadMatrixMaxRows) {
  const std::string path = DataFile("sift5k/sift5k_base.fvecs");
  ASSERT_FALSE(path.empty());
  auto whole = ReadMatrix(path);
  auto head = ReadMatrix(path, 3);
  ASSERT_TRUE(whole.ok()) << whole.status();
  ASSERT_TRUE(head.ok()) << head.status();
  EXPECT_EQ(head->rows, 3);
  EXPECT_EQ(head->dim, 128);
  ASSERT_EQ(head->values.size(), 3u * 128u);
  EXPECT_TRUE(std::equal(head->values.begin(), head->values.end(), whole->values.begin()));
}

// =============================================================================================
// Fashion-MNIST (IDX, gzip-compressed).

TEST(FashionMnistTest, TrainImagesGzMatchPlainCopy) {
  const std::string gz_path = FashionMnistFile("train-images-idx3-ubyte.gz");
  ASSERT_FALSE(gz_path.empty());
  auto gz = VectorReader::Open(gz_path);
  ASSERT_TRUE(gz.ok()) << gz.status();
  EXPECT_EQ((*gz)->format(), VectorFileFormat::kIdx);
  EXPECT_EQ((*gz)->element_type(), ElementType::kU8);
  ASSERT_EQ((*gz)->rows(), 60000);
  ASSERT_EQ((*gz)->dim(), 784);

  // Decompress through the reader into a plain IDX copy.
  std::string plain = Idx(0x08, {60000, 28, 28}, "");
  std::vector<int64_t> buffer(1000 * 784);
  int64_t nonzero = 0;
  while (true) {
    auto got = (*gz)->ReadIntegers(1000, buffer.data());
    ASSERT_TRUE(got.ok()) << got.status();
    if (*got == 0) break;
    for (int64_t i = 0; i < *got * 784; ++i) {
      ASSERT_GE(buffer[i], 0);
      ASSERT_LE(buffer[i], 255);
      nonzero += buffer[i] != 0;
      plain.push_back(static_cast<char>(buffer[i]));
    }
  }
  EXPECT_EQ((*gz)->rows_read(), 60000);
  EXPECT_GT(nonzero, 0);
  ASSERT_EQ(plain.size(), 16u + 60000u * 784u);
  TempDir dir;
  const std::string plain_path = dir.File("train-images-idx3-ubyte");
  WriteFile(plain_path, plain);

  // Read both again in chunks of 7 rows and compare.
  auto a = VectorReader::Open(gz_path);
  auto b = VectorReader::Open(plain_path);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ((*b)->format(), VectorFileFormat::kIdx);
  EXPECT_EQ((*b)->element_type(), ElementType::kU8);
  ASSERT_EQ((*b)->rows(), 60000);
  ASSERT_EQ((*b)->dim(), 784);
  std::vector<float> va(7 * 784), vb(7 * 784);
  int64_t rows = 0;
  while (true) {
    auto got_a = (*a)->Read(7, va.data());
    auto got_b = (*b)->Read(7, vb.data());
    ASSERT_TRUE(got_a.ok()) << got_a.status();
    ASSERT_TRUE(got_b.ok()) << got_b.status();
    ASSERT_EQ(*got_a, *got_b);
    if (*got_a == 0) break;
    ASSERT_EQ(std::memcmp(va.data(), vb.data(), *got_a * 784 * sizeof(float)), 0)
        << "rows from " << rows;
    for (int64_t i = 0; i < *got_a * 784; ++i) {
      ASSERT_EQ(va[i], static_cast<float>(static_cast<unsigned char>(plain[16 + rows * 784 + i])));
    }
    rows += *got_a;
  }
  EXPECT_EQ(rows, 60000);
}

TEST(FashionMnistTest, TestLabelsGz) {
  const std::string path = FashionMnistFile("t10k-labels-idx1-ubyte.gz");
  ASSERT_FALSE(path.empty());
  auto labels = ReadIntMatrix(path);
  ASSERT_TRUE(labels.ok()) << labels.status();
  ASSERT_EQ(labels->rows, 10000);
  ASSERT_EQ(labels->dim, 1);
  std::vector<int> per_class(10, 0);
  for (int64_t label : labels->values) {
    ASSERT_GE(label, 0);
    ASSERT_LE(label, 9);
    ++per_class[static_cast<size_t>(label)];
  }
  // The Fashion-MNIST test set holds 1000 images of each class.
  for (int c = 0; c < 10; ++c) EXPECT_EQ(per_class[c], 1000) << "class " << c;

  auto chunked = ReadAllInChunks(path, 7);
  ASSERT_TRUE(chunked.ok()) << chunked.status();
  ASSERT_EQ(chunked->size(), 10000u);
  for (size_t i = 0; i < chunked->size(); ++i) {
    ASSERT_EQ((*chunked)[i], static_cast<float>(labels->values[i])) << "row " << i;
  }
}

TEST(FashionMnistTest, GzipCutInTheMiddleFailsToRead) {
  const std::string source = FashionMnistFile("t10k-images-idx3-ubyte.gz");
  ASSERT_FALSE(source.empty());
  const std::string bytes = ReadFileBytes(source);
  ASSERT_GT(bytes.size(), 200000u);
  TempDir dir;
  const std::string path = dir.File("cut-images-idx3-ubyte.gz");
  WriteFile(path, bytes.substr(0, bytes.size() / 2));
  // The header is intact, so the file opens; the data ends early.
  auto reader = VectorReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->rows(), 10000);
  EXPECT_EQ((*reader)->dim(), 784);
  ExpectInvalid(ReadAllStatus(path), path, "gzip");
}

// =============================================================================================
// Synthetic .npy files.

using NpyTest = TempDirTest;

TEST_F(NpyTest, Float32) {
  const std::vector<float> values = {1.5f, -2.25f, 0.0f, 3e-7f, -1e30f, 42.0f};
  const std::string path = Write("f4.npy", Npy(NpyDict("<f4", "(3, 2)"), Pack(values)));
  auto reader = VectorReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->format(), VectorFileFormat::kNpy);
  EXPECT_EQ((*reader)->element_type(), ElementType::kF32);
  EXPECT_EQ((*reader)->rows(), 3);
  EXPECT_EQ((*reader)->dim(), 2);
  auto m = ReadMatrix(path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->values, values);
}

TEST_F(NpyTest, Float64ConvertsToFloat32) {
  const std::vector<double> values = {0.1, -2.5, 1e-3, 123456789.0};
  const std::string path = Write("f8.npy", Npy(NpyDict("<f8", "(2, 2)"), Pack(values)));
  auto reader = VectorReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->element_type(), ElementType::kF64);
  auto m = ReadMatrix(path);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->values.size(), 4u);
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(m->values[i], static_cast<float>(values[i])) << i;
  }
}

TEST_F(NpyTest, BigEndianFloat32) {
  const std::vector<float> values = {1.0f, -0.5f, 3.14159f, 65504.0f};
  const std::string path =
      Write("be.npy", Npy(NpyDict(">f4", "(1, 4)"), Pack(values, /*big_endian=*/true)));
  auto m = ReadMatrix(path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->values, values);
}

TEST_F(NpyTest, BigEndianInt32) {
  const std::vector<int32_t> values = {-1, std::numeric_limits<int32_t>::max(),
                                       std::numeric_limits<int32_t>::min(), 7};
  const std::string path =
      Write("be.npy", Npy(NpyDict(">i4", "(2, 2)"), Pack(values, /*big_endian=*/true)));
  auto ints = ReadIntMatrix(path);
  ASSERT_TRUE(ints.ok()) << ints.status();
  EXPECT_EQ(ints->values, std::vector<int64_t>(values.begin(), values.end()));
  auto m = ReadMatrix(path);
  ASSERT_TRUE(m.ok()) << m.status();
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(m->values[i], static_cast<float>(values[i])) << i;
  }
}

TEST_F(NpyTest, Uint8) {
  const std::vector<uint8_t> values = {0, 1, 128, 255};
  const std::string path = Write("u1.npy", Npy(NpyDict("|u1", "(4, 1)"), Pack(values)));
  auto reader = VectorReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->element_type(), ElementType::kU8);
  auto m = ReadMatrix(path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->values, (std::vector<float>{0.0f, 1.0f, 128.0f, 255.0f}));
  auto ints = ReadIntMatrix(path);
  ASSERT_TRUE(ints.ok()) << ints.status();
  EXPECT_EQ(ints->values, (std::vector<int64_t>{0, 1, 128, 255}));
}

TEST_F(NpyTest, Int16) {
  const std::vector<int16_t> values = {-32768, 32767, -1, 0};
  const std::string path = Write("i2.npy", Npy(NpyDict("<i2", "(2, 2)"), Pack(values)));
  auto m = ReadMatrix(path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->values, (std::vector<float>{-32768.0f, 32767.0f, -1.0f, 0.0f}));
  auto ints = ReadIntMatrix(path);
  ASSERT_TRUE(ints.ok()) << ints.status();
  EXPECT_EQ(ints->values, (std::vector<int64_t>{-32768, 32767, -1, 0}));
}

TEST_F(NpyTest, Int64ReadIntegersIsExact) {
  const int64_t big = (int64_t{1} << 53) + 1;  // not representable as float or double
  const std::vector<int64_t> values = {big, -(int64_t{1} << 62),
                                       std::numeric_limits<int64_t>::max(), -7};
  const std::string path = Write("i8.npy", Npy(NpyDict("<i8", "(4,)"), Pack(values)));
  auto reader = VectorReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->element_type(), ElementType::kI64);
  std::vector<int64_t> out(4);
  auto got = (*reader)->ReadIntegers(4, out.data());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, 4);
  EXPECT_EQ(out, values);

  auto m = ReadMatrix(path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->values[0], static_cast<float>(big));
  EXPECT_EQ(m->values[3], -7.0f);
}

TEST_F(NpyTest, Uint64) {
  const std::vector<uint64_t> values = {0, 12345, std::numeric_limits<uint64_t>::max()};
  const std::string path = Write("u8.npy", Npy(NpyDict("<u8", "(3, 1)"), Pack(values)));
  auto reader = VectorReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->element_type(), ElementType::kU64);
  auto m = ReadMatrix(path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->values, (std::vector<float>{0.0f, 12345.0f, 18446744073709551615.0f}));
  auto ints = ReadIntMatrix(path);
  ASSERT_TRUE(ints.ok()) << ints.status();
  EXPECT_EQ(ints->values[1], 12345);
}

TEST_F(NpyTest, FormatVersions) {
  const std::vector<float> values = {1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f};
  for (int major : {1, 2, 3}) {
    SCOPED_TRACE(major);
    const std::string path =
        Write(absl::StrCat("v", major, ".npy"), Npy(NpyDict("<f4", "(2, 3)"), Pack(values), major));
    auto m = ReadMatrix(path);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->rows, 2);
    EXPECT_EQ(m->dim, 3);
    EXPECT_EQ(m->values, values);
  }
}

TEST_F(NpyTest, LongVersion1HeaderUsesBothLengthBytes) {
  const std::vector<float> values = {1.0f, 2.0f};
  const std::string path =
      Write("long.npy", Npy(NpyDict("<f4", "(1, 2)"), Pack(values), 1, 0, /*min_header_len=*/1000));
  auto m = ReadMatrix(path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->values, values);
}

TEST_F(NpyTest, KeysInAnyOrder) {
  const std::vector<float> values = {1.0f, 2.0f, 3.0f, 4.0f};
  const std::string path = Write(
      "order.npy", Npy("{'shape': (2, 2), 'fortran_order': False, 'descr': '<f4'}", Pack(values)));
  auto m = ReadMatrix(path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->rows, 2);
  EXPECT_EQ(m->dim, 2);
  EXPECT_EQ(m->values, values);
}

TEST_F(NpyTest, ThreeDimensionalShapeFlattensToRows) {
  std::vector<float> values(4 * 2 * 3);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i);
  const std::string path = Write("3d.npy", Npy(NpyDict("<f4", "(4, 2, 3)"), Pack(values)));
  auto m = ReadMatrix(path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->rows, 4);
  EXPECT_EQ(m->dim, 6);
  EXPECT_EQ(m->values, values);
}

TEST_F(NpyTest, OneDimensionalShapeGivesDimOne) {
  const std::vector<float> values = {5.0f, 6.0f, 7.0f, 8.0f, 9.0f};
  const std::string path = Write("1d.npy", Npy(NpyDict("<f4", "(5,)"), Pack(values)));
  auto m = ReadMatrix(path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->rows, 5);
  EXPECT_EQ(m->dim, 1);
  EXPECT_EQ(m->values, values);
}

TEST_F(NpyTest, ZeroRows) {
  const std::string path = Write("empty.npy", Npy(NpyDict("<f4", "(0, 3)"), ""));
  auto reader = VectorReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->rows(), 0);
  EXPECT_EQ((*reader)->dim(), 3);
  float out[3];
  auto got = (*reader)->Read(5, out);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, 0);
}

TEST_F(NpyTest, ChunkedReadsOfConvertedType) {
  std::vector<int16_t> values(23 * 3);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<int16_t>(1000 - 37 * i);
  const std::string path = Write("i2.npy", Npy(NpyDict("<i2", "(23, 3)"), Pack(values)));
  auto chunked = ReadAllInChunks(path, 7);
  ASSERT_TRUE(chunked.ok()) << chunked.status();
  ASSERT_EQ(chunked->size(), values.size());
  for (size_t i = 0; i < values.size(); ++i) EXPECT_EQ((*chunked)[i], values[i]) << i;
}

TEST_F(NpyTest, ReadIntegersOnFloatFileIsFailedPrecondition) {
  const std::string path =
      Write("f4.npy", Npy(NpyDict("<f4", "(1, 2)"), Pack(std::vector<float>{1.0f, 2.0f})));
  auto reader = VectorReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::vector<int64_t> out(2);
  ExpectError((*reader)->ReadIntegers(1, out.data()).status(),
              absl::StatusCode::kFailedPrecondition, path);
  ExpectError(ReadIntMatrix(path).status(), absl::StatusCode::kFailedPrecondition, path);
}

TEST_F(NpyTest, Gzipped) {
  const std::vector<float> values = {1.0f, -2.0f, 3.5f, 4.0f, 5.0f, 6.25f};
  const std::string path = Write("f4.npy.gz", Gzip(Npy(NpyDict("<f4", "(3, 2)"), Pack(values))));
  auto reader = VectorReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->format(), VectorFileFormat::kNpy);
  EXPECT_EQ((*reader)->rows(), 3);
  EXPECT_EQ((*reader)->dim(), 2);
  auto chunked = ReadAllInChunks(path, 2);
  ASSERT_TRUE(chunked.ok()) << chunked.status();
  EXPECT_EQ(*chunked, values);
}

TEST_F(NpyTest, GzippedPayloadTooShortFailsToRead) {
  const std::string path =
      Write("short.npy.gz", Gzip(Npy(NpyDict("<f4", "(3, 2)"), Pack(std::vector<float>{1, 2, 3}))));
  ExpectInvalid(ReadAllStatus(path), path, "truncated");
}

// =============================================================================================
// Hostile .npy files: rejected when opened, with the path and the problem in the message.

using NpyRejectsTest = TempDirTest;

TEST_F(NpyRejectsTest, FortranOrder) {
  const std::string path =
      Write("f.npy", Npy(NpyDict("<f4", "(2, 2)", "True"), Pack(std::vector<float>{1, 2, 3, 4})));
  ExpectInvalid(OpenStatus(path), path, "Fortran");
}

TEST_F(NpyRejectsTest, ObjectDtype) {
  const std::string path = Write("o.npy", Npy(NpyDict("|O", "(2,)"), std::string(16, '\0')));
  ExpectInvalid(OpenStatus(path), path, "object");
}

TEST_F(NpyRejectsTest, UnsupportedDtypes) {
  for (const char* descr : {"<c8", "<f2", "<U4", "<i3", "<f"}) {
    SCOPED_TRACE(descr);
    const std::string path = Write("d.npy", Npy(NpyDict(descr, "(1, 1)"), std::string(8, '\0')));
    ExpectInvalid(OpenStatus(path), path, descr);
  }
}

TEST_F(NpyRejectsTest, BadMagic) {
  std::string bytes = Npy(NpyDict("<f4", "(1, 1)"), Pack(std::vector<float>{1}));
  bytes[0] = '\x92';
  const std::string path = Write("x.npy", bytes);
  ExpectInvalid(OpenStatus(path), path, "magic");
}

TEST_F(NpyRejectsTest, EmptyAndTinyFiles) {
  for (const std::string& bytes : {std::string(), std::string("\x93NUM"), std::string("\x93NUMPY"),
                                   std::string("\x93NUMPY\x01\x00\x40", 9)}) {
    SCOPED_TRACE(bytes.size());
    const std::string path = Write("tiny.npy", bytes);
    ExpectInvalid(OpenStatus(path), path);
  }
}

TEST_F(NpyRejectsTest, Version4) {
  const std::string path =
      Write("v4.npy", Npy(NpyDict("<f4", "(1, 1)"), Pack(std::vector<float>{1}), 4));
  ExpectInvalid(OpenStatus(path), path, "version");
}

TEST_F(NpyRejectsTest, HeaderLongerThanFile) {
  const std::string path = Write("h.npy", NpyPrefix(1, 0, 1000) + NpyDict("<f4", "(1, 1)"));
  ExpectInvalid(OpenStatus(path), path, "truncated");
}

TEST_F(NpyRejectsTest, HugeHeaderLengthIsRejectedBeforeAllocating) {
  const std::string path =
      Write("h.npy", NpyPrefix(2, 0, uint32_t{1} << 31) + NpyDict("<f4", "(1, 1)") + "\n");
  ExpectInvalid(OpenStatus(path), path, "header length");
}

TEST_F(NpyRejectsTest, TruncatedPayload) {
  const std::string path =
      Write("t.npy", Npy(NpyDict("<f4", "(3, 2)"), Pack(std::vector<float>{1, 2, 3, 4, 5})));
  ExpectInvalid(OpenStatus(path), path, "truncated");
}

TEST_F(NpyRejectsTest, TrailingBytes) {
  const std::string path =
      Write("t.npy", Npy(NpyDict("<f4", "(2, 2)"), Pack(std::vector<float>{1, 2, 3, 4}) + "extra"));
  ExpectInvalid(OpenStatus(path), path, "unexpected bytes");
}

TEST_F(NpyRejectsTest, BadShapeExtents) {
  for (const char* shape : {"(-3, 2)", "(3, -2)", "(3, two)", "(3.5, 2)", "(, 2)", "(3,, 2)"}) {
    SCOPED_TRACE(shape);
    const std::string path = Write("s.npy", Npy(NpyDict("<f4", shape), std::string(24, '\0')));
    ExpectInvalid(OpenStatus(path), path, "shape");
  }
}

TEST_F(NpyRejectsTest, ShapeProductOverflows) {
  const std::string path =
      Write("o.npy", Npy(NpyDict("<f4", "(4611686018427387904, 4)"), std::string(64, '\0')));
  ExpectInvalid(OpenStatus(path), path, "overflow");
}

TEST_F(NpyRejectsTest, RowSizeOverflows) {
  const std::string path =
      Write("o.npy", Npy(NpyDict("<f4", "(1, 4611686018427387904, 4611686018427387904)"), ""));
  ExpectInvalid(OpenStatus(path), path, "exceeds");
}

TEST_F(NpyRejectsTest, HugeRowCountAgainstSmallFile) {
  const std::string path =
      Write("o.npy", Npy(NpyDict("<f4", "(1099511627776, 128)"), std::string(64, '\0')));
  ExpectInvalid(OpenStatus(path), path, "truncated");
}

TEST_F(NpyRejectsTest, ScalarShape) {
  const std::string path = Write("s.npy", Npy(NpyDict("<f4", "()"), Pack(std::vector<float>{1})));
  ExpectInvalid(OpenStatus(path), path, "scalar");
}

TEST_F(NpyRejectsTest, MissingShapeKey) {
  const std::string path = Write(
      "s.npy", Npy("{'descr': '<f4', 'fortran_order': False, }", Pack(std::vector<float>{1})));
  ExpectInvalid(OpenStatus(path), path, "shape");
}

// =============================================================================================
// texmex .fvecs / .bvecs / .ivecs.

using XvecsTest = TempDirTest;

TEST_F(XvecsTest, GoodFvecsReadInChunks) {
  std::vector<std::vector<float>> rows;
  std::vector<float> flat;
  for (int i = 0; i < 10; ++i) {
    rows.push_back({static_cast<float>(i), -0.5f * i, 1e6f + i});
    flat.insert(flat.end(), rows.back().begin(), rows.back().end());
  }
  const std::string path = Write("a.fvecs", Xvecs(rows));
  auto reader = VectorReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->format(), VectorFileFormat::kFvecs);
  EXPECT_EQ((*reader)->rows(), 10);
  EXPECT_EQ((*reader)->dim(), 3);
  for (int64_t chunk : {1, 3, 7, 10, 11}) {
    SCOPED_TRACE(chunk);
    auto values = ReadAllInChunks(path, chunk);
    ASSERT_TRUE(values.ok()) << values.status();
    EXPECT_EQ(*values, flat);
  }
}

TEST_F(XvecsTest, ExtensionIsCaseInsensitive) {
  const std::string path = Write("A.FVECS", Xvecs<float>({{1.0f, 2.0f}}));
  auto m = ReadMatrix(path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->values, (std::vector<float>{1.0f, 2.0f}));
}

TEST_F(XvecsTest, GoodBvecs) {
  std::vector<std::vector<uint8_t>> rows(2, std::vector<uint8_t>(128));
  for (int i = 0; i < 256; ++i) rows[i / 128][i % 128] = static_cast<uint8_t>(i);
  const std::string path = Write("b.bvecs", Xvecs(rows));
  auto reader = VectorReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->format(), VectorFileFormat::kBvecs);
  EXPECT_EQ((*reader)->element_type(), ElementType::kU8);
  auto m = ReadMatrix(path);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->rows, 2);
  ASSERT_EQ(m->dim, 128);
  for (int i = 0; i < 256; ++i) EXPECT_EQ(m->values[i], static_cast<float>(i));
  auto ints = ReadIntMatrix(path);
  ASSERT_TRUE(ints.ok()) << ints.status();
  for (int i = 0; i < 256; ++i) EXPECT_EQ(ints->values[i], i);
}

TEST_F(XvecsTest, GoodIvecs) {
  const std::vector<std::vector<int32_t>> rows = {
      {0, -1, 16777217},
      {std::numeric_limits<int32_t>::max(), std::numeric_limits<int32_t>::min(), 5}};
  const std::string path = Write("c.ivecs", Xvecs(rows));
  auto reader = VectorReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->format(), VectorFileFormat::kIvecs);
  EXPECT_EQ((*reader)->element_type(), ElementType::kI32);
  auto ints = ReadIntMatrix(path);
  ASSERT_TRUE(ints.ok()) << ints.status();
  EXPECT_EQ(ints->rows, 2);
  EXPECT_EQ(ints->dim, 3);
  EXPECT_EQ(ints->values,
            (std::vector<int64_t>{0, -1, 16777217, std::numeric_limits<int32_t>::max(),
                                  std::numeric_limits<int32_t>::min(), 5}));
  auto m = ReadMatrix(path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->values[1], -1.0f);
  EXPECT_EQ(m->values[2], 16777216.0f);  // rounded to float
}

TEST_F(XvecsTest, EmptyFile) {
  const std::string path = Write("e.fvecs", "");
  ExpectInvalid(OpenStatus(path), path, "truncated");
}

TEST_F(XvecsTest, SizeNotAMultipleOfTheRowSize) {
  std::string bytes = Xvecs<float>({{1, 2, 3}, {4, 5, 6}});
  bytes.pop_back();
  const std::string path = Write("n.fvecs", bytes);
  ExpectInvalid(OpenStatus(path), path, "not a whole number");
}

TEST_F(XvecsTest, SecondRowWithAnotherDimension) {
  // Row 1 claims dimension 2 and is followed by 3 values' worth of bytes, so the file size is
  // still a whole number of rows; the mismatch shows when row 1 is read.
  std::string bytes = Xvecs<float>({{1, 2, 3}, {4, 5, 6}, {7, 8, 9}});
  const std::string bad_prefix = Raw<int32_t>(2);
  bytes.replace(16, 4, bad_prefix);
  const std::string path = Write("r.fvecs", bytes);
  auto reader = VectorReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  float out[3 * 3];
  auto first = (*reader)->Read(1, out);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(*first, 1);
  ExpectInvalid((*reader)->Read(2, out).status(), path, "row 1");
  ExpectInvalid(ReadMatrix(path).status(), path, "row 1");
}

TEST_F(XvecsTest, BadFirstDimension) {
  for (int32_t d : {0, -1, std::numeric_limits<int32_t>::min(), int32_t{1} << 30}) {
    SCOPED_TRACE(d);
    const std::string path = Write("d.fvecs", Raw<int32_t>(d) + std::string(64, '\0'));
    ExpectInvalid(OpenStatus(path), path, "dimension");
  }
}

// =============================================================================================
// IDX (plain and gzip'd).

using IdxTest = TempDirTest;

TEST_F(IdxTest, GoodUint8Images) {
  std::string payload;
  for (int i = 0; i < 2 * 2 * 3; ++i) payload.push_back(static_cast<char>(i * 20));
  const std::string path = Write("img-idx3-ubyte", Idx(0x08, {2, 2, 3}, payload));
  auto reader = VectorReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->format(), VectorFileFormat::kIdx);
  EXPECT_EQ((*reader)->element_type(), ElementType::kU8);
  EXPECT_EQ((*reader)->rows(), 2);
  EXPECT_EQ((*reader)->dim(), 6);
  auto m = ReadMatrix(path);
  ASSERT_TRUE(m.ok()) << m.status();
  for (int i = 0; i < 12; ++i) EXPECT_EQ(m->values[i], static_cast<float>(i * 20)) << i;
}

TEST_F(IdxTest, BigEndianWiderTypes) {
  const std::vector<int16_t> i16 = {-300, 300};
  const std::vector<int32_t> i32 = {-70000, 70000};
  const std::vector<float> f32 = {-1.25f, 2.5f};
  const std::vector<double> f64 = {0.1, -1e10};
  struct Case {
    uint8_t type;
    std::string payload;
    ElementType element;
    std::vector<float> expected;
  };
  const std::vector<Case> cases = {
      {0x0B, Pack(i16, true), ElementType::kI16, {-300.0f, 300.0f}},
      {0x0C, Pack(i32, true), ElementType::kI32, {-70000.0f, 70000.0f}},
      {0x0D, Pack(f32, true), ElementType::kF32, f32},
      {0x0E, Pack(f64, true), ElementType::kF64, {static_cast<float>(0.1), -1e10f}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(static_cast<int>(c.type));
    const std::string path = Write("wide.idx", Idx(c.type, {2, 1}, c.payload));
    auto reader = VectorReader::Open(path);
    ASSERT_TRUE(reader.ok()) << reader.status();
    EXPECT_EQ((*reader)->element_type(), c.element);
    auto m = ReadMatrix(path);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->values, c.expected);
  }
}

TEST_F(IdxTest, GzippedMatchesPlain) {
  std::string payload;
  for (int i = 0; i < 9 * 4; ++i) payload.push_back(static_cast<char>(255 - i));
  const std::string bytes = Idx(0x08, {9, 2, 2}, payload);
  const std::string plain = Write("p-idx3-ubyte", bytes);
  const std::string gz = Write("p-idx3-ubyte.gz", Gzip(bytes));
  auto reader = VectorReader::Open(gz);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->format(), VectorFileFormat::kIdx);
  auto a = ReadAllInChunks(plain, 4);
  auto b = ReadAllInChunks(gz, 4);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(*a, *b);
  ASSERT_EQ(b->size(), 36u);
  EXPECT_EQ((*b)[35], 220.0f);
}

TEST_F(IdxTest, UnknownTypeByte) {
  const std::string path = Write("t.idx", Idx(0x07, {2, 2}, std::string(4, '\0')));
  ExpectInvalid(OpenStatus(path), path, "type");
}

TEST_F(IdxTest, ZeroDimensions) {
  const std::string path = Write("z.idx", Idx(0x08, {}, std::string(4, '\0')));
  ExpectInvalid(OpenStatus(path), path, "dimension");
}

TEST_F(IdxTest, TruncatedData) {
  const std::string path = Write("t.idx", Idx(0x08, {10, 28, 28}, std::string(100, '\x01')));
  ExpectInvalid(OpenStatus(path), path, "truncated");
}

TEST_F(IdxTest, TruncatedHeader) {
  std::string bytes = Idx(0x08, {10, 28, 28}, "");
  bytes.resize(9);
  const std::string path = Write("t.idx", bytes);
  ExpectInvalid(OpenStatus(path), path, "truncated");
}

TEST_F(IdxTest, GzippedTruncatedData) {
  const std::string path =
      Write("t.idx.gz", Gzip(Idx(0x08, {10, 28, 28}, std::string(100, '\x01'))));
  ExpectInvalid(ReadAllStatus(path), path, "truncated");
}

// Found by fuzz_readers_test: a 132-byte gzip file whose IDX header promised one row of 2^24
// doubles made ReadMatrix size a 64 MiB result and a 128 MiB scratch row before the stream ran
// out. Deflate expands at most 1032-fold, so such a header is refused when the file is opened.
TEST_F(IdxTest, GzippedHeaderPromisingMoreThanTheStreamCanHoldIsRefusedUpFront) {
  const std::string path =
      Write("row.idx.gz", Gzip(Idx(0x0E, {1, 1u << 24}, std::string(48, '\x01'))));
  rusage before{};
  getrusage(RUSAGE_SELF, &before);
  ExpectInvalid(OpenStatus(path), path, "truncated");
  ExpectInvalid(ReadMatrix(path).status(), path, "truncated");
  ExpectInvalid(ReadIntMatrix(path).status(), path, "truncated");
  rusage after{};
  getrusage(RUSAGE_SELF, &after);
  EXPECT_LT(after.ru_maxrss - before.ru_maxrss, 16 << 10) << "KiB of peak RSS growth";
  // The same promise from a .npy inside gzip.
  const std::string npy =
      Write("row.npy.gz", Gzip(Npy(NpyDict("<f8", "(1, 16777216)"), std::string(48, '\x01'))));
  ExpectInvalid(OpenStatus(npy), npy, "truncated");
}

TEST_F(IdxTest, GzipOfGarbage) {
  const std::string path = Write("g.gz", Gzip("this is neither a NumPy file nor IDX data"));
  ExpectInvalid(OpenStatus(path), path, "neither");
}

TEST_F(IdxTest, GzipOfTooLittle) {
  const std::string path = Write("g.gz", Gzip("ab"));
  ExpectInvalid(OpenStatus(path), path, "gzip");
}

TEST_F(IdxTest, GzipMagicFollowedByGarbage) {
  const std::string path = Write("g.gz", std::string("\x1f\x8b") + std::string(100, '\x5a'));
  ExpectInvalid(ReadAllStatus(path), path, "gzip");
}

// =============================================================================================
// Opening.

using OpenTest = TempDirTest;

TEST_F(OpenTest, MissingFileIsNotFound) {
  const std::string path = dir_.File("missing.fvecs");
  ExpectError(OpenStatus(path), absl::StatusCode::kNotFound, path);
  ExpectError(ReadMatrix(path).status(), absl::StatusCode::kNotFound, path);
  ExpectError(ReadIntMatrix(path).status(), absl::StatusCode::kNotFound, path);
}

TEST_F(OpenTest, DirectoryIsInvalidArgument) {
  ExpectInvalid(OpenStatus(dir_.path()), dir_.path(), "not a regular file");
  const std::string named = dir_.File("dir.npy");
  ASSERT_EQ(mkdir(named.c_str(), 0755), 0);
  ExpectInvalid(OpenStatus(named), named, "not a regular file");
}

TEST_F(OpenTest, UnknownFormat) {
  const std::string path = Write("notes.txt", "hello, world\n");
  ExpectInvalid(OpenStatus(path), path, "unknown format");
}

TEST(VectorFileFormatNameTest, Names) {
  EXPECT_EQ(VectorFileFormatName(VectorFileFormat::kNpy), "npy");
  EXPECT_EQ(VectorFileFormatName(VectorFileFormat::kFvecs), "fvecs");
  EXPECT_EQ(VectorFileFormatName(VectorFileFormat::kBvecs), "bvecs");
  EXPECT_EQ(VectorFileFormatName(VectorFileFormat::kIvecs), "ivecs");
  EXPECT_EQ(VectorFileFormatName(VectorFileFormat::kIdx), "idx");
}

// =============================================================================================
// ReadIds.

using ReadIdsTest = TempDirTest;

TEST_F(ReadIdsTest, TextWithBlankLinesAndHugeIds) {
  const std::string path =
      Write("ids.txt", "1\n\n  42 \n18446744073709551615\n9223372036854775809\r\n\n0\n7");
  auto ids = ReadIds(path);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids,
            (std::vector<uint64_t>{1, 42, 18446744073709551615u, 9223372036854775809u, 0, 7}));
}

TEST_F(ReadIdsTest, EmptyTextFile) {
  const std::string path = Write("ids.txt", "\n\n");
  auto ids = ReadIds(path);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_TRUE(ids->empty());
}

TEST_F(ReadIdsTest, TextWithGarbageNamesTheLine) {
  const std::string path = Write("ids.txt", "1\n2\n\n12abc\n5\n");
  ExpectInvalid(ReadIds(path).status(), path, ":4:");
}

TEST_F(ReadIdsTest, TextRejectsNegativeAndOverflowingIds) {
  for (const char* text : {"-5\n", "18446744073709551616\n", "1.5\n", "0x10\n"}) {
    SCOPED_TRACE(text);
    const std::string path = Write("ids.txt", text);
    ExpectInvalid(ReadIds(path).status(), path, ":1:");
  }
}

TEST_F(ReadIdsTest, MissingTextFileIsNotFound) {
  const std::string path = dir_.File("none.txt");
  ExpectError(ReadIds(path).status(), absl::StatusCode::kNotFound, path);
}

TEST_F(ReadIdsTest, NpyInt64) {
  const std::vector<int64_t> values = {3, 0, (int64_t{1} << 53) + 1,
                                       std::numeric_limits<int64_t>::max()};
  const std::string path = Write("ids.npy", Npy(NpyDict("<i8", "(4,)"), Pack(values)));
  auto ids = ReadIds(path);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, std::vector<uint64_t>(values.begin(), values.end()));
}

TEST_F(ReadIdsTest, NpyUint64AboveInt64Max) {
  const std::vector<uint64_t> values = {18446744073709551615u, 9223372036854775808u, 1};
  const std::string path = Write("ids.npy", Npy(NpyDict("<u8", "(3,)"), Pack(values)));
  auto ids = ReadIds(path);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, values);
}

TEST_F(ReadIdsTest, NpyBigEndianColumn) {
  const std::vector<int32_t> values = {10, 11, 12};
  const std::string path = Write("ids.npy", Npy(NpyDict(">i4", "(3, 1)"), Pack(values, true)));
  auto ids = ReadIds(path);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, (std::vector<uint64_t>{10, 11, 12}));
}

TEST_F(ReadIdsTest, NpyTwoColumnsIsRefusedNotFlattened) {
  // A (2, 3) array would silently give 6 ids for 2 rows.
  const std::vector<int32_t> values = {10, 11, 12, 20, 21, 22};
  const std::string path = Write("ids.npy", Npy(NpyDict(">i4", "(2, 3)"), Pack(values, true)));
  ExpectInvalid(ReadIds(path).status(), path, "one column");
}

TEST_F(ReadIdsTest, GzippedNpy) {
  const std::vector<int64_t> values = {5, 6, 7};
  const std::string path = Write("ids.npy.gz", Gzip(Npy(NpyDict("<i8", "(3,)"), Pack(values))));
  auto ids = ReadIds(path);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, (std::vector<uint64_t>{5, 6, 7}));
}

TEST_F(ReadIdsTest, NpyNegativeId) {
  const std::string path =
      Write("ids.npy", Npy(NpyDict("<i8", "(3,)"), Pack(std::vector<int64_t>{1, -2, 3})));
  ExpectInvalid(ReadIds(path).status(), path, "negative");
}

TEST_F(ReadIdsTest, NpyFloat32) {
  const std::string path =
      Write("ids.npy", Npy(NpyDict("<f4", "(2,)"), Pack(std::vector<float>{1.0f, 2.0f})));
  const absl::Status status = ReadIds(path).status();
  EXPECT_FALSE(status.ok());
  EXPECT_TRUE(absl::StrContains(status.message(), path)) << status;
}

TEST_F(ReadIdsTest, NpyHostileHeaderIsRejected) {
  const std::string path =
      Write("ids.npy", Npy(NpyDict("<i8", "(4611686018427387904, 4)"), std::string(64, '\0')));
  ExpectInvalid(ReadIds(path).status(), path, "overflow");
}

TEST_F(ReadIdsTest, GzippedHeaderClaimingTerabytesFailsWithoutAllocatingThem) {
  // A streamed file's size is unknown up front, so its header cannot be checked against it: the
  // readers must grow their buffers with the data and report the truncation.
  const std::string payload = Pack(std::vector<int64_t>{1, 2, 3});
  const std::string path =
      Write("huge.npy.gz", Gzip(Npy(NpyDict("<i8", "(1099511627776,)"), payload)));
  ExpectInvalid(ReadIds(path).status(), path, "truncated");
  ExpectInvalid(ReadIntMatrix(path).status(), path, "truncated");
  ExpectInvalid(ReadMatrix(path).status(), path, "truncated");
}

TEST_F(ReadIdsTest, Ivecs) {
  const std::string path = Write("ids.ivecs", Xvecs<int32_t>({{4}, {5}, {2147483647}}));
  auto ids = ReadIds(path);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, (std::vector<uint64_t>{4, 5, 2147483647}));
}

TEST_F(ReadIdsTest, IvecsNegativeId) {
  const std::string path = Write("ids.ivecs", Xvecs<int32_t>({{4}, {-1}}));
  ExpectInvalid(ReadIds(path).status(), path, "negative");
}

TEST(ReadIdsRealDataTest, SiftGroundTruthIvecs) {
  const std::string path = DataFile("sift5k/sift5k_groundtruth.ivecs");
  ASSERT_FALSE(path.empty());
  // 100 neighbours per row: a matrix, not one id per row.
  ExpectInvalid(ReadIds(path).status(), path, "has 100 per row");
}

}  // namespace
}  // namespace quantd
