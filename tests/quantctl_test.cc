// quantctl against a real quantd: the health command, whole-file encoding, readable times and
// counts, and errors that name the file row or the bad option; and `quantctl --help` against the
// command table.
#include <sys/wait.h>

#include <cctype>
#include <cmath>
#include <fstream>
#include <iterator>
#include <limits>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "client/attributes.h"
#include "client/commands.h"
#include "gtest/gtest.h"
#include "io/npz.h"
#include "tests/process_support.h"
#include "tests/test_support.h"

namespace quantd {
namespace {

using ::quantd::testing::DataFile;
using ::quantd::testing::Raw;
using ::quantd::testing::RunQuantctl;
using ::quantd::testing::RunShell;
using ::quantd::testing::ServerProcess;
using ::quantd::testing::TempDir;

// An .fvecs file of `rows` x `dim` from `value(row, component)`.
template <typename F>
void WriteFvecs(const std::string& path, int rows, int dim, F value) {
  std::string bytes;
  for (int r = 0; r < rows; ++r) {
    bytes += Raw<int32_t>(dim);
    for (int j = 0; j < dim; ++j) bytes += Raw<float>(value(r, j));
  }
  testing::WriteFile(path, bytes);
}

class QuantctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ =
        std::make_unique<ServerProcess>(dir_.path() + "/data", dir_.File("server.log"),
                                        std::vector<std::string>{"--health_listen=127.0.0.1:0"});
    address_ = server_->WaitReady();
    ASSERT_FALSE(address_.empty());
  }

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
  std::string address_;
};

TEST_F(QuantctlTest, HealthExitsZeroOnlyWhenServing) {
  std::string out;
  EXPECT_EQ(RunQuantctl(address_, "health", &out), 0) << out;
  EXPECT_NE(out.find("SERVING"), std::string::npos) << out;
  EXPECT_EQ(RunQuantctl(address_, "health --service quantd.v1.Quantd --json", &out), 0) << out;
  EXPECT_NE(out.find("\"status\":\"SERVING\""), std::string::npos) << out;
  EXPECT_EQ(RunQuantctl(address_, "health --service no.such.Service", &out), 1) << out;
  EXPECT_NE(out.find("NOT_FOUND"), std::string::npos) << out;
  EXPECT_EQ(RunQuantctl(address_, "health --help", &out), 0) << out;
  EXPECT_NE(out.find("Usage: quantctl health"), std::string::npos) << out;
  // The plaintext health port answers too (the Docker HEALTHCHECK asks it).
  std::smatch match;
  const std::string log = testing::ReadText(dir_.File("server.log"));
  ASSERT_TRUE(std::regex_search(log, match, std::regex(R"(health on \S+ \(port (\d+)\))"))) << log;
  EXPECT_EQ(RunQuantctl("127.0.0.1:" + match[1].str(), "health --timeout 3", &out), 0) << out;
  // No server: not healthy.
  server_->Signal(SIGKILL);
  server_->Wait();
  EXPECT_EQ(RunQuantctl(address_, "health --timeout 2", &out), 1) << out;
}

TEST_F(QuantctlTest, ListItemsPagesWithTokensVectorsAndSids) {
  const std::string sift = DataFile("sift5k/sift5k_base.fvecs");
  std::string out;
  ASSERT_EQ(RunQuantctl(address_, "create sift --dim 128", &out), 0) << out;
  ASSERT_EQ(RunQuantctl(address_, "upsert sift " + sift, &out), 0) << out;
  ASSERT_EQ(RunQuantctl(address_, "list-items sift --page-size 2000 --all", &out), 0) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 5000);
  EXPECT_TRUE(absl::StartsWith(out, "0\n1\n2\n")) << out.substr(0, 50);
  ASSERT_EQ(RunQuantctl(address_, "list-items sift --page-size 2 --with-vectors", &out), 0) << out;
  std::smatch match;
  ASSERT_TRUE(std::regex_search(out, match, std::regex("next page: --page-token (\\S+)"))) << out;
  const std::string token = match[1].str();
  EXPECT_NE(out.find("1\t[17, 8, 3, 7, 24, 11, 5, 14, ...]"), std::string::npos) << out;
  // Without a tokenizer --with-sids fails; after training it shows the SIDs.
  EXPECT_EQ(RunQuantctl(address_, "list-items sift --with-sids", &out), 1) << out;
  EXPECT_NE(out.find("FAILED_PRECONDITION"), std::string::npos) << out;
  ASSERT_EQ(RunQuantctl(address_, "train sift --levels 16,16 --seed 1", &out), 0) << out;
  ASSERT_EQ(RunQuantctl(address_, "list-items sift --page-size 2 --with-sids --page-token " + token,
                        &out),
            0)
      << out;
  EXPECT_TRUE(absl::StartsWith(out, "2\t<a_")) << out;
  EXPECT_EQ(RunQuantctl(address_, "list-items sift --page-token AAAA", &out), 1) << out;
  EXPECT_NE(out.find("page_token is not a page token"), std::string::npos) << out;
  EXPECT_EQ(RunQuantctl(address_, "list-items sift --version 1", &out), 2) << out;
}

TEST_F(QuantctlTest, SearchFiltersLikeAndPrefix) {
  const std::string sift = DataFile("sift5k/sift5k_base.fvecs");
  const std::string queries = DataFile("sift5k/sift5k_query.fvecs");
  std::string out;
  ASSERT_EQ(RunQuantctl(address_, "create sift --dim 128", &out), 0) << out;
  ASSERT_EQ(RunQuantctl(address_, "upsert sift " + sift, &out), 0) << out;
  ASSERT_EQ(RunQuantctl(address_, "train-index sift --seed 1", &out), 0) << out;
  ASSERT_EQ(RunQuantctl(address_, "train sift --levels 16,16 --seed 1", &out), 0) << out;
  // The ids of every "id:distance" pair printed.
  auto ids_in = [](const std::string& text) {
    std::set<uint64_t> ids;
    const std::regex pair(R"((\d+):[-0-9.e+]+)");
    for (auto it = std::sregex_iterator(text.begin(), text.end(), pair);
         it != std::sregex_iterator(); ++it) {
      ids.insert(std::stoull((*it)[1].str()));
    }
    return ids;
  };
  // --allow from a file (unsorted, with a duplicate: quantctl sorts) and as a list.
  testing::WriteFile(dir_.File("allow.txt"), "42\n7\n4000\n7\n");
  ASSERT_EQ(RunQuantctl(address_,
                        "search sift --queries " + queries + " --max-rows 2 --allow " +
                            dir_.File("allow.txt"),
                        &out),
            0)
      << out;
  EXPECT_EQ(ids_in(out), (std::set<uint64_t>{7, 42, 4000})) << out;
  ASSERT_EQ(
      RunQuantctl(address_,
                  "search sift --queries " + queries + " --max-rows 1 --allow 9,10 --json", &out),
      0)
      << out;
  EXPECT_NE(out.find("\"exact\":true"), std::string::npos) << out;
  // --deny: never the denied ids.
  ASSERT_EQ(RunQuantctl(address_, "search sift --queries " + queries + " --max-rows 1", &out), 0);
  const std::set<uint64_t> plain = ids_in(out);
  std::string denied;
  for (uint64_t id : plain) {
    if (!denied.empty()) denied += ',';
    denied += std::to_string(id);
  }
  ASSERT_EQ(
      RunQuantctl(address_, "search sift --queries " + queries + " --max-rows 1 --deny " + denied,
                  &out),
      0)
      << out;
  for (uint64_t id : ids_in(out)) EXPECT_FALSE(plain.contains(id)) << id;
  EXPECT_EQ(ids_in(out).size(), 10u) << out;
  // --like: the items themselves left out unless --include-self.
  ASSERT_EQ(RunQuantctl(address_, "search sift --like 3,5 --refine 10", &out), 0) << out;
  EXPECT_NE(out.find("like 3: "), std::string::npos) << out;
  EXPECT_EQ(out.find("like 3: 3:"), std::string::npos) << out;
  ASSERT_EQ(RunQuantctl(address_, "search sift --like 3 --refine 10 --include-self", &out), 0)
      << out;
  EXPECT_NE(out.find("like 3: 3:0 "), std::string::npos) << out;
  // --prefix: every result under it (the SID of each from encode).
  ASSERT_EQ(RunQuantctl(address_, "search sift --like 3 --prefix \"<a_2>\"", &out), 0) << out;
  const std::set<uint64_t> under = ids_in(out);
  ASSERT_FALSE(under.empty()) << out;
  std::string list;
  for (uint64_t id : under) {
    list += ' ';
    list += std::to_string(id);
  }
  ASSERT_EQ(RunQuantctl(address_, "encode sift" + list, &out), 0) << out;
  size_t tabs = 0;
  for (size_t at = out.find('\t'); at != std::string::npos; at = out.find('\t', at + 1)) {
    EXPECT_EQ(out.compare(at + 1, 5, "<a_2>"), 0) << out;
    ++tabs;
  }
  EXPECT_EQ(tabs, under.size()) << out;
  // Errors: the server's, naming the field; quantctl's own usage errors exit 2.
  EXPECT_EQ(RunQuantctl(address_, "search sift --like 99999", &out), 1) << out;
  EXPECT_NE(out.find("like_ids[0] = 99999"), std::string::npos) << out;
  EXPECT_EQ(RunQuantctl(address_, "search sift --like 3 --prefix 1,2,3", &out), 1) << out;
  EXPECT_NE(out.find("sid_prefix has 3 codes"), std::string::npos) << out;
  EXPECT_EQ(RunQuantctl(address_, "search sift --like 3 --allow 1 --deny 2", &out), 2) << out;
  EXPECT_EQ(RunQuantctl(address_, "search sift", &out), 2) << out;
}

TEST_F(QuantctlTest, AttributesUploadedShownAndSearchedWithWhere) {
  const std::string sift = DataFile("sift5k/sift5k_base.fvecs");
  const std::string queries = DataFile("sift5k/sift5k_query.fvecs");
  std::string lines;
  for (int r = 0; r < 5000; ++r) {
    lines += r == 1   ? "\n"  // row 1: none
             : r == 2 ? "{\"genre\": \"a, \\\"b\\\"\", \"year\": -3}\n"
                      : "{\"genre\": \"g" + std::to_string(r % 10) +
                            "\", \"year\": " + std::to_string(1900 + r % 100) + "}\n";
  }
  testing::WriteFile(dir_.File("attrs.jsonl"), lines);
  std::string out;
  ASSERT_EQ(RunQuantctl(address_, "create sift --dim 128", &out), 0) << out;
  ASSERT_EQ(RunQuantctl(address_,
                        "upsert sift " + sift + " --attributes " + dir_.File("attrs.jsonl"), &out),
            0)
      << out;
  ASSERT_EQ(RunQuantctl(address_, "get sift 0 1 2", &out), 0) << out;
  EXPECT_NE(out.find("(128 values)\t{genre=\"g0\", year=1900}\n"), std::string::npos) << out;
  EXPECT_NE(out.find("(128 values)\n"), std::string::npos) << out;  // item 1: none
  EXPECT_NE(out.find("{genre=\"a, \\\"b\\\"\", year=-3}"), std::string::npos) << out;
  ASSERT_EQ(RunQuantctl(address_, "list-items sift --page-size 2 --with-attributes", &out), 0)
      << out;
  EXPECT_TRUE(absl::StartsWith(out, "0\t{genre=\"g0\", year=1900}\n1\t{}\n")) << out;
  ASSERT_EQ(RunQuantctl(address_, "stats sift", &out), 0) << out;
  EXPECT_NE(out.find("attribute genre (string): 4999 items, 11 distinct values"), std::string::npos)
      << out;
  EXPECT_NE(out.find("attribute year (int): 4999 items, 101 distinct values"), std::string::npos)
      << out;
  // --where: string and int equality, a range with an open bound, a quoted string.
  ASSERT_EQ(RunQuantctl(address_, "train-index sift --seed 1", &out), 0) << out;
  const std::regex pair(R"((\d+):[-0-9.e+]+)");
  auto ids_in = [&](const std::string& text) {
    std::set<uint64_t> ids;
    for (auto it = std::sregex_iterator(text.begin(), text.end(), pair);
         it != std::sregex_iterator(); ++it) {
      ids.insert(std::stoull((*it)[1].str()));
    }
    return ids;
  };
  ASSERT_EQ(
      RunQuantctl(address_,
                  "search sift --queries " + queries + " --max-rows 3 --where genre=g3,year=..1949",
                  &out),
      0)
      << out;
  ASSERT_EQ(ids_in(out).size() >= 10, true) << out;
  for (uint64_t id : ids_in(out)) {
    EXPECT_EQ(id % 10, 3u) << id;
    EXPECT_LT(id % 100, 50u) << id;
  }
  ASSERT_EQ(RunQuantctl(address_, "search sift --like 0 --where 'genre=\"a, \\\"b\\\"\"'", &out), 0)
      << out;
  EXPECT_EQ(ids_in(out), (std::set<uint64_t>{2})) << out;
  // Errors: quantctl's own (exit 2) and the server's naming the condition (exit 1).
  EXPECT_EQ(RunQuantctl(address_, "search sift --like 0 --where genre", &out), 2) << out;
  EXPECT_NE(out.find("--where condition 1 'genre' is not KEY=VALUE"), std::string::npos) << out;
  EXPECT_EQ(RunQuantctl(address_, "search sift --like 0 --where year=g1", &out), 1) << out;
  EXPECT_NE(out.find("where[0]: key 'year' is int"), std::string::npos) << out;
  testing::WriteFile(dir_.File("bad.jsonl"), "{}\n{\"genre\": 1.5}\n");
  EXPECT_EQ(
      RunQuantctl(address_,
                  "upsert sift " + sift + " --max-rows 2 --attributes " + dir_.File("bad.jsonl"),
                  &out),
      1)
      << out;
  EXPECT_NE(out.find("bad.jsonl line 2: key 'genre' has 1.5"), std::string::npos) << out;
  testing::WriteFile(dir_.File("short.jsonl"), "{}\n{\"genre\": \"x\"}\n");
  EXPECT_EQ(RunQuantctl(address_,
                        "upsert sift " + sift + " --attributes " + dir_.File("short.jsonl"), &out),
            1)
      << out;
  EXPECT_NE(out.find("has 2 lines for 5000 rows"), std::string::npos) << out;
}

TEST(QuantctlWhereTest, ParsesConditionsAndNamesTheBadOne) {
  auto where = ParseWhere("genre=jazz, year=1959,n=-5..5,m=..7,k=3..,s=\"1..2, x\",e=\"\"");
  ASSERT_TRUE(where.ok()) << where.status();
  ASSERT_EQ(where->size(), 7u);
  EXPECT_EQ((*where)[0].key(), "genre");
  EXPECT_EQ((*where)[0].equals_string(), "jazz");
  EXPECT_EQ((*where)[1].key(), "year");
  EXPECT_EQ((*where)[1].equals_int(), 1959);
  EXPECT_EQ((*where)[2].range().min(), -5);
  EXPECT_EQ((*where)[2].range().max(), 5);
  EXPECT_FALSE((*where)[3].range().has_min());
  EXPECT_EQ((*where)[3].range().max(), 7);
  EXPECT_EQ((*where)[4].range().min(), 3);
  EXPECT_FALSE((*where)[4].range().has_max());
  EXPECT_EQ((*where)[5].equals_string(), "1..2, x");
  EXPECT_TRUE((*where)[6].has_equals_string());
  EXPECT_EQ((*where)[6].equals_string(), "");
  for (const auto& [text, words] : std::vector<std::pair<std::string, std::string>>{
           {"genre", "condition 1 'genre' is not KEY=VALUE"},
           {"a=1,b", "condition 2 'b'"},
           {"a=", "condition 1 has no value"},
           {"a=..", "a range needs a bound"},
           {"a=1..x", "range bound 'x' is not an integer"},
           {"a=\"x", "no closing"},
           {"a=\"x\"y", "expected ','"},
       }) {
    auto bad = ParseWhere(text);
    ASSERT_FALSE(bad.ok()) << text;
    EXPECT_NE(bad.status().message().find(words), std::string::npos) << bad.status();
  }
}

TEST_F(QuantctlTest, TrainIndexLayoutAndItsDecision) {
  std::string out;
  ASSERT_EQ(RunQuantctl(address_, "create sift --dim 128", &out), 0) << out;
  ASSERT_EQ(RunQuantctl(address_, "upsert sift " + DataFile("sift5k/sift5k_base.fvecs"), &out), 0)
      << out;
  // The default for 5000 items is plain; the job line says so and why.
  ASSERT_EQ(RunQuantctl(address_, "train-index sift --seed 1 --no-progress", &out), 0) << out;
  EXPECT_NE(out.find("plain, m 32 x 8 bit, 40 B a vector"), std::string::npos) << out;
  EXPECT_NE(out.find("plain layout: 5000 items < 200000"), std::string::npos) << out;
  ASSERT_EQ(RunQuantctl(address_, "train-index sift --layout fast-scan --no-progress", &out), 0)
      << out;
  EXPECT_NE(out.find("fast-scan, m 64 x 4 bit, 168 B a vector"), std::string::npos) << out;
  ASSERT_EQ(RunQuantctl(address_, "stats sift", &out), 0) << out;
  EXPECT_NE(out.find("IVF128,PQ64x4fs+SQ8 on 5000 items (168 bytes/vector"), std::string::npos)
      << out;
  EXPECT_NE(out.find("  memory (MiB): codes "), std::string::npos) << out;
  EXPECT_NE(out.find(", refine codes 0."), std::string::npos) << out;  // 0.61 MiB and up
  // Refine from the SQ8 codes, or exactly from the stored vectors.
  const std::string queries = DataFile("sift5k/sift5k_query.fvecs");
  ASSERT_EQ(
      RunQuantctl(address_, "search sift --queries " + queries + " --max-rows 1 --refine 4", &out),
      0)
      << out;
  ASSERT_EQ(
      RunQuantctl(address_,
                  "search sift --queries " + queries + " --max-rows 1 --refine 4 --refine-exact",
                  &out),
      0)
      << out;
  ASSERT_EQ(RunQuantctl(address_, "train-index sift --layout fast-scan --refine-codes none", &out),
            0)
      << out;
  EXPECT_NE(out.find("fast-scan, m 64 x 4 bit, 40 B a vector"), std::string::npos) << out;
  EXPECT_EQ(RunQuantctl(address_, "train-index sift --refine-codes fp16", &out), 2) << out;
  EXPECT_NE(out.find("--refine-codes 'fp16' is not sq8 or none"), std::string::npos) << out;
  EXPECT_EQ(RunQuantctl(address_, "train-index sift --layout sideways", &out), 2) << out;
  EXPECT_NE(out.find("--layout 'sideways' is not plain or fast-scan"), std::string::npos) << out;
  EXPECT_EQ(RunQuantctl(address_, "train-index sift --layout fast-scan --nbits 8", &out), 1) << out;
  EXPECT_NE(out.find("INDEX_LAYOUT_FAST_SCAN needs nbits 4 (got 8)"), std::string::npos) << out;
}

TEST_F(QuantctlTest, EncodeVectorsEncodesTheWholeFileInBatches) {
  const std::string sift = DataFile("sift5k/sift5k_base.fvecs");
  std::string out;
  ASSERT_EQ(RunQuantctl(address_, "create sift --dim 128", &out), 0) << out;
  ASSERT_EQ(RunQuantctl(address_, "upsert sift " + sift, &out), 0) << out;
  ASSERT_EQ(RunQuantctl(address_, "train sift --levels 16,16 --seed 1", &out), 0) << out;
  // 5000 rows: more than one request (about 1 MiB = 2016 rows each), every row answered.
  ASSERT_EQ(RunQuantctl(address_, "encode sift --vectors " + sift, &out), 0) << out.substr(0, 500);
  EXPECT_NE(out.find("\nrow 4999\t<a_"), std::string::npos) << out.substr(out.size() - 300);
  EXPECT_EQ(out.find("row 5000"), std::string::npos);
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 5000);
  ASSERT_EQ(
      RunQuantctl(address_, "encode sift --vectors " + sift + " --batch-rows 700 --json", &out), 0)
      << out.substr(0, 500);
  size_t encoded = 0;
  for (size_t at = out.find("\"items_with_codes\""); at != std::string::npos;
       at = out.find("\"items_with_codes\"", at + 1)) {
    ++encoded;
  }
  EXPECT_EQ(encoded, 5000u);
  EXPECT_EQ(RunQuantctl(address_, "encode sift --vectors " + sift + " --max-rows 3", &out), 0);
  EXPECT_NE(out.find("row 2\t"), std::string::npos) << out;
  EXPECT_EQ(out.find("row 3\t"), std::string::npos) << out;
  EXPECT_EQ(RunQuantctl(address_, "encode --help", &out), 0) << out;
  EXPECT_NE(out.find("--max-rows N"), std::string::npos) << out;
}

TEST_F(QuantctlTest, TrainOptionsCapacityAssignmentAndDriftInStats) {
  const std::string sift = DataFile("sift5k/sift5k_base.fvecs");
  std::string out;
  ASSERT_EQ(RunQuantctl(address_, "create sift --dim 128", &out), 0) << out;
  ASSERT_EQ(RunQuantctl(address_, "upsert sift " + sift, &out), 0) << out;
  // Bad options: named by quantctl (usage, exit 2) or by the server (exit 1), nothing started.
  EXPECT_EQ(RunQuantctl(address_, "train sift --assignment fastest", &out), 2) << out;
  EXPECT_NE(out.find("--assignment 'fastest': expected nearest or capacity"), std::string::npos)
      << out;
  EXPECT_EQ(RunQuantctl(address_, "train sift --balanced-levels 0,2", &out), 2) << out;
  EXPECT_EQ(RunQuantctl(address_, "train sift --balanced --beam-width 0", &out), 1) << out;
  EXPECT_NE(out.find("beam_width 0 is outside 1..64"), std::string::npos) << out;
  EXPECT_EQ(RunQuantctl(address_, "jobs sift", &out), 0) << out;
  EXPECT_EQ(out.find("job-"), std::string::npos) << out;

  // 16 x 16 tuples for 5000 items with a cap of 1: most tuples are full, so new vectors
  // overflow and the output names their nearest codes.
  ASSERT_EQ(RunQuantctl(address_,
                        "train sift --levels 16,16 --balanced --suffix-cap 1 --beam-width 8 "
                        "--restarts 2 --tolerance 0 --iterations 5 --seed 1 --no-progress",
                        &out),
            0)
      << out;
  ASSERT_EQ(RunQuantctl(address_, "stats sift", &out), 0) << out;
  EXPECT_NE(out.find("(tolerance 0, restarts 2)"), std::string::npos) << out;
  EXPECT_NE(out.find("assignment: capacity, beam width 8, suffix cap 1;"), std::string::npos)
      << out;
  EXPECT_NE(out.find("drift: 0 items assigned since training"), std::string::npos) << out;
  EXPECT_NE(out.find("retrain not needed"), std::string::npos) << out;
  ASSERT_EQ(RunQuantctl(address_, "encode sift --vectors " + sift + " --max-rows 5", &out), 0)
      << out;
  EXPECT_NE(out.find("\terror "), std::string::npos) << out;
  EXPECT_NE(out.find("\toverflow from nearest <a_"), std::string::npos) << out;

  // 5000 new items (twice the items at training): retraining is advised.
  ASSERT_EQ(
      RunQuantctl(address_, "upsert sift " + sift + " --id-offset 100000 --no-progress", &out), 0)
      << out;
  ASSERT_EQ(RunQuantctl(address_, "stats sift", &out), 0) << out;
  EXPECT_NE(out.find("drift: 5000 items assigned since training"), std::string::npos) << out;
  EXPECT_NE(out.find("retrain recommended: "), std::string::npos) << out;
  EXPECT_NE(out.find("grew 2.00x since training"), std::string::npos) << out;
}

TEST_F(QuantctlTest, RqVaeTrainStatsExportAndImport) {
  const std::string beauty = DataFile("sasrec/Beauty-32d-sasrec.npy");
  std::string out;
  ASSERT_EQ(RunQuantctl(address_, "create beauty --dim 32", &out), 0) << out;
  ASSERT_EQ(RunQuantctl(address_, "upsert beauty " + beauty + " --max-rows 1500", &out), 0) << out;
  // RQ-VAE options without the method, and a bad JSON, are usage errors; nothing starts.
  EXPECT_EQ(RunQuantctl(address_, "train beauty --epochs 3", &out), 2) << out;
  EXPECT_NE(out.find("need --method rq-vae"), std::string::npos) << out;
  EXPECT_EQ(RunQuantctl(address_, "train beauty --method rq-vae --rqvae '{\"epoch\": 3}'", &out), 2)
      << out;
  EXPECT_NE(out.find("--rqvae is not RqVaeOptions JSON"), std::string::npos) << out;
  EXPECT_EQ(RunQuantctl(address_, "train beauty --method rq-vae --e-dim 64", &out), 1) << out;
  EXPECT_NE(out.find("rqvae.e_dim 64 exceeds the collection's dimension 32"), std::string::npos)
      << out;

  ASSERT_EQ(RunQuantctl(address_,
                        "train beauty --method rq-vae --levels 16,16 --layers 32 --e-dim 8 "
                        "--epochs 4 --batch-size 256 --lr 2e-3 --rqvae '{\"kmeansIters\": 10}' "
                        "--no-progress",
                        &out),
            0)
      << out;
  ASSERT_EQ(RunQuantctl(address_, "stats beauty", &out), 0) << out;
  EXPECT_NE(out.find("(RQ-VAE, trained): 2 levels [16 16], layers [32], e_dim 8"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("4 epochs"), std::string::npos) << out;
  EXPECT_NE(out.find("index generation (INDEX_GENERATION_EXACT_FREE_CODES): collisions "),
            std::string::npos)
      << out;

  // Export writes every tensor by its PyTorch name; importing it back gives the same SIDs.
  const std::string prefix = dir_.path() + "/vae";
  ASSERT_EQ(RunQuantctl(address_, "export-tokenizer beauty --out " + prefix, &out), 0) << out;
  EXPECT_NE(out.find("exported RQ-VAE tokenizer version 1"), std::string::npos) << out;
  auto arrays = ReadNpz(prefix + ".npz");
  ASSERT_TRUE(arrays.ok()) << arrays.status();
  std::set<std::string> names;
  for (const NpyArray& array : *arrays) names.insert(array.name);
  EXPECT_TRUE(names.contains("encoder.mlp_layers.1.weight"));
  EXPECT_TRUE(names.contains("rq.vq_layers.1.embedding.weight"));
  EXPECT_EQ(RunQuantctl(address_, "import-tokenizer beauty --npz " + prefix + ".npz", &out), 2)
      << out;
  EXPECT_NE(out.find("holds an RQ-VAE: give --manifest"), std::string::npos) << out;
  ASSERT_EQ(RunQuantctl(address_, "export-sids beauty --index " + dir_.path() + "/v1.json", &out),
            0)
      << out;
  ASSERT_EQ(RunQuantctl(address_,
                        "import-tokenizer beauty --npz " + prefix + ".npz --manifest " + prefix +
                            ".json --wait --no-progress",
                        &out),
            0)
      << out;
  ASSERT_EQ(RunQuantctl(address_,
                        "export-sids beauty --version 2 --index " + dir_.path() + "/v2.json", &out),
            0)
      << out;
  const auto text = [](const std::string& path) {
    std::ifstream in(path);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  EXPECT_FALSE(text(dir_.path() + "/v1.json").empty());
  EXPECT_EQ(text(dir_.path() + "/v1.json"), text(dir_.path() + "/v2.json"));

  // A PyTorch checkpoint of the seed pipeline (a 32-wide model, as Beauty) becomes version 3.
  const std::string torch = std::string(QUANTD_TEST_FIXTURE_DIR) + "/torch/rqvae_bn.pth";
  EXPECT_EQ(RunQuantctl(address_, "import-tokenizer beauty --torch " + torch + " --npz x", &out), 2)
      << out;
  ASSERT_EQ(RunQuantctl(address_, "import-tokenizer beauty --torch " + torch + " --wait", &out), 0)
      << out;
  ASSERT_EQ(RunQuantctl(address_, "stats beauty", &out), 0) << out;
  EXPECT_NE(out.find("tokenizer version 3 (RQ-VAE, torch_checkpoint): 3 levels [16 16 16]"),
            std::string::npos)
      << out;
  EXPECT_EQ(
      RunQuantctl(address_, "import-tokenizer beauty --torch " + dir_.path() + "/v1.json", &out), 1)
      << out;
  EXPECT_NE(out.find("torch checkpoint: "), std::string::npos) << out;
}

TEST_F(QuantctlTest, ReadableTimesAndCountsAndErrorsNamingTheFileRowAndTheOption) {
  std::string out;
  ASSERT_EQ(RunQuantctl(address_, "create tiny --dim 4", &out), 0) << out;
  ASSERT_EQ(RunQuantctl(address_, "describe tiny", &out), 0) << out;
  EXPECT_TRUE(std::regex_search(out, std::regex(R"(created: +20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ\n)")))
      << out;
  EXPECT_EQ(out.find("ms since epoch"), std::string::npos) << out;

  // One item far from two others: after a 2-code tokenizer, its code is held by 1 item.
  WriteFvecs(dir_.File("three.fvecs"), 3, 4,
             [](int r, int) { return r == 0 ? 0.0f : 10.0f + 0.1f * static_cast<float>(r); });
  ASSERT_EQ(RunQuantctl(address_, "upsert tiny " + dir_.File("three.fvecs"), &out), 0) << out;
  ASSERT_EQ(RunQuantctl(address_, "train tiny --levels 2 --seed 1", &out), 0) << out;
  WriteFvecs(dir_.File("one.fvecs"), 1, 4, [](int, int) { return 0.0f; });
  ASSERT_EQ(RunQuantctl(address_, "encode tiny --vectors " + dir_.File("one.fvecs"), &out), 0)
      << out;
  EXPECT_NE(out.find("taken by 1 item\n"), std::string::npos) << out;

  // A NaN at row 2500 of a 3000-row file sent in batches of 1000: the error names file row 2500.
  WriteFvecs(dir_.File("nan.fvecs"), 3000, 4, [](int r, int j) {
    return r == 2500 && j == 2 ? std::numeric_limits<float>::quiet_NaN() : 1.0f;
  });
  EXPECT_EQ(
      RunQuantctl(address_, "upsert tiny " + dir_.File("nan.fvecs") + " --batch-rows 1000", &out),
      1);
  EXPECT_NE(out.find("nan.fvecs row 2500: "), std::string::npos) << out;
  EXPECT_NE(out.find("batch 2: vectors[row 500, component 2]"), std::string::npos) << out;

  // An unknown option before the command is named, not taken for the command's value.
  EXPECT_EQ(RunShell(std::string(QUANTCTL_BINARY) + " --frobnicate list", &out), 2);
  EXPECT_NE(out.find("unknown option --frobnicate"), std::string::npos) << out;
}

// The overview of `quantctl --help` is the command table: every command of the table has a line
// in it, and every command a line names runs (its own --help exits 0 with its usage).
TEST(QuantctlHelpTest, OverviewNamesEveryCommandOfTheTableAndEachDispatches) {
  std::string overview;
  ASSERT_EQ(RunShell(std::string(QUANTCTL_BINARY) + " --help", &overview), 0) << overview;
  EXPECT_EQ(overview, quantctl::UsageText());
  // Command lines: two spaces and a lower-case name, from "Commands:" to "Global options:".
  std::set<std::string> named;
  std::istringstream lines(overview);
  bool in_commands = false;
  for (std::string line; std::getline(lines, line);) {
    if (line == "Commands:") in_commands = true;
    if (line == "Global options:") in_commands = false;
    if (in_commands && line.size() > 2 && line.rfind("  ", 0) == 0 &&
        std::islower(static_cast<unsigned char>(line[2]))) {
      EXPECT_TRUE(named.insert(line.substr(2, line.find(' ', 2) - 2)).second) << line;
    }
  }
  std::set<std::string> table;
  for (const quantctl::Command& command : quantctl::Commands()) {
    EXPECT_TRUE(table.insert(command.name).second) << "twice in the table: " << command.name;
    EXPECT_TRUE(named.contains(command.name)) << command.name << " missing from\n" << overview;
  }
  for (const std::string& name : named) {
    EXPECT_TRUE(table.contains(name)) << name << " is in --help but not in the table";
    std::string help;
    EXPECT_EQ(RunShell(std::string(QUANTCTL_BINARY) + " " + name + " --help", &help), 0) << help;
    const std::string usage = "Usage: quantctl " + name;
    EXPECT_TRUE(help.rfind(usage + " ", 0) == 0 || help.rfind(usage + "\n", 0) == 0) << help;
  }
  EXPECT_GE(named.size(), 20u);
}

}  // namespace
}  // namespace quantd
