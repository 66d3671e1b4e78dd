// quantctl's tokenizer-version commands against a real quantd (issue #12): versions, activate,
// drop-version, pin / unpin, retention, --version on encode / lookup / stats / export-sids,
// --activation on train; sid-map, next-codes and export-trie checked against export-sids of
// the same version; export-tokenizer / import-tokenizer giving identical SIDs; NumPy encoding the
// exported codebooks to quantd's codes exactly (tests/numpy_encode_check.py); and the bad inputs
// of each (unknown version, malformed .npz, shape mismatch, missing options).
#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/semantic_id.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "io/npz.h"
#include "io/vector_file.h"
#include "tests/process_support.h"
#include "tests/test_support.h"

namespace quantd {
namespace {

using ::quantd::testing::DataFile;
using ::quantd::testing::ReadText;
using ::quantd::testing::RunQuantctl;
using ::quantd::testing::RunShell;
using ::quantd::testing::ServerProcess;
using ::quantd::testing::TempDir;

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// A JSON file read back as a google.protobuf.Struct (an object of any values).
google::protobuf::Struct ReadJsonObject(const std::string& path) {
  google::protobuf::Struct object;
  const auto status = google::protobuf::util::JsonStringToMessage(ReadText(path), &object);
  EXPECT_TRUE(status.ok()) << path << ": " << status.ToString();
  return object;
}

// The rows of an int64 .npy written by quantctl.
IntMatrix ReadInts(const std::string& path) {
  auto matrix = ReadIntMatrix(path);
  EXPECT_TRUE(matrix.ok()) << matrix.status();
  return matrix.ok() ? *matrix : IntMatrix{};
}

class QuantctlVersionsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<ServerProcess>(dir_.path() + "/data", dir_.File("server.log"));
    address_ = server_->WaitReady();
    ASSERT_FALSE(address_.empty());
  }

  // quantctl's exit code; its output in out_.
  int Run(const std::string& args) { return RunQuantctl(address_, args, &out_); }

  // Creates `name` from sift5k's first `rows` rows (ids 0..rows-1).
  void CreateSift(const std::string& name, int rows, const std::string& create_options = "") {
    ASSERT_EQ(Run(absl::StrCat("create ", name, " --dim 128 ", create_options)), 0) << out_;
    ASSERT_EQ(
        Run(absl::StrCat("upsert ", name, " ", sift_, " --max-rows ", rows, " --no-progress")), 0)
        << out_;
  }

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
  std::string address_;
  std::string out_;
  const std::string sift_ = DataFile("sift5k/sift5k_base.fvecs");
};

TEST_F(QuantctlVersionsTest, VersionsActivatePinDropAndRetention) {
  CreateSift("s", 2000, "--keep-versions 3");
  ASSERT_EQ(Run("versions s"), 0) << out_;
  EXPECT_TRUE(Contains(out_, "active version none, keeps 3")) << out_;
  EXPECT_TRUE(Contains(out_, "no tokenizer versions")) << out_;

  ASSERT_EQ(Run("train s --levels 16,16 --seed 1 --no-progress"), 0) << out_;
  EXPECT_TRUE(Contains(out_, "version 1 (activated")) << out_;
  ASSERT_EQ(Run("train s --levels 8,8 --seed 2 --activation never --no-progress"), 0) << out_;
  EXPECT_TRUE(Contains(out_, "version 2 (not activated")) << out_;
  ASSERT_EQ(Run("versions s"), 0) << out_;
  EXPECT_TRUE(Contains(out_, "active version 1, keeps 3")) << out_;
  EXPECT_TRUE(Contains(out_, "2x16")) << out_;
  EXPECT_TRUE(Contains(out_, "2x8")) << out_;
  EXPECT_TRUE(Contains(out_, "trained")) << out_;
  ASSERT_EQ(Run("versions s --json"), 0) << out_;
  EXPECT_TRUE(Contains(out_, "\"active_version\":1")) << out_;

  // --version on the read commands: version 2 has 8 codes per level.
  ASSERT_EQ(Run("encode s 0 1 --version 2"), 0) << out_;
  EXPECT_TRUE(Contains(out_, "0\t<a_")) << out_;
  ASSERT_EQ(Run("stats s --version 2"), 0) << out_;
  EXPECT_TRUE(Contains(out_, "tokenizer version 2")) << out_;
  EXPECT_TRUE(Contains(out_, "versions kept: 1 (active), 2")) << out_;
  ASSERT_EQ(Run("lookup s 3 --version 2 --limit 5"), 0) << out_;
  ASSERT_EQ(Run("export-sids s --version 2 --index " + dir_.File("v2.json") + " --codes " +
                dir_.File("v2.npy")),
            0)
      << out_;
  EXPECT_TRUE(Contains(out_, "tokenizer version 2")) << out_;
  const IntMatrix v2 = ReadInts(dir_.File("v2.npy"));
  EXPECT_EQ(v2.rows, 2000);
  EXPECT_EQ(v2.dim, 3);
  for (int64_t i = 0; i < v2.rows; ++i) {
    EXPECT_LT(v2.values[i * 3], 8);
    EXPECT_LT(v2.values[i * 3 + 1], 8);
  }

  // Activate (and roll back), pin, drop.
  ASSERT_EQ(Run("activate s 2"), 0) << out_;
  EXPECT_TRUE(Contains(out_, "activated version 2 of 's'")) << out_;
  EXPECT_TRUE(Contains(out_, "active version 2")) << out_;
  ASSERT_EQ(Run("stats s"), 0) << out_;
  EXPECT_TRUE(Contains(out_, "tokenizer version 2")) << out_;
  EXPECT_EQ(Run("drop-version s 2"), 1) << out_;
  EXPECT_TRUE(Contains(out_, "FAILED_PRECONDITION")) << out_;
  ASSERT_EQ(Run("activate s 1"), 0) << out_;
  ASSERT_EQ(Run("pin s 2"), 0) << out_;
  EXPECT_TRUE(Contains(out_, "pinned version 2 of 's'")) << out_;
  EXPECT_EQ(Run("drop-version s 2"), 1) << out_;
  ASSERT_EQ(Run("unpin s 2"), 0) << out_;
  ASSERT_EQ(Run("drop-version s 2"), 0) << out_;
  EXPECT_TRUE(Contains(out_, "dropped version 2 of 's'")) << out_;

  // Unknown or dropped versions are named, and change nothing.
  EXPECT_EQ(Run("activate s 2"), 1) << out_;
  EXPECT_TRUE(Contains(out_, "NOT_FOUND")) << out_;
  EXPECT_EQ(Run("encode s 0 --version 99"), 1) << out_;
  EXPECT_TRUE(Contains(out_, "99")) << out_;
  EXPECT_EQ(Run("export-trie s --version 2 --out " + dir_.File("t")), 1) << out_;
  EXPECT_TRUE(Contains(out_, "tokenizer version 2 of 's' is not kept (kept: 1)")) << out_;
  EXPECT_EQ(Run("activate s two"), 2) << out_;
  EXPECT_TRUE(Contains(out_, "VERSION 'two' is not a version number")) << out_;
  EXPECT_EQ(Run("activate s"), 2) << out_;
  EXPECT_EQ(Run("encode s 0 --version -1"), 2) << out_;
  EXPECT_EQ(Run("train s --activation sometimes"), 2) << out_;
  EXPECT_TRUE(Contains(out_, "--activation 'sometimes': expected always, never or if-better"))
      << out_;
  ASSERT_EQ(Run("versions s"), 0) << out_;
  EXPECT_TRUE(Contains(out_, "active version 1")) << out_;

  // Retention: with 1 kept, a new active version drops the old one.
  ASSERT_EQ(Run("retention s 1"), 0) << out_;
  EXPECT_TRUE(Contains(out_, "'s' keeps 1 tokenizer versions")) << out_;
  ASSERT_EQ(Run("train s --levels 16,16 --seed 3 --no-progress"), 0) << out_;
  ASSERT_EQ(Run("versions s --json"), 0) << out_;
  EXPECT_TRUE(Contains(out_, "\"active_version\":3")) << out_;
  EXPECT_FALSE(Contains(out_, "\"version\":1,")) << out_;
  EXPECT_EQ(Run("retention s many"), 2) << out_;
  EXPECT_EQ(Run("versions nosuch"), 1) << out_;
  EXPECT_TRUE(Contains(out_, "NOT_FOUND")) << out_;
}

TEST_F(QuantctlVersionsTest, SidMapAndNextCodesAgreeWithExportSids) {
  CreateSift("s", 3000);
  ASSERT_EQ(Run("train s --levels 16,16 --seed 1 --no-progress"), 0) << out_;
  ASSERT_EQ(Run("train s --levels 16,16,4 --seed 2 --no-progress"), 0) << out_;
  for (int v : {1, 2}) {
    ASSERT_EQ(Run(absl::StrCat("export-sids s --version ", v, " --index ", dir_.File("i.json"),
                               " --codes ", dir_.File(absl::StrCat("v", v, ".npy")))),
              0)
        << out_;
  }
  const IntMatrix v1 = ReadInts(dir_.File("v1.npy"));
  const IntMatrix v2 = ReadInts(dir_.File("v2.npy"));
  ASSERT_EQ(v1.rows, 3000);
  ASSERT_EQ(v2.rows, 3000);
  ASSERT_EQ(v1.dim, 3);
  ASSERT_EQ(v2.dim, 4);

  ASSERT_EQ(Run("sid-map s --from 1 --to 2 --no-progress --out " + dir_.File("map")), 0) << out_;
  EXPECT_TRUE(Contains(out_, "3000 items from version 1 to 2: 3000 items changed")) << out_;
  const IntMatrix rows = ReadInts(dir_.File("map.npy"));
  ASSERT_EQ(rows.rows, 3000);
  ASSERT_EQ(rows.dim, 1 + 3 + 4);
  const google::protobuf::Struct map = ReadJsonObject(dir_.File("map.json"));
  EXPECT_EQ(map.fields_size(), 3000);
  for (int64_t i = 0; i < rows.rows; ++i) {
    const int64_t* row = &rows.values[i * rows.dim];
    ASSERT_EQ(row[0], i);  // item-id order; ids 0..2999
    std::vector<int32_t> old_codes, new_codes;
    for (int l = 0; l < 3; ++l) EXPECT_EQ(row[1 + l], v1.values[i * 3 + l]) << i;
    for (int l = 0; l < 4; ++l) EXPECT_EQ(row[4 + l], v2.values[i * 4 + l]) << i;
    old_codes = {static_cast<int32_t>(row[1]), static_cast<int32_t>(row[2])};
    new_codes = {static_cast<int32_t>(row[4]), static_cast<int32_t>(row[5]),
                 static_cast<int32_t>(row[6])};
    const std::string old_sid = RenderSidTokens(old_codes, static_cast<uint32_t>(row[3]));
    const std::string new_sid = RenderSidTokens(new_codes, static_cast<uint32_t>(row[7]));
    auto it = map.fields().find(old_sid);
    ASSERT_NE(it, map.fields().end()) << old_sid;
    EXPECT_EQ(it->second.string_value(), new_sid);
  }
  // The same version both sides: nothing changed.
  ASSERT_EQ(Run("sid-map s --from 2 --no-progress --out " + dir_.File("same")), 0) << out_;
  EXPECT_TRUE(Contains(out_, "3000 items from version 2 to 2: 0 items changed")) << out_;
  EXPECT_EQ(Run("sid-map s --from 7 --out " + dir_.File("x")), 1) << out_;
  EXPECT_TRUE(Contains(out_, "tokenizer version 7 of 's' is not kept")) << out_;
  EXPECT_EQ(Run("sid-map s --to 1 --out " + dir_.File("x")), 2) << out_;
  EXPECT_TRUE(Contains(out_, "--from VERSION is required")) << out_;
  EXPECT_EQ(Run("sid-map s --from 1"), 2) << out_;
  EXPECT_TRUE(Contains(out_, "--out PREFIX is required")) << out_;

  // next-codes: the root's items add up to all items; under a full code tuple, the suffixes
  // name the items export-sids gives that tuple.
  ASSERT_EQ(Run("next-codes s --version 1 --json"), 0) << out_;
  ASSERT_EQ(Run("next-codes s --version 1"), 0) << out_;
  int64_t total = 0;
  std::map<int64_t, int64_t> first_level;
  for (int64_t i = 0; i < v1.rows; ++i) ++first_level[v1.values[i * 3]];
  for (const auto& [code, items] : first_level) {
    EXPECT_TRUE(Contains(
        out_, absl::StrCat("<a_", code, ">\t", items, items == 1 ? " item\n" : " items\n")))
        << code << "\n"
        << out_;
    total += items;
  }
  EXPECT_EQ(total, 3000);
  EXPECT_TRUE(Contains(out_, absl::StrCat(first_level.size(), " next tokens at level 0"))) << out_;
  const std::string tuple = absl::StrCat("<a_", v1.values[0], "><b_", v1.values[1], ">");
  ASSERT_EQ(Run("next-codes s --version 1 \"" + tuple + "\""), 0) << out_;
  EXPECT_TRUE(Contains(out_, absl::StrCat("<c_", v1.values[2], ">\titem 0\n"))) << out_;
  EXPECT_TRUE(Contains(out_, "next suffixes at level 2")) << out_;
  ASSERT_EQ(Run(absl::StrCat("next-codes s --version 1 ", v1.values[0], ",", v1.values[1])), 0)
      << out_;
  EXPECT_TRUE(Contains(out_, "\titem 0\n")) << out_;
  EXPECT_EQ(Run("next-codes s --version 5"), 1) << out_;
  EXPECT_EQ(Run("next-codes s 3,x"), 2) << out_;
  EXPECT_TRUE(Contains(out_, "PREFIX '3,x': 'x' is not a code")) << out_;
}

TEST_F(QuantctlVersionsTest, ExportTrieAgreesWithExportSids) {
  CreateSift("s", 5000);
  ASSERT_EQ(Run("train s --levels 16,8,4 --seed 1 --no-progress"), 0) << out_;
  ASSERT_EQ(Run("export-sids s --index " + dir_.File("i.json") + " --codes " + dir_.File("c.npy")),
            0)
      << out_;
  const IntMatrix sids = ReadInts(dir_.File("c.npy"));
  ASSERT_EQ(sids.rows, 5000);
  ASSERT_EQ(sids.dim, 4);
  const std::string out = dir_.File("trie");
  ASSERT_EQ(Run("export-trie s --no-progress --out " + out), 0) << out_;
  EXPECT_TRUE(Contains(out_, "exported the trie of version 1 of 's'")) << out_;

  // Walk every root-to-leaf path of the CSR arrays: exactly the SIDs of export-sids.
  std::vector<IntMatrix> offsets, codes, counts;
  for (int t = 0; t <= 3; ++t) {
    offsets.push_back(ReadInts(absl::StrCat(out, "/offsets_", t, ".npy")));
    codes.push_back(ReadInts(absl::StrCat(out, "/codes_", t, ".npy")));
    counts.push_back(ReadInts(absl::StrCat(out, "/counts_", t, ".npy")));
  }
  const IntMatrix leaves = ReadInts(out + "/leaf_items.npy");
  ASSERT_EQ(leaves.rows, 5000);
  ASSERT_EQ(offsets[0].rows, 2);  // the root
  std::set<std::vector<int64_t>> from_trie;
  std::vector<int64_t> path;
  std::function<int64_t(int, int64_t)> walk = [&](int t, int64_t node) -> int64_t {
    int64_t items = 0;
    for (int64_t c = offsets[t].values[node]; c < offsets[t].values[node + 1]; ++c) {
      path.push_back(codes[t].values[c]);
      int64_t under = 1;
      if (t == 3) {
        std::vector<int64_t> sid = {leaves.values[c]};
        sid.insert(sid.end(), path.begin(), path.end());
        EXPECT_TRUE(from_trie.insert(sid).second);
      } else {
        under = walk(t + 1, c);
      }
      EXPECT_EQ(counts[t].values[c], under);
      items += under;
      path.pop_back();
    }
    return items;
  };
  EXPECT_EQ(walk(0, 0), 5000);
  std::set<std::vector<int64_t>> exported;
  for (int64_t i = 0; i < sids.rows; ++i) {
    std::vector<int64_t> sid = {i};
    sid.insert(sid.end(), sids.values.begin() + i * 4, sids.values.begin() + i * 4 + 4);
    exported.insert(sid);
  }
  EXPECT_EQ(from_trie, exported);

  // trie.json: every inner node, the root "" first-level codes, a full tuple its suffixes.
  const google::protobuf::Struct trie = ReadJsonObject(out + "/trie.json");
  const int64_t inner =
      offsets[0].rows - 1 + offsets[1].rows - 1 + offsets[2].rows - 1 + offsets[3].rows - 1;
  EXPECT_EQ(trie.fields_size(), inner);
  ASSERT_TRUE(trie.fields().contains(""));
  const auto& root = trie.fields().at("").list_value();
  ASSERT_EQ(root.values_size(), codes[0].rows);
  for (int i = 0; i < root.values_size(); ++i) {
    EXPECT_EQ(root.values(i).string_value(), absl::StrCat("<a_", codes[0].values[i], ">"));
  }
  const std::vector<int32_t> item0 = {static_cast<int32_t>(sids.values[0]),
                                      static_cast<int32_t>(sids.values[1]),
                                      static_cast<int32_t>(sids.values[2])};
  const std::string prefix = RenderSidTokens(item0);
  ASSERT_TRUE(trie.fields().contains(prefix)) << prefix;
  bool found = false;
  for (const auto& v : trie.fields().at(prefix).list_value().values()) {
    found |= v.string_value() == absl::StrCat("<d_", sids.values[3], ">");
  }
  EXPECT_TRUE(found) << prefix;
  const google::protobuf::Struct manifest = ReadJsonObject(out + "/manifest.json");
  EXPECT_EQ(manifest.fields().at("tokenizer_version").number_value(), 1);
  EXPECT_EQ(manifest.fields().at("levels").number_value(), 3);
  EXPECT_EQ(manifest.fields().at("items").string_value(), "5000");
  EXPECT_EQ(manifest.fields().at("codebook_sizes").list_value().values_size(), 3);

  EXPECT_EQ(Run("export-trie s"), 2) << out_;
  EXPECT_TRUE(Contains(out_, "--out DIR is required")) << out_;
  testing::WriteFile(dir_.File("afile"), "x");
  EXPECT_EQ(Run("export-trie s --no-progress --out " + dir_.File("afile")), 1) << out_;
  EXPECT_TRUE(Contains(out_, "cannot create the directory")) << out_;
}

// Export, import into a second collection with the same items: identical SIDs (nearest mode);
// and NumPy encoding the exported codebooks matches quantd's codes.
TEST_F(QuantctlVersionsTest, ExportImportRoundTripAndNumpyEncodesTheSameCodes) {
  CreateSift("a", 5000);
  ASSERT_EQ(Run("train a --levels 256,256,256 --assignment nearest --seed 7 --no-progress"), 0)
      << out_;
  ASSERT_EQ(Run("export-tokenizer a --out " + dir_.File("tok")), 0) << out_;
  EXPECT_TRUE(Contains(out_,
                       "exported tokenizer version 1 of 'a' (3 levels [256 256 256], "
                       "dimension 128)"))
      << out_;
  const google::protobuf::Struct manifest = ReadJsonObject(dir_.File("tok.json"));
  EXPECT_EQ(manifest.fields().at("dimension").number_value(), 128);
  ASSERT_EQ(Run("export-sids a --index " + dir_.File("a.json") + " --codes " + dir_.File("a.npy")),
            0)
      << out_;

  // NumPy from the exported files: every code the same, up to near-ties.
  std::string check;
  EXPECT_EQ(RunShell(absl::StrCat(QUANTD_TEST_PYTHON, " ", QUANTD_SOURCE_DIR,
                                  "/tests/numpy_encode_check.py --codebooks ", dir_.File("tok.npz"),
                                  " --vectors ", sift_, " --codes ", dir_.File("a.npy")),
                     &check),
            0)
      << check;
  EXPECT_TRUE(Contains(check, "rows 5000, levels 3")) << check;

  // Import into a collection of the same items: the same SIDs.
  CreateSift("b", 5000);
  ASSERT_EQ(Run("import-tokenizer b --npz " + dir_.File("tok.npz") + " --manifest " +
                dir_.File("tok.json") + " --assignment nearest --wait --no-progress"),
            0)
      << out_;
  EXPECT_TRUE(Contains(out_, "import_tokenizer")) << out_;
  EXPECT_TRUE(Contains(out_, "version 1 (activated")) << out_;
  ASSERT_EQ(Run("export-sids b --index " + dir_.File("b.json") + " --codes " + dir_.File("b.npy")),
            0)
      << out_;
  EXPECT_EQ(ReadText(dir_.File("a.json")), ReadText(dir_.File("b.json")));
  EXPECT_EQ(ReadText(dir_.File("a.npy")), ReadText(dir_.File("b.npy")));
  ASSERT_EQ(Run("versions b"), 0) << out_;
  EXPECT_TRUE(Contains(out_, "imported")) << out_;

  // The other layouts import-tokenizer reads give the same SIDs: level_<l> members, and one
  // L x K x d array (each import a new active version of b).
  auto exported = ReadNpz(dir_.File("tok.npz"));
  ASSERT_TRUE(exported.ok()) << exported.status();
  ASSERT_EQ(exported->size(), 3u);
  std::vector<std::vector<float>> books;
  std::vector<float> stacked;
  for (const NpyArray& a : *exported) {
    EXPECT_EQ(a.shape, (std::vector<int64_t>{256, 128})) << a.name;
    books.push_back(a.ToFloat());
    stacked.insert(stacked.end(), books.back().begin(), books.back().end());
  }
  ASSERT_TRUE(WriteNpz(dir_.File("levels.npz"),
                       {{"level_0", ElementType::kF32, {256, 128}, books[0].data()},
                        {"level_1", ElementType::kF32, {256, 128}, books[1].data()},
                        {"level_2", ElementType::kF32, {256, 128}, books[2].data()}})
                  .ok());
  ASSERT_TRUE(WriteNpz(dir_.File("stacked.npz"),
                       {{"books", ElementType::kF32, {3, 256, 128}, stacked.data()}})
                  .ok());
  for (const std::string variant : {"levels", "stacked"}) {
    ASSERT_EQ(Run("import-tokenizer b --npz " + dir_.File(variant + ".npz") +
                  " --assignment nearest --wait --no-progress"),
              0)
        << variant << ": " << out_;
    ASSERT_EQ(
        Run("export-sids b --index " + dir_.File("b.json") + " --codes " + dir_.File("b.npy")), 0)
        << out_;
    EXPECT_EQ(ReadText(dir_.File("a.npy")), ReadText(dir_.File("b.npy"))) << variant;
  }
  ASSERT_TRUE(
      WriteNpz(dir_.File("gap.npz"), {{"level_0", ElementType::kF32, {256, 128}, books[0].data()},
                                      {"level_2", ElementType::kF32, {256, 128}, books[2].data()}})
          .ok());
  EXPECT_EQ(Run("import-tokenizer b --npz " + dir_.File("gap.npz")), 1) << out_;
  EXPECT_TRUE(Contains(out_, "gap.npz: member 'level_2' does not fit the naming level_0..level_1"))
      << out_;
  ASSERT_TRUE(WriteNpz(dir_.File("mixed.npz"),
                       {{"arr_0", ElementType::kF32, {256, 128}, books[0].data()},
                        {"level_1", ElementType::kF32, {256, 128}, books[1].data()}})
                  .ok());
  EXPECT_EQ(Run("import-tokenizer b --npz " + dir_.File("mixed.npz")), 1) << out_;
  EXPECT_TRUE(Contains(out_, "member 'level_1' does not fit the naming arr_0..arr_1")) << out_;
  ASSERT_TRUE(
      WriteNpz(dir_.File("ragged.npz"), {{"arr_0", ElementType::kF32, {256, 128}, books[0].data()},
                                         {"arr_1", ElementType::kF32, {128, 256}, books[1].data()}})
          .ok());
  EXPECT_EQ(Run("import-tokenizer b --npz " + dir_.File("ragged.npz")), 1) << out_;
  EXPECT_TRUE(Contains(out_, "ragged.npz: member 'arr_1' has dimension 256, 'arr_0' has 128"))
      << out_;

  // Without --wait the job is printed and runs on; --activation never leaves the active version.
  ASSERT_EQ(Run("import-tokenizer b --npz " + dir_.File("tok.npz") + " --activation never"), 0)
      << out_;
  EXPECT_TRUE(Contains(out_, "follow it with: quantctl job ")) << out_;

  // Bad inputs, each named.
  EXPECT_EQ(Run("import-tokenizer b"), 2) << out_;
  EXPECT_TRUE(Contains(out_, "give --npz FILE (codebooks or an exported RQ-VAE) or --torch FILE"))
      << out_;
  const std::string npz = ReadText(dir_.File("tok.npz"));
  testing::WriteFile(dir_.File("cut.npz"), npz.substr(0, npz.size() / 2));
  EXPECT_EQ(Run("import-tokenizer b --npz " + dir_.File("cut.npz")), 1) << out_;
  EXPECT_TRUE(Contains(out_, dir_.File("cut.npz") + ": ")) << out_;
  EXPECT_TRUE(Contains(out_, "INVALID_ARGUMENT")) << out_;
  ASSERT_EQ(Run("create small --dim 16"), 0) << out_;
  EXPECT_EQ(Run("import-tokenizer small --npz " + dir_.File("tok.npz")), 1) << out_;
  EXPECT_TRUE(Contains(out_,
                       "tok.npz: codebooks of dimension 128, collection 'small' has "
                       "dimension 16"))
      << out_;
  testing::WriteFile(dir_.File("bad.json"), "{\"codebook_sizes\": [256, 256]}");
  EXPECT_EQ(Run("import-tokenizer b --npz " + dir_.File("tok.npz") + " --manifest " +
                dir_.File("bad.json")),
            1)
      << out_;
  EXPECT_TRUE(Contains(out_, "codebook_sizes [256, 256], but")) << out_;
  testing::WriteFile(dir_.File("junk.json"), "{\"no_such_field\": 1}");
  EXPECT_EQ(Run("import-tokenizer b --npz " + dir_.File("tok.npz") + " --manifest " +
                dir_.File("junk.json")),
            1)
      << out_;
  EXPECT_TRUE(Contains(out_, "junk.json: not a TokenizerManifest")) << out_;
  EXPECT_EQ(
      Run(absl::StrCat("import-tokenizer b --npz ", QUANTD_TEST_FIXTURE_DIR, "/npz/savez.npz")), 1)
      << out_;
  EXPECT_TRUE(Contains(out_, "savez.npz: member 'a' is not a codebook")) << out_;
  EXPECT_EQ(Run("import-tokenizer b --npz " + dir_.File("tok.npz") + " --activation maybe"), 2)
      << out_;
  EXPECT_EQ(Run("export-tokenizer a --version 9 --out " + dir_.File("x")), 1) << out_;
  EXPECT_EQ(Run("export-tokenizer a"), 2) << out_;
  EXPECT_TRUE(Contains(out_, "--out PREFIX is required")) << out_;
}

}  // namespace
}  // namespace quantd
