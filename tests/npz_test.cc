// The .npz reader and writer: archives made by real NumPy (numpy.savez and savez_compressed,
// tests/data/npz/make_fixtures.py), round trips, a ZIP64 central directory, and hostile files
// (every truncation, bit flips at every header offset) that must give a clear error, never a
// crash or a huge allocation.
#include "io/npz.h"

#include <zlib.h>

#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "io/npy_format.h"
#include "tests/test_support.h"

namespace quantd {
namespace {

using ::quantd::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string Fixture(const std::string& name) {
  return absl::StrCat(QUANTD_TEST_FIXTURE_DIR, "/npz/", name);
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

const NpyArray* Find(const std::vector<NpyArray>& arrays, const std::string& name) {
  for (const NpyArray& a : arrays) {
    if (a.name == name) return &a;
  }
  return nullptr;
}

// The arrays of make_fixtures.py's arrays(), as the reader must return them.
void ExpectFixtureArrays(const std::vector<NpyArray>& arrays) {
  ASSERT_EQ(arrays.size(), 5u);
  const NpyArray* a = Find(arrays, "a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->type, ElementType::kF32);
  EXPECT_THAT(a->shape, ElementsAre(2, 3));
  EXPECT_THAT(a->ToFloat(), ElementsAre(0.5f, 1.5f, 2.5f, 10.5f, 11.5f, 12.5f));
  const NpyArray* b = Find(arrays, "b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->type, ElementType::kI64);
  EXPECT_THAT(b->shape, ElementsAre(5));
  auto b_values = b->ToInt64();
  ASSERT_TRUE(b_values.ok()) << b_values.status();
  EXPECT_THAT(*b_values, ElementsAre(-3, 0, 7, int64_t{1} << 40, -(int64_t{1} << 50)));
  const NpyArray* c = Find(arrays, "c");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->type, ElementType::kU32);
  EXPECT_THAT(*c->ToInt64(), ElementsAre(0, 1000, 2000, 3000));
  const NpyArray* d = Find(arrays, "d");
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->type, ElementType::kF64);
  EXPECT_THAT(d->shape, ElementsAre(3, 2));
  EXPECT_THAT(d->ToFloat(), ElementsAre(-1.0f, -0.6f, -0.2f, 0.2f, 0.6f, 1.0f));
  EXPECT_EQ(d->ToInt64().status().code(), absl::StatusCode::kFailedPrecondition);
  const NpyArray* e = Find(arrays, "e");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->type, ElementType::kI32);
  EXPECT_THAT(*e->ToInt64(), ElementsAre(1, -2, 3, -4));
}

TEST(NpzTest, ReadsNumpySavez) {
  auto arrays = ReadNpz(Fixture("savez.npz"));
  ASSERT_TRUE(arrays.ok()) << arrays.status();
  ExpectFixtureArrays(*arrays);
}

TEST(NpzTest, ReadsNumpySavezCompressed) {
  auto arrays = ReadNpz(Fixture("savez_compressed.npz"));
  ASSERT_TRUE(arrays.ok()) << arrays.status();
  ExpectFixtureArrays(*arrays);
}

TEST(NpzTest, ReadsPositionalCodebooksInOrder) {
  auto arrays = ReadNpz(Fixture("codebooks.npz"));
  ASSERT_TRUE(arrays.ok()) << arrays.status();
  ASSERT_EQ(arrays->size(), 3u);
  for (int l = 0; l < 3; ++l) {
    EXPECT_EQ((*arrays)[l].name, absl::StrCat("arr_", l));
    EXPECT_THAT((*arrays)[l].shape, ElementsAre(4, 3));
    EXPECT_EQ((*arrays)[l].ToFloat(), std::vector<float>(12, l + 0.25f));
  }
}

TEST(NpzTest, ConvertsBigEndianAndRefusesObjectArrays) {
  auto arrays = ReadNpz(Fixture("bigendian.npz"));
  ASSERT_TRUE(arrays.ok()) << arrays.status();
  ASSERT_EQ(arrays->size(), 1u);
  EXPECT_TRUE((*arrays)[0].big_endian);
  EXPECT_THAT((*arrays)[0].ToFloat(), ElementsAre(1.5f, -2.0f, 3.25f, 4.0f));
  auto objects = ReadNpz(Fixture("objects.npz"));
  ASSERT_FALSE(objects.ok());
  EXPECT_EQ(objects.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(objects.status().message(), HasSubstr("objects.npz: member 'o.npy'"));
  EXPECT_THAT(objects.status().message(), HasSubstr("object arrays"));
}

TEST(NpzTest, RoundTripsFloatAndIntArrays) {
  TempDir dir;
  const std::vector<float> codebook = {1.0f, -2.5f, 3.0f, 1e-30f, 7.0f, 8.0f};
  const std::vector<int64_t> ids = {5, -1, int64_t{1} << 62};
  const std::string path = dir.File("out.npz");
  ASSERT_TRUE(WriteNpz(path, {{"arr_0", ElementType::kF32, {2, 3}, codebook.data()},
                              {"ids", ElementType::kI64, {3}, ids.data()},
                              {"empty", ElementType::kF32, {0, 4}, codebook.data()}})
                  .ok());
  auto arrays = ReadNpz(path);
  ASSERT_TRUE(arrays.ok()) << arrays.status();
  ASSERT_EQ(arrays->size(), 3u);
  EXPECT_EQ((*arrays)[0].name, "arr_0");
  EXPECT_THAT((*arrays)[0].shape, ElementsAre(2, 3));
  EXPECT_EQ((*arrays)[0].ToFloat(), codebook);
  EXPECT_EQ((*arrays)[1].name, "ids");
  EXPECT_THAT((*arrays)[1].shape, ElementsAre(3));
  EXPECT_EQ(*(*arrays)[1].ToInt64(), ids);
  EXPECT_THAT((*arrays)[2].shape, ElementsAre(0, 4));
  EXPECT_TRUE((*arrays)[2].ToFloat().empty());

  // What the writer refuses, by name.
  const int32_t small[2] = {1, 2};
  auto status = WriteNpz(path, {{"x", ElementType::kI32, {2}, small}});
  EXPECT_THAT(status.message(), HasSubstr("member 'x': only float32 and int64"));
  status = WriteNpz(
      path, {{"x", ElementType::kI64, {3}, ids.data()}, {"x", ElementType::kI64, {3}, ids.data()}});
  EXPECT_THAT(status.message(), HasSubstr("member 'x' given twice"));
  // A refused archive leaves no file behind (here: not even a partial one).
  EXPECT_TRUE(testing::Entries(dir.path()) == std::vector<std::string>{"out.npz"});
  EXPECT_THAT(WriteNpz(dir.File("no/such/dir.npz"), {}).message(), HasSubstr("no/such/dir.npz"));
}

void Put16(std::string& out, uint16_t v) {
  out.push_back(static_cast<char>(v & 0xff));
  out.push_back(static_cast<char>(v >> 8));
}
void Put32(std::string& out, uint32_t v) {
  Put16(out, static_cast<uint16_t>(v));
  Put16(out, static_cast<uint16_t>(v >> 16));
}
void Put64(std::string& out, uint64_t v) {
  Put32(out, static_cast<uint32_t>(v));
  Put32(out, static_cast<uint32_t>(v >> 32));
}

// The fields a ZIP64 member's local header and central directory entry share: flags, method
// (stored), time and date, CRC-32, both sizes deferred to the ZIP64 extra field, name length.
void PutZip64MemberFields(std::string& out, uint32_t crc, const std::string& name) {
  Put16(out, 0);
  Put16(out, 0);
  Put32(out, 0);
  Put32(out, crc);
  Put32(out, 0xffffffff);
  Put32(out, 0xffffffff);
  Put16(out, static_cast<uint16_t>(name.size()));
}

// A one-member stored archive whose central directory and end record are in ZIP64 form, as
// Python's zipfile writes them for members and archives beyond 4 GiB.
std::string Zip64Archive(const std::string& npy, uint32_t crc) {
  const std::string name = "z.npy";
  std::string out;
  Put32(out, 0x04034b50);
  Put16(out, 45);
  PutZip64MemberFields(out, crc, name);
  Put16(out, 20);
  out += name;
  Put16(out, 1);
  Put16(out, 16);
  Put64(out, npy.size());
  Put64(out, npy.size());
  out += npy;
  const uint64_t directory = out.size();
  Put32(out, 0x02014b50);
  Put16(out, 45);
  Put16(out, 45);
  PutZip64MemberFields(out, crc, name);
  Put16(out, 28);
  Put16(out, 0);
  Put16(out, 0);
  Put16(out, 0);
  Put32(out, 0);
  Put32(out, 0xffffffff);
  out += name;
  Put16(out, 1);
  Put16(out, 24);
  Put64(out, npy.size());
  Put64(out, npy.size());
  Put64(out, 0);
  const uint64_t directory_size = out.size() - directory;
  const uint64_t end64 = out.size();
  Put32(out, 0x06064b50);
  Put64(out, 44);
  Put16(out, 45);
  Put16(out, 45);
  Put32(out, 0);
  Put32(out, 0);
  Put64(out, 1);
  Put64(out, 1);
  Put64(out, directory_size);
  Put64(out, directory);
  Put32(out, 0x07064b50);
  Put32(out, 0);
  Put64(out, end64);
  Put32(out, 1);
  Put32(out, 0x06054b50);
  Put16(out, 0);
  Put16(out, 0);
  Put16(out, 0xffff);
  Put16(out, 0xffff);
  Put32(out, 0xffffffff);
  Put32(out, 0xffffffff);
  Put16(out, 0);
  return out;
}

TEST(NpzTest, ReadsZip64CentralDirectory) {
  TempDir dir;
  const std::vector<float> values = {1, 2, 3, 4};
  std::string npy = NpyHeaderBytes("<f4", {2, 2});
  npy.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  const uint32_t crc =
      static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(npy.data()), npy.size()));
  const std::string path = dir.File("zip64.npz");
  testing::WriteFile(path, Zip64Archive(npy, crc));
  auto arrays = ReadNpz(path);
  ASSERT_TRUE(arrays.ok()) << arrays.status();
  ASSERT_EQ(arrays->size(), 1u);
  EXPECT_EQ((*arrays)[0].name, "z");
  EXPECT_EQ((*arrays)[0].ToFloat(), values);
  // A wrong CRC is named.
  testing::WriteFile(path, Zip64Archive(npy, crc ^ 1));
  arrays = ReadNpz(path);
  ASSERT_FALSE(arrays.ok());
  EXPECT_THAT(arrays.status().message(), HasSubstr("member 'z.npy': CRC-32"));
}

TEST(NpzTest, ClearErrorsForMissingAndNonZipFiles) {
  TempDir dir;
  auto missing = ReadNpz(dir.File("missing.npz"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(missing.status().message(), HasSubstr("missing.npz: cannot open"));
  testing::WriteFile(dir.File("text.npz"), std::string(100, 'x'));
  auto text = ReadNpz(dir.File("text.npz"));
  EXPECT_THAT(text.status().message(), HasSubstr("text.npz: no ZIP end-of-central-directory"));
  // A plain .npy is not an archive.
  const std::string npy = NpyHeaderBytes("<f4", {1, 1}) + std::string(4, '\0');
  testing::WriteFile(dir.File("plain.npz"), npy);
  EXPECT_FALSE(ReadNpz(dir.File("plain.npz")).ok());
}

// Every prefix of each fixture, and every header byte with each bit flipped: an error naming
// the file (or, for a flip the format does not check, such as a timestamp, the right arrays),
// never a crash. ASan/UBSan builds turn out-of-bounds reads into failures.
TEST(NpzTest, TruncationsAndBitFlipsGiveErrorsNotCrashes) {
  TempDir dir;
  for (const std::string fixture : {"savez.npz", "savez_compressed.npz", "codebooks.npz"}) {
    const std::string original = ReadBytes(Fixture(fixture));
    ASSERT_FALSE(original.empty()) << fixture;
    const std::string path = dir.File(fixture);
    for (size_t n = 0; n < original.size(); ++n) {
      testing::WriteFile(path, original.substr(0, n));
      auto arrays = ReadNpz(path);
      ASSERT_FALSE(arrays.ok()) << fixture << " truncated to " << n;
      EXPECT_EQ(arrays.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(arrays.status().message(), HasSubstr(path)) << n;
    }
    int refused = 0;
    int accepted = 0;
    for (size_t at = 0; at < original.size(); ++at) {
      for (int bit = 0; bit < 8; ++bit) {
        std::string bytes = original;
        bytes[at] = static_cast<char>(bytes[at] ^ (1 << bit));
        testing::WriteFile(path, bytes);
        auto arrays = ReadNpz(path);
        if (arrays.ok()) {
          ++accepted;
          int64_t elements = 0;
          for (const NpyArray& a : *arrays) {
            EXPECT_EQ(static_cast<int64_t>(a.data.size()),
                      a.size() * static_cast<int64_t>(ElementSize(a.type)));
            elements += a.size();
          }
          EXPECT_LE(elements, static_cast<int64_t>(original.size()) * 1032);
        } else {
          ++refused;
          EXPECT_EQ(arrays.status().code(), absl::StatusCode::kInvalidArgument);
          EXPECT_THAT(arrays.status().message(), HasSubstr(path)) << at << " bit " << bit;
        }
      }
    }
    // The CRC-32 catches every flip in the data; flips in fields nobody reads pass.
    EXPECT_GT(refused, accepted) << fixture;
  }
}

}  // namespace
}  // namespace quantd
