// A seeded mutation run over the vector-file readers: small valid files of every format (.npy
// v1-v3 in both byte orders, .fvecs/.bvecs/.ivecs, IDX, gzip around .npy and IDX) are mutated
// (bit flips, interesting bytes and words, truncation, garbage, header field edits, corrupted
// gzip streams) and read in full through the public API. Every file must give either an error
// status or a result whose shape the bytes present can hold, and no file may make the readers
// allocate much: peak RSS may only grow by a bounded amount over the whole run.
#include <sys/resource.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "io/vector_file.h"
#include "tests/test_support.h"

namespace quantd {
namespace {

using ::quantd::testing::Raw;
using ::quantd::testing::TempDir;
using ::quantd::testing::WriteFile;

constexpr int kIterations = 20000;
constexpr int64_t kMaxFileDim = int64_t{1} << 24;  // the readers' documented row-size cap
// The mutated files are at most ~70 KB and a gzip stream expands at most 1032-fold, so nothing
// the readers or this test legitimately allocate comes near 64 MiB of peak RSS growth; a header
// trusted before the data arrives would (one gzipped row of 2^24 doubles is 128 MiB).
constexpr int64_t kMaxRssGrowthKib = 64 << 10;

// ---------------------------------------------------------------------------------------------
// Valid seed files.

std::string NpyFile(const std::string& dict, const std::string& payload, int major) {
  const size_t prefix = major == 1 ? 10 : 12;
  const size_t total = (prefix + dict.size() + 1 + 63) / 64 * 64;
  std::string header = dict;
  header.append(total - prefix - dict.size() - 1, ' ');
  header.push_back('\n');
  std::string out = "\x93NUMPY";
  out.push_back(static_cast<char>(major));
  out.push_back('\0');
  out += major == 1 ? Raw<uint16_t>(static_cast<uint16_t>(header.size()))
                    : Raw<uint32_t>(static_cast<uint32_t>(header.size()));
  return out + header + payload;
}

std::string NpyDict(const std::string& descr, const std::string& shape,
                    const std::string& fortran = "False") {
  return absl::StrCat("{'descr': '", descr, "', 'fortran_order': ", fortran, ", 'shape': ", shape,
                      ", }");
}

// `count` distinct-ish elements of `size` bytes.
std::string Payload(size_t count, size_t size) {
  std::string out;
  for (size_t i = 0; i < count * size; ++i) out.push_back(static_cast<char>(i * 37 + 11));
  return out;
}

std::string Xvecs(int32_t rows, int32_t dim, size_t element_size) {
  std::string out;
  for (int32_t r = 0; r < rows; ++r) {
    out += Raw<int32_t>(dim) + Payload(static_cast<size_t>(dim), element_size);
  }
  return out;
}

std::string Idx(uint8_t type, const std::vector<uint32_t>& extents, size_t element_size) {
  std::string out("\0\0", 2);
  out.push_back(static_cast<char>(type));
  out.push_back(static_cast<char>(extents.size()));
  size_t count = 1;
  for (uint32_t e : extents) {
    out += Raw<uint32_t>(e, /*big_endian=*/true);
    count *= e;
  }
  return out + Payload(count, element_size);
}

// A real gzip stream of `data` (zlib, default compression).
std::string Gzip(const std::string& data) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY),
            Z_OK);
  std::string out(deflateBound(&z, data.size()) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

// The bytes a (possibly corrupt, possibly multi-member) gzip file decompresses to before the
// first error, capped at `cap`: what a streamed reader can see at most.
size_t GunzipSize(const std::string& gz, size_t cap) {
  z_stream z{};
  if (inflateInit2(&z, 15 + 32) != Z_OK) return 0;
  std::string out(64 << 10, '\0');
  size_t total = 0;
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(gz.data()));
  z.avail_in = static_cast<uInt>(gz.size());
  while (total < cap) {
    z.next_out = reinterpret_cast<Bytef*>(out.data());
    z.avail_out = static_cast<uInt>(out.size());
    const int rc = inflate(&z, Z_NO_FLUSH);
    total += out.size() - z.avail_out;
    if (rc == Z_STREAM_END) {
      if (z.avail_in == 0) break;
      inflateReset(&z);  // another member may follow
      continue;
    }
    if (rc != Z_OK) break;
  }
  inflateEnd(&z);
  return total;
}

enum class Kind { kNpy, kXvecs, kIdx };

struct Seed {
  std::string name;     // file name (the extension selects texmex formats)
  std::string content;  // uncompressed bytes
  Kind kind;
  bool gzip = false;
  int npy_major = 1;
  std::string descr;  // .npy only
  std::string shape;  // .npy only
};

std::vector<Seed> Seeds() {
  std::vector<Seed> seeds;
  auto npy = [&](const std::string& name, const std::string& descr, const std::string& shape,
                 size_t count, size_t size, int major, bool gzip) {
    seeds.push_back({name, NpyFile(NpyDict(descr, shape), Payload(count, size), major), Kind::kNpy,
                     gzip, major, descr, shape});
  };
  auto other = [&](const std::string& name, const std::string& content, Kind kind, bool gzip) {
    seeds.push_back({name, content, kind, gzip, 1, "", ""});
  };
  npy("a.npy", "<f4", "(3, 4)", 12, 4, 1, false);
  npy("b.npy", ">f8", "(2, 3)", 6, 8, 2, false);
  npy("c.npy", "|u1", "(2, 2, 3)", 12, 1, 3, false);
  npy("d.npy", "<i8", "(5,)", 5, 8, 1, false);
  npy("e.npy", ">u2", "(4, 2)", 8, 2, 1, false);
  npy("f.npy", "<i4", "(0, 3)", 0, 4, 1, false);
  npy("g.npy.gz", "<f4", "(3, 4)", 12, 4, 1, true);
  npy("h.npy.gz", "<i8", "(6, 1)", 6, 8, 2, true);
  other("a.fvecs", Xvecs(3, 4, 4), Kind::kXvecs, false);
  other("b.bvecs", Xvecs(3, 5, 1), Kind::kXvecs, false);
  other("c.ivecs", Xvecs(3, 2, 4), Kind::kXvecs, false);
  other("a.idx", Idx(0x08, {3, 2, 3}, 1), Kind::kIdx, false);
  other("b.idx", Idx(0x0D, {4, 3}, 4), Kind::kIdx, false);
  other("c.idx", Idx(0x0B, {5}, 2), Kind::kIdx, false);
  other("d-idx3-ubyte.gz", Idx(0x08, {4, 2, 2}, 1), Kind::kIdx, true);
  other("e.idx.gz", Idx(0x0E, {2, 3}, 8), Kind::kIdx, true);
  return seeds;
}

// ---------------------------------------------------------------------------------------------
// Mutations.

class Mutator : public testing::SeededRandom {
 public:
  explicit Mutator(uint64_t seed) : SeededRandom(seed) {}

  // One generic byte-level mutation of `bytes`.
  void MutateBytes(std::string& bytes) {
    static const std::vector<uint8_t> kBytes = {0x00, 0xff, 0x7f, 0x80, 0x01, 0xfe};
    static const std::vector<uint32_t> kWords = {0,        0xffffffffu,    0x7fffffffu, 0x80000000u,
                                                 1u << 24, (1u << 24) + 1, 0x10000u,    0xffffu,
                                                 2,        1000000007u};
    switch (Below(7)) {
      case 0:  // bit flips
        for (size_t i = 0, n = 1 + Below(4); i < n && !bytes.empty(); ++i) {
          bytes[Below(bytes.size())] ^= static_cast<char>(1u << Below(8));
        }
        break;
      case 1:  // interesting bytes
        for (size_t i = 0, n = 1 + Below(4); i < n && !bytes.empty(); ++i) {
          bytes[Below(bytes.size())] = static_cast<char>(Pick(kBytes));
        }
        break;
      case 2: {  // interesting 32-bit word, either byte order, anywhere (mostly the header)
        if (bytes.size() < 4) break;
        const size_t at =
            Below(OneIn(2) ? std::min<size_t>(bytes.size() - 3, 32) : bytes.size() - 3);
        const std::string word = Raw<uint32_t>(Pick(kWords), OneIn(2));
        bytes.replace(at, 4, word);
        break;
      }
      case 3:  // truncation
        bytes.resize(Below(bytes.size() + 1));
        break;
      case 4:  // garbage appended
        for (size_t i = 0, n = 1 + Below(64); i < n; ++i) {
          bytes.push_back(static_cast<char>(Below(256)));
        }
        break;
      case 5: {  // a block deleted
        if (bytes.empty()) break;
        const size_t at = Below(bytes.size());
        bytes.erase(at, 1 + Below(std::min<size_t>(16, bytes.size() - at)));
        break;
      }
      case 6: {  // a block duplicated
        if (bytes.empty()) break;
        const size_t at = Below(bytes.size());
        const std::string block = bytes.substr(at, 1 + Below(16));
        bytes.insert(Below(bytes.size() + 1), block);
        break;
      }
    }
  }

  // A header-level edit of a seed: a rebuilt .npy header, IDX type/count/extents, texmex row
  // dimensions.
  std::string EditHeader(const Seed& seed) {
    std::string bytes = seed.content;
    switch (seed.kind) {
      case Kind::kNpy:
        return EditNpy(seed);
      case Kind::kIdx: {
        switch (Below(3)) {
          case 0:
            bytes[2] = static_cast<char>(
                OneIn(2) ? Pick<uint8_t>({0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x0A, 0x00})
                         : Below(256));
            break;
          case 1:
            bytes[3] = static_cast<char>(Pick<uint8_t>({0, 1, 2, 3, 8, 9, 0xff}));
            break;
          case 2: {
            const size_t extents = static_cast<unsigned char>(bytes[3]);
            const size_t at = 4 + 4 * Below(extents);
            if (at + 4 <= bytes.size()) bytes.replace(at, 4, Raw<uint32_t>(HugeU32(), true));
            break;
          }
        }
        return bytes;
      }
      case Kind::kXvecs: {
        // The first row's dimension, or a later row's.
        int32_t dim = 0;
        std::memcpy(&dim, seed.content.data(), sizeof(dim));
        const size_t row_bytes = seed.content.size() / 3;  // every texmex seed has 3 rows
        const size_t at = OneIn(2) ? 0 : row_bytes * Below(3);
        int32_t value = 0;
        switch (Below(4)) {
          case 0:
            value = static_cast<int32_t>(HugeU32());
            break;
          case 1:
            value = -static_cast<int32_t>(Below(1000));
            break;
          case 2:
            value = dim + static_cast<int32_t>(Below(5)) - 2;
            break;
          case 3:
            value = static_cast<int32_t>(kMaxFileDim + Below(3) - 1);
            break;
        }
        if (at + 4 <= bytes.size()) bytes.replace(at, 4, Raw<int32_t>(value));
        return bytes;
      }
    }
    return bytes;
  }

 private:
  uint32_t HugeU32() {
    return Pick<uint32_t>({0, 1, 0xffffffffu, 0x7fffffffu, 0x80000000u, 1u << 24, (1u << 24) + 1,
                           1u << 23, 65536, 3, 4, 5, static_cast<uint32_t>(Below(1u << 31))});
  }

  std::string RandomInt() {
    return Pick<std::string>({"0",
                              "1",
                              "-1",
                              "3",
                              "4",
                              "16777216",
                              "16777217",
                              "8388608",
                              "4294967296",
                              "9223372036854775807",
                              "9223372036854775808",
                              "-9223372036854775808",
                              "99999999999999999999",
                              "1e9",
                              "0x10",
                              "",
                              " ",
                              "3.0",
                              "+3",
                              absl::StrCat(Below(100000))});
  }

  std::string EditNpy(const Seed& seed) {
    std::string descr = seed.descr;
    std::string shape = seed.shape;
    std::string fortran = "False";
    int major = seed.npy_major;
    std::string dict;
    switch (Below(8)) {
      case 0:
        descr = Pick<std::string>({"<f4",     ">f8",          "|u1",  "<i8",  "<u8",     ">i2",
                                   "=f4",     "<f2",          "|O",   "<c8",  "",        "<",
                                   "f4",      "<f4294967300", "<f-4", "V8",   "|b1",     "<U10",
                                   "<M8[ns]", "<f 4",         "'",    "<f4'", "\xff\xfe"});
        break;
      case 1:
        shape = absl::StrCat("(", RandomInt(), ", ", RandomInt(), ")");
        break;
      case 2:
        shape = Pick<std::string>({"()",
                                   "(3,)",
                                   "(3, 4",
                                   "[3, 4]",
                                   "(3,,4)",
                                   "(, )",
                                   "(1, 16777216)",
                                   "(2, 8388608)",
                                   "(0, 16777216)",
                                   "(16777216, 16777216)",
                                   "(4294967296, 4294967296, 2)",
                                   "(1, 4096, 4096)",
                                   "(1, 4096, 4097)",
                                   "(3, 4, 0)",
                                   "(1, 1, 1, 1, 1, 1, 1, 1, 1, 1)",
                                   "(3, -4)",
                                   "(-3, 4)",
                                   "((3, 4))",
                                   "(3, 4)) (",
                                   "(" + std::string(200, '9') + ", 4)"});
        break;
      case 3:
        fortran = Pick<std::string>({"True", "0", "'False'", "", "False False", "None"});
        break;
      case 4:  // duplicated keys: the second claims something else
        dict = absl::StrCat("{'descr': '", descr, "', 'fortran_order': False, 'shape': ", shape,
                            ", 'shape': (", RandomInt(), ", ", RandomInt(), "), 'descr': '>f8', }");
        break;
      case 5:  // garbage or partial dicts
        dict = Pick<std::string>(
            {"", "{", "}", "{}", "garbage", "{'descr': '<f4'}", "{'shape': (3, 4)}",
             "{'descr': '<f4', 'fortran_order': False}", "{'descr' '<f4' 'shape' (3, 4)}",
             "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (3, 4)}",
             "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4)",
             "{'descr': '<f4, 'fortran_order': False, 'shape': (3, 4), }",
             "{'descr': '<f4', 'fortran_order': False, 'shape':", "{'shape': 'descr'}",
             std::string(3000, '{'), std::string(70000, ' ')});
        break;
      case 6:
        major = Pick<int>({0, 1, 2, 3, 4, 255});
        break;
      case 7: {  // a lying header length field
        std::string bytes = seed.content;
        if (seed.npy_major == 1) {
          bytes.replace(8, 2, Raw<uint16_t>(static_cast<uint16_t>(HugeU32())));
        } else {
          bytes.replace(8, 4, Raw<uint32_t>(HugeU32()));
        }
        return bytes;
      }
    }
    if (dict.empty()) dict = NpyDict(descr, shape, fortran);
    // The payload of the seed, whatever the new header says.
    const size_t header_end = seed.content.find('\n') + 1;
    std::string out = NpyFile(dict, seed.content.substr(header_end), major == 0 ? 1 : major);
    if (major == 0 || major > 3) out[6] = static_cast<char>(major);
    return out;
  }
};

// ---------------------------------------------------------------------------------------------
// Checks.

int64_t PeakRssKib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}

struct Tally {
  int accepted = 0;  // opened and read in full
  int refused = 0;   // an error status at open or while reading
};

// Opens and reads `path` fully in random chunks, checking the shape against `present` bytes
// (the file's size, or what its gzip stream decompresses to). Returns whether it read it all.
bool ReadFully(const std::string& path, size_t present, bool streamed, Mutator& m,
               std::string* trace) {
  auto reader = VectorReader::Open(path);
  if (!reader.ok()) {
    EXPECT_NE(reader.status().code(), absl::StatusCode::kOk);
    EXPECT_FALSE(reader.status().message().empty());
    EXPECT_NE(reader.status().message().find(path), std::string::npos) << reader.status();
    absl::StrAppend(trace, "open: ", reader.status().message());
    return false;
  }
  VectorReader& r = **reader;
  EXPECT_GE(r.rows(), 0) << *trace;
  EXPECT_GE(r.dim(), 1) << *trace;
  EXPECT_LE(r.dim(), kMaxFileDim) << *trace;
  const size_t es = ElementSize(r.element_type());
  // A mapped file's header must be checked against its size before anything is read.
  if (!streamed) {
    const int64_t prefix = r.format() == VectorFileFormat::kFvecs ||
                                   r.format() == VectorFileFormat::kIvecs ||
                                   r.format() == VectorFileFormat::kBvecs
                               ? 4
                               : 0;
    EXPECT_LE(static_cast<double>(r.rows()) * static_cast<double>(r.dim() * es + prefix),
              static_cast<double>(present))
        << *trace;
  }
  if (r.rows() == 0) {
    std::vector<float> none(1);
    auto got = r.Read(10, none.data());
    EXPECT_TRUE(got.ok() && *got == 0) << *trace;
    return true;
  }
  // The caller's buffer: a few rows, or one if the rows are wide.
  const int64_t chunk =
      std::max<int64_t>(1, std::min<int64_t>(1 + m.Below(7), (1 << 20) / r.dim()));
  const bool integers =
      m.OneIn(3) && r.element_type() != ElementType::kF32 && r.element_type() != ElementType::kF64;
  std::vector<float> floats(integers ? 0 : static_cast<size_t>(chunk * r.dim()));
  std::vector<int64_t> ints(integers ? static_cast<size_t>(chunk * r.dim()) : 0);
  while (true) {
    const int64_t before = r.rows_read();
    auto got = integers ? r.ReadIntegers(chunk, ints.data()) : r.Read(chunk, floats.data());
    if (!got.ok()) {
      EXPECT_FALSE(got.status().message().empty());
      EXPECT_NE(got.status().message().find(path), std::string::npos) << got.status();
      absl::StrAppend(trace, "read: ", got.status().message());
      return false;
    }
    EXPECT_EQ(*got, std::min(chunk, r.rows() - before)) << *trace;
    EXPECT_EQ(r.rows_read(), before + *got) << *trace;
    if (*got == 0) break;
  }
  EXPECT_EQ(r.rows_read(), r.rows()) << *trace;
  // Every element read came from bytes that are present.
  EXPECT_LE(static_cast<double>(r.rows()) * static_cast<double>(r.dim() * es),
            static_cast<double>(present))
      << *trace;
  return true;
}

TEST(FuzzReadersTest, MutatedFilesGiveAStatusOrAConsistentShape) {
  // The run writes 20000 small files: on tmpfs they cost no disk I/O, which on a busy shared
  // disk made the run several times slower. (Only this process's temp directory changes.)
  if (access("/dev/shm", W_OK | X_OK) == 0) setenv("TMPDIR", "/dev/shm", /*overwrite=*/1);
  TempDir dir;
  const std::vector<Seed> seeds = Seeds();
  // Every seed reads as it is.
  for (const Seed& seed : seeds) {
    const std::string path = dir.File(seed.name);
    WriteFile(path, seed.gzip ? Gzip(seed.content) : seed.content);
    auto matrix = ReadMatrix(path);
    ASSERT_TRUE(matrix.ok()) << seed.name << ": " << matrix.status();
  }

  const auto start = std::chrono::steady_clock::now();
  const int64_t rss_before = PeakRssKib();
  Mutator m(20261124);
  Tally tally;
  int matrix_ok = 0;
  int iterations = 0;
  for (int iteration = 0; iteration < kIterations; ++iteration, ++iterations) {
    const Seed& seed = m.Pick(seeds);
    // Mutate the (inner) content: a header edit and/or byte mutations.
    std::string content = seed.content;
    const bool edit_header = m.OneIn(3);
    if (edit_header) content = m.EditHeader(seed);
    if (!edit_header || m.OneIn(2)) {
      for (size_t i = 0, n = 1 + m.Below(3); i < n; ++i) m.MutateBytes(content);
    }
    std::string bytes = content;
    bool streamed = false;
    if (seed.gzip || m.OneIn(10)) {  // sometimes gzip a plain format too
      bytes = Gzip(content);
      streamed = true;
      if (m.OneIn(2)) {  // corrupt or truncate the gzip stream itself
        const size_t n = 1 + m.Below(2);
        for (size_t i = 0; i < n; ++i) m.MutateBytes(bytes);
      }
    }
    // Usually the seed's name, sometimes another extension.
    std::string name = seed.name;
    if (m.OneIn(10)) {
      name = absl::StrCat("x", m.Pick<std::string>({".npy", ".fvecs", ".bvecs", ".ivecs", ".idx",
                                                    ".npy.gz", ".gz", "", ".FVECS", ".txt"}));
    }
    const std::string path = dir.File(absl::StrCat(iteration % 7, "-", name));
    WriteFile(path, bytes);
    // Whether the bytes still start as gzip decides how the reader sees them.
    streamed = bytes.size() >= 2 && bytes[0] == '\x1f' && bytes[1] == '\x8b';
    const size_t present = streamed ? GunzipSize(bytes, 16 << 20) : bytes.size();

    std::string trace = absl::StrFormat("iteration %d, seed %s as %s, %d bytes: ", iteration,
                                        seed.name, name, bytes.size());
    const bool read_all = ReadFully(path, present, streamed, m, &trace);
    read_all ? ++tally.accepted : ++tally.refused;

    // The whole-file helpers agree with the chunked read and return the shape they promise.
    auto matrix = ReadMatrix(path);
    EXPECT_EQ(matrix.ok(), read_all) << trace << " / ReadMatrix: " << matrix.status();
    if (matrix.ok()) {
      ++matrix_ok;
      EXPECT_EQ(matrix->values.size(), static_cast<size_t>(matrix->rows * matrix->dim)) << trace;
    }
    if (m.OneIn(4)) {
      auto ints = ReadIntMatrix(path);
      if (ints.ok()) {
        EXPECT_EQ(ints->values.size(), static_cast<size_t>(ints->rows * ints->dim)) << trace;
      } else {
        EXPECT_FALSE(ints.status().message().empty()) << trace;
      }
      auto ids = ReadIds(path);
      if (!ids.ok()) {
        EXPECT_FALSE(ids.status().message().empty()) << trace;
      }
    }
    // The peak is checked after every file, so that the first one to blow it is named.
    const int64_t growth_kib = PeakRssKib() - rss_before;
    EXPECT_LT(growth_kib, kMaxRssGrowthKib)
        << "peak RSS grew by " << growth_kib << " KiB: " << trace;
    if (::testing::Test::HasFailure()) {
      ADD_FAILURE() << "stopping at the first failing iteration: " << trace;
      break;
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const int64_t rss_growth_kib = PeakRssKib() - rss_before;
  std::printf(
      "fuzz_readers: %d iterations in %.1f s: %d read in full, %d refused; ReadMatrix accepted "
      "%d; peak RSS grew by %lld KiB\n",
      iterations, seconds, tally.accepted, tally.refused, matrix_ok,
      static_cast<long long>(rss_growth_kib));
  // Both outcomes are exercised.
  EXPECT_GT(tally.accepted, kIterations / 50);
  EXPECT_GT(tally.refused, kIterations / 2);
  EXPECT_LT(rss_growth_kib, kMaxRssGrowthKib);
}

}  // namespace
}  // namespace quantd
