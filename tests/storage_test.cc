// Storage: collections and items in RocksDB, driven directly (no network).
#include "server/storage.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>
#include <set>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/residual_quantizer.h"
#include "core/semantic_id.h"
#include "gtest/gtest.h"
#include "quantd/storage/records.pb.h"
#include "quantd/v1/quantd.pb.h"
#include "server/index.h"
#include "server/keys.h"
#include "server/tokenizer.h"
#include "tests/test_support.h"

namespace quantd {
namespace {

using ::quantd::testing::TempDir;

std::vector<float> Rows(int64_t n, int64_t d, float base) {
  std::vector<float> v(static_cast<size_t>(n * d));
  for (size_t i = 0; i < v.size(); ++i) v[i] = base + static_cast<float>(i) * 0.5f;
  return v;
}

class StorageTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }
  // Creates L2 collection "c" with items 0..n-1 of dimension d (smooth values); their vectors.
  std::vector<float> CreateWithItems(int64_t n, int64_t d) {
    EXPECT_TRUE(storage_->collections().Create("c", d, Metric::kL2).ok());
    std::vector<uint64_t> ids(static_cast<size_t>(n));
    std::iota(ids.begin(), ids.end(), 0);
    std::vector<float> vectors(static_cast<size_t>(n * d));
    for (size_t i = 0; i < vectors.size(); ++i) {
      vectors[i] = static_cast<float>(std::sin(0.37 * static_cast<double>(i)) * 10);
    }
    EXPECT_TRUE(storage_->items().Upsert("c", ids, vectors).ok());
    return vectors;
  }
  void Reopen() {
    storage_.reset();
    auto opened = Storage::Open({.path = dir_.path() + "/db", .sync = true});
    ASSERT_TRUE(opened.ok()) << opened.status();
    storage_ = std::move(*opened);
  }
  TempDir dir_;
  std::unique_ptr<Storage> storage_;
};

TEST_F(StorageTest, CreateListDescribeDrop) {
  ASSERT_TRUE(storage_->collections().Create("b", 4, Metric::kCosine).ok());
  auto a = storage_->collections().Create("a", 8, Metric::kL2);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->dimension, 8);
  EXPECT_GT(a->create_time_ms, 0);
  const auto list = storage_->collections().List();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].name, "a");
  EXPECT_EQ(list[1].name, "b");
  EXPECT_EQ(list[1].metric, Metric::kCosine);

  auto dropped = storage_->items().DropCollection("a");
  ASSERT_TRUE(dropped.ok()) << dropped.status();
  EXPECT_EQ(storage_->collections().Describe("a").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(storage_->items().DropCollection("a").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(storage_->collections().List().size(), 1u);
}

TEST_F(StorageTest, RejectsBadCollections) {
  ASSERT_TRUE(storage_->collections().Create("ok", 4, Metric::kL2).ok());
  const auto code = [&](absl::string_view name, int64_t dim) {
    return storage_->collections().Create(name, dim, Metric::kL2).status().code();
  };
  EXPECT_EQ(code("ok", 4), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(code("", 4), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code("has space", 4), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code("_leading", 4), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code("slash/name", 4), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(std::string(129, 'a'), 4), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code("zero", 0), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code("huge", kMaxDimension + 1), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code("negative", -3), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(storage_->collections().Create(std::string(128, 'a'), 1, Metric::kL2).ok());
  EXPECT_TRUE(storage_->collections().Create("Mixed-1.v2_x", kMaxDimension, Metric::kL2).ok());
  const absl::Status status = storage_->collections().Create("zero", 0, Metric::kL2).status();
  EXPECT_NE(status.message().find("dimension 0"), absl::string_view::npos) << status;
  EXPECT_EQ(storage_->collections().List().size(), 3u);
}

TEST_F(StorageTest, UpsertCountsInsertsAndReplacements) {
  ASSERT_TRUE(storage_->collections().Create("c", 3, Metric::kL2).ok());
  const std::vector<uint64_t> ids = {10, 11, 12};
  auto first = storage_->items().Upsert("c", ids, Rows(3, 3, 1));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->inserted, 3u);
  EXPECT_EQ(first->item_count, 3u);

  // 12 is replaced, 13 is new, and 13 twice in one batch counts once (the later row wins).
  const std::vector<uint64_t> more = {12, 13, 13};
  std::vector<float> values = Rows(3, 3, 100);
  auto second = storage_->items().Upsert("c", more, values);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->inserted, 1u);
  EXPECT_EQ(second->item_count, 4u);

  auto got = storage_->items().Get("c", std::vector<uint64_t>{13, 12, 99, 13});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->ids, (std::vector<uint64_t>{13, 12}));
  EXPECT_EQ(got->missing, (std::vector<uint64_t>{99}));
  EXPECT_EQ(std::vector<float>(got->vectors.begin(), got->vectors.begin() + 3),
            std::vector<float>(values.begin() + 6, values.end()));
  EXPECT_EQ(std::vector<float>(got->vectors.begin() + 3, got->vectors.end()),
            std::vector<float>(values.begin(), values.begin() + 3));
}

TEST_F(StorageTest, InvalidBatchWritesNothing) {
  ASSERT_TRUE(storage_->collections().Create("c", 2, Metric::kL2).ok());
  ASSERT_TRUE(storage_->collections().Create("cos", 2, Metric::kCosine).ok());
  ASSERT_TRUE(
      storage_->items().Upsert("c", std::vector<uint64_t>{1}, std::vector<float>{1, 2}).ok());

  std::vector<float> values = {1, 2, 3, std::numeric_limits<float>::quiet_NaN()};
  auto nan = storage_->items().Upsert("c", std::vector<uint64_t>{5, 6}, values);
  EXPECT_EQ(nan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(nan.status().message().find("row 1, component 1"), absl::string_view::npos)
      << nan.status();
  values[3] = std::numeric_limits<float>::infinity();
  EXPECT_EQ(storage_->items().Upsert("c", std::vector<uint64_t>{5, 6}, values).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto wrong_dim =
      storage_->items().Upsert("c", std::vector<uint64_t>{5, 6}, std::vector<float>{1, 2, 3});
  EXPECT_EQ(wrong_dim.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(wrong_dim.status().message().find("dimension 2"), absl::string_view::npos);
  EXPECT_EQ(storage_->items().Upsert("c", {}, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(storage_->items()
                .Upsert("cos", std::vector<uint64_t>{1}, std::vector<float>{0, 0})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(storage_->items()
                .Upsert("nope", std::vector<uint64_t>{1}, std::vector<float>{0, 0})
                .status()
                .code(),
            absl::StatusCode::kNotFound);

  auto got = storage_->items().Get("c", std::vector<uint64_t>{1, 5, 6});
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->ids, (std::vector<uint64_t>{1}));
  EXPECT_EQ(storage_->collections().Describe("c")->item_count, 1u);
  EXPECT_EQ(storage_->collections().Describe("cos")->item_count, 0u);
}

TEST_F(StorageTest, DeleteCountsAndPersists) {
  ASSERT_TRUE(storage_->collections().Create("c", 2, Metric::kL2).ok());
  std::vector<uint64_t> ids(100);
  std::iota(ids.begin(), ids.end(), 0);
  ASSERT_TRUE(storage_->items().Upsert("c", ids, Rows(100, 2, 0)).ok());
  auto deleted = storage_->items().Delete("c", std::vector<uint64_t>{3, 4, 4, 500});
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_EQ(deleted->deleted, 2u);
  EXPECT_EQ(deleted->missing, 1u);
  EXPECT_EQ(deleted->item_count, 98u);
  EXPECT_EQ(storage_->items().Delete("c", {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(storage_->items().Get("c", {}).status().code(), absl::StatusCode::kInvalidArgument);

  Reopen();
  EXPECT_EQ(storage_->collections().Describe("c")->item_count, 98u);
  auto got = storage_->items().Get("c", std::vector<uint64_t>{2, 3, 4, 5});
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->ids, (std::vector<uint64_t>{2, 5}));
  EXPECT_EQ(got->missing, (std::vector<uint64_t>{3, 4}));
}

TEST_F(StorageTest, RestartKeepsEverythingBitForBit) {
  ASSERT_TRUE(storage_->collections().Create("a", 5, Metric::kInnerProduct).ok());
  ASSERT_TRUE(storage_->collections().Create("b", 1, Metric::kL2).ok());
  std::vector<uint64_t> ids = {0, 1, std::numeric_limits<uint64_t>::max(), 1ull << 40};
  std::vector<float> values = Rows(4, 5, -3);
  values[7] = -0.0f;
  values[8] = std::numeric_limits<float>::denorm_min();
  values[9] = std::numeric_limits<float>::max();
  ASSERT_TRUE(storage_->items().Upsert("a", ids, values).ok());
  const int64_t created = storage_->collections().Describe("a")->create_time_ms;

  Reopen();
  auto a = storage_->collections().Describe("a");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->item_count, 4u);
  EXPECT_EQ(a->dimension, 5);
  EXPECT_EQ(a->metric, Metric::kInnerProduct);
  EXPECT_EQ(a->create_time_ms, created);
  auto got = storage_->items().Get("a", ids);
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->ids, ids);
  ASSERT_EQ(got->vectors.size(), values.size());
  EXPECT_EQ(std::memcmp(got->vectors.data(), values.data(), values.size() * 4), 0);
  EXPECT_TRUE(std::signbit(got->vectors[7]));
}

TEST_F(StorageTest, DropThenRecreateStartsEmpty) {
  ASSERT_TRUE(storage_->collections().Create("c", 2, Metric::kL2).ok());
  const uint32_t old_id = storage_->collections().Describe("c")->id;
  ASSERT_TRUE(storage_->items().Upsert("c", std::vector<uint64_t>{1, 2}, Rows(2, 2, 0)).ok());
  auto dropped = storage_->items().DropCollection("c");
  ASSERT_TRUE(dropped.ok());
  EXPECT_EQ(*dropped, 2u);
  // Same name, other dimension: nothing of the old collection shows through, also after restart.
  ASSERT_TRUE(storage_->collections().Create("c", 3, Metric::kL2).ok());
  EXPECT_NE(storage_->collections().Describe("c")->id, old_id);
  Reopen();
  auto c = storage_->collections().Describe("c");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->dimension, 3);
  EXPECT_EQ(c->item_count, 0u);
  auto got = storage_->items().Get("c", std::vector<uint64_t>{1, 2});
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(got->ids.empty());
}

TEST_F(StorageTest, ConcurrentWritersKeepCountExact) {
  ASSERT_TRUE(storage_->collections().Create("c", 4, Metric::kL2).ok());
  constexpr int kThreads = 4;
  constexpr int kBatches = 25;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int b = 0; b < kBatches; ++b) {
        // Overlapping id ranges: every thread writes ids b*10 .. b*10+19 (+t offset of 5).
        std::vector<uint64_t> ids(20);
        std::iota(ids.begin(), ids.end(), static_cast<uint64_t>(b * 10 + t * 5));
        ASSERT_TRUE(storage_->items().Upsert("c", ids, Rows(20, 4, static_cast<float>(t))).ok());
      }
    });
  }
  for (auto& thread : threads) thread.join();
  // Distinct ids written: 0 .. (kBatches-1)*10 + (kThreads-1)*5 + 19.
  const uint64_t expected = (kBatches - 1) * 10 + (kThreads - 1) * 5 + 20;
  EXPECT_EQ(storage_->collections().Describe("c")->item_count, expected);
  Reopen();
  EXPECT_EQ(storage_->collections().Describe("c")->item_count, expected);
}

TEST_F(StorageTest, SecondOpenOfTheSameDirectoryIsRefused) {
  auto second = Storage::Open({.path = dir_.path() + "/db", .sync = true});
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(second.status().message().find("in use by another quantd"), absl::string_view::npos)
      << second.status();
}

TEST(StoreOpenTest, UnwritableDirectoryIsAnError) {
  auto opened = Storage::Open({.path = "/proc/quantd-cannot-be-here", .sync = true});
  EXPECT_FALSE(opened.ok());
}

// An index commit covers the items as they are at commit time: rows written or deleted while
// the job trained are encoded anew or left out, and the previous version served until then.
// The job's side of a tokenizer version made from the items of "c": a trained 2 x 8 quantizer,
// the snapshot's codes and fresh suffixes, written under a pending version.
struct TokenizerJobView {
  std::unique_ptr<Tokenizers::PendingVersion> pending;
  ItemSet items;
  ResidualQuantizer quantizer;
  std::vector<int32_t> codes;
};
TokenizerJobView StartTokenizerJob(Storage& storage) {
  TokenizerJobView view;
  auto pending = storage.tokenizers().BeginVersion("c", 0, /*activates=*/true);
  EXPECT_TRUE(pending.ok()) << pending.status();
  view.pending = std::move(*pending);
  auto items = storage.items().LoadItems("c");
  EXPECT_TRUE(items.ok());
  view.items = std::move(*items);
  const int64_t n = static_cast<int64_t>(view.items.ids.size());
  RqOptions options;
  options.levels.resize(2);
  for (RqLevelOptions& level : options.levels) level.k = 8;
  auto trained =
      TrainResidualQuantizer(view.items.vectors.data(), n, view.items.info.dimension, options);
  EXPECT_TRUE(trained.ok()) << trained.status();
  view.quantizer = std::move(trained->quantizer);
  view.codes = std::move(trained->codes);
  const std::vector<uint32_t> suffixes = AssignFreshSuffixes(view.codes.data(), n, 2);
  EXPECT_TRUE(storage.tokenizers()
                  .WriteVersionRows(*view.pending, 2, view.items.ids, view.codes, suffixes, {})
                  .ok());
  return view;
}

storage::TokenizerRecord TokenizerRecordFor(const ResidualQuantizer& quantizer) {
  storage::TokenizerRecord record;
  record.set_dimension(static_cast<uint32_t>(quantizer.dimension()));
  for (int64_t k : quantizer.codebook_sizes()) record.add_codebook_sizes(static_cast<uint32_t>(k));
  record.set_job_id("job-test");
  return record;
}

TEST_F(StorageTest, TokenizerCommitReassignsOnlyItemsWrittenDuringTraining) {
  constexpr int64_t kD = 8;
  constexpr int64_t kN = 600;
  const std::vector<float> vectors = CreateWithItems(kN, kD);
  TokenizerJobView job = StartTokenizerJob(*storage_);

  // Meanwhile: item 3 moves far away, item 4 is deleted, item 1000 is new, item 5 is written
  // back unchanged.
  const std::vector<float> far(kD, 500.0f);
  ASSERT_TRUE(storage_->items().Upsert("c", {3}, far).ok());
  ASSERT_TRUE(storage_->items().Delete("c", {4}).ok());
  ASSERT_TRUE(storage_->items().Upsert("c", {1000}, std::vector<float>(kD, -500.0f)).ok());
  ASSERT_TRUE(
      storage_->items()
          .Upsert("c", {5}, std::vector<float>(vectors.begin() + 5 * kD, vectors.begin() + 6 * kD))
          .ok());
  // And items 100..399 move: more than the final round takes, so a catch-up round runs first.
  std::vector<uint64_t> moved(300);
  std::iota(moved.begin(), moved.end(), 100);
  std::vector<float> moved_vectors(static_cast<size_t>(300 * kD));
  for (size_t i = 0; i < moved_vectors.size(); ++i) {
    moved_vectors[i] = static_cast<float>(std::cos(0.11 * static_cast<double>(i)) * 30);
  }
  ASSERT_TRUE(storage_->items().Upsert("c", moved, moved_vectors).ok());
  // Not visible before the commit.
  EXPECT_EQ(storage_->tokenizers().GetTokenizer("c").status().code(),
            absl::StatusCode::kFailedPrecondition);

  Tokenizers::Activation activation;
  activation.decision = "activated (test)";
  auto committed = storage_->tokenizers().CommitVersion(
      *job.pending, TokenizerRecordFor(job.quantizer), TokenizerModel{job.quantizer, nullptr},
      job.items, job.codes, activation);
  ASSERT_TRUE(committed.ok()) << committed.status();
  EXPECT_EQ(committed->version, 1u);
  EXPECT_TRUE(committed->activated);
  auto tokenizer = storage_->tokenizers().GetTokenizer("c");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  auto sids = storage_->tokenizers().ExportSids("c", **tokenizer);
  ASSERT_TRUE(sids.ok());
  ASSERT_EQ(sids->ids.size(), static_cast<size_t>(kN));  // 600 - item 4 + item 1000
  EXPECT_EQ(std::count(sids->ids.begin(), sids->ids.end(), 4u), 0);
  std::set<std::vector<int64_t>> distinct;
  for (size_t i = 0; i < sids->ids.size(); ++i) {
    const uint64_t id = sids->ids[i];
    std::vector<int32_t> expected(2);
    if (id == 3 || id == 1000) {
      // Encoded anew from its vector now.
      job.quantizer.Encode(id == 3 ? far.data() : std::vector<float>(kD, -500.0f).data(), 1,
                           expected.data());
    } else if (id >= 100 && id < 400) {
      job.quantizer.Encode(moved_vectors.data() + (id - 100) * kD, 1, expected.data());
    } else {
      expected = {job.codes[id * 2], job.codes[id * 2 + 1]};
    }
    EXPECT_EQ(sids->codes[i * 2], expected[0]) << id;
    EXPECT_EQ(sids->codes[i * 2 + 1], expected[1]) << id;
    distinct.insert({sids->codes[i * 2], sids->codes[i * 2 + 1], sids->suffixes[i]});
  }
  EXPECT_EQ(distinct.size(), sids->ids.size());  // suffixes distinct within each tuple
  // The ledger agrees with the SIDs.
  const SidLedger::Reader ledger((*tokenizer)->ledger());
  EXPECT_EQ(ledger.occupancy().items(), kN);
}

TEST_F(StorageTest, UncommittedTokenizerVersionsLeaveNoRows) {
  constexpr int64_t kD = 4;
  ASSERT_TRUE(storage_->collections().Create("c", kD, Metric::kL2).ok());
  std::vector<uint64_t> ids(64);
  std::iota(ids.begin(), ids.end(), 0);
  ASSERT_TRUE(storage_->items().Upsert("c", ids, Rows(64, kD, 1.0f)).ok());
  const auto codes_rows = [&] {
    int64_t rows = 0;
    EXPECT_TRUE(storage_->db()
                    .ScanPrefix(ColumnFamily::kCodes, keys::CollectionBegin(1),
                                [&](absl::string_view, absl::string_view) {
                                  ++rows;
                                  return absl::OkStatus();
                                })
                    .ok());
    return rows;
  };
  {
    // A job that fails after writing its rows: they go with it.
    TokenizerJobView job = StartTokenizerJob(*storage_);
    EXPECT_EQ(codes_rows(), 64);
  }
  EXPECT_EQ(codes_rows(), 0);
  // A job a crash stopped: its rows go at the next start, and its number is not reused.
  TokenizerJobView crashed = StartTokenizerJob(*storage_);
  EXPECT_EQ(codes_rows(), 64);
  crashed.pending.release();  // leaked: as if the process died here
  Reopen();
  EXPECT_EQ(codes_rows(), 0);
  TokenizerJobView next = StartTokenizerJob(*storage_);
  EXPECT_EQ(next.pending->version(), 3u);
}

TEST_F(StorageTest, IndexCommitReencodesItemsWrittenDuringTraining) {
  constexpr int64_t kD = 8;
  constexpr int64_t kN = 600;
  const std::vector<float> vectors = CreateWithItems(kN, kD);
  EXPECT_EQ(storage_->indexes().GetIndex("c").status().code(),
            absl::StatusCode::kFailedPrecondition);

  // The job's view: the items, a trained index and every item's entry.
  auto items = storage_->items().LoadItems("c");
  ASSERT_TRUE(items.ok());
  IvfPqOptions options;
  options.nlist = 4;
  options.m = 4;
  options.nbits = 4;
  auto trained = IvfPqIndex::Train(items->vectors.data(), kN, kD, options);
  ASSERT_TRUE(trained.ok()) << trained.status();
  std::vector<int32_t> lists(kN);
  std::vector<uint8_t> codes(static_cast<size_t>(kN * trained->code_size()));
  ASSERT_TRUE(trained->EncodeBatch(items->vectors, lists.data(), codes.data()).ok());

  // Meanwhile: item 3 moves far away, item 4 is deleted, item 1000 is new.
  const std::vector<float> far(kD, 500.0f);
  ASSERT_TRUE(storage_->items().Upsert("c", {3}, far).ok());
  ASSERT_TRUE(storage_->items().Delete("c", {4}).ok());
  ASSERT_TRUE(storage_->items().Upsert("c", {1000}, std::vector<float>(kD, -500.0f)).ok());

  storage::IndexRecord record;
  record.set_job_id("job-test");
  auto version =
      storage_->indexes().CommitIndex("c", record, *std::move(trained), *items, lists, codes,
                                      /*refine_codes=*/{});
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_EQ(*version, 1u);
  auto serving = storage_->indexes().GetIndex("c");
  ASSERT_TRUE(serving.ok());
  EXPECT_EQ((*serving)->index.size(), kN);  // 600 - item 4 + item 1000
  EXPECT_FALSE((*serving)->index.Contains(4));
  EXPECT_TRUE((*serving)->index.Contains(1000));
  auto near_far = storage_->indexes().Search("c", far, 1, 4, 2);
  ASSERT_TRUE(near_far.ok()) << near_far.status();
  ASSERT_EQ(near_far->neighbors[0].size(), 1u);
  EXPECT_EQ(near_far->neighbors[0][0].id, 3u);
  EXPECT_EQ(near_far->neighbors[0][0].distance, 0.0f);

  // After a reopen the same entries are loaded.
  Reopen();
  auto after = storage_->indexes().Search("c", far, 1, 4, 2);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->neighbors[0][0].id, 3u);
  auto reloaded = storage_->indexes().GetIndex("c");
  ASSERT_TRUE(reloaded.ok());
  EXPECT_EQ((*reloaded)->index.size(), kN);
  EXPECT_EQ((*reloaded)->record.job_id(), "job-test");
}

// The collection record of `name` as stored.
storage::CollectionRecord ReadRecord(const std::string& path, absl::string_view name) {
  auto db = Db::Open({.path = path, .sync = true});
  EXPECT_TRUE(db.ok()) << db.status();
  storage::CollectionRecord record;
  if (!db.ok()) return record;
  auto value = (*db)->Get(ColumnFamily::kMeta, keys::CollectionRecordKey(name), "read");
  EXPECT_TRUE(value.ok() && value->has_value());
  if (value.ok() && value->has_value()) {
    EXPECT_TRUE(record.ParseFromString(**value));
  }
  return record;
}

// Overwrites meta row `key` of the database at `path`.
void PutMeta(const std::string& path, const std::string& key, const std::string& value) {
  auto db = Db::Open({.path = path, .sync = true});
  ASSERT_TRUE(db.ok()) << db.status();
  rocksdb::WriteBatch batch;
  batch.Put((*db)->handle(ColumnFamily::kMeta), key, value);
  ASSERT_TRUE((*db)->Write(batch, "test write").ok());
}

TEST_F(StorageTest, RecordsHoldTheApiMetricValue) {
  ASSERT_TRUE(storage_->collections().Create("c", 4, Metric::kCosine).ok());
  ASSERT_TRUE(storage_->collections().Create("i", 4, Metric::kInnerProduct).ok());
  storage_.reset();
  EXPECT_EQ(ReadRecord(dir_.path() + "/db", "c").metric(), v1::METRIC_COSINE);
  EXPECT_EQ(ReadRecord(dir_.path() + "/db", "i").metric(), v1::METRIC_INNER_PRODUCT);
}

TEST_F(StorageTest, CorruptMetricInARecordIsDataLossNamingTheCollection) {
  ASSERT_TRUE(storage_->collections().Create("c", 4, Metric::kL2).ok());
  storage_.reset();
  const std::string path = dir_.path() + "/db";
  storage::CollectionRecord record = ReadRecord(path, "c");
  record.set_metric(7);
  PutMeta(path, keys::CollectionRecordKey("c"), record.SerializeAsString());
  auto reopened = Storage::Open({.path = path, .sync = true});
  ASSERT_EQ(reopened.status().code(), absl::StatusCode::kDataLoss) << reopened.status();
  EXPECT_NE(reopened.status().message().find("'c'"), std::string::npos) << reopened.status();
}

TEST_F(StorageTest, DatabaseOfANewerSchemaIsRefused) {
  storage_.reset();
  const std::string path = dir_.path() + "/db";
  PutMeta(path, keys::kSchemaVersionKey, keys::EncodeU32(keys::kSchemaVersion + 1));
  auto reopened = Storage::Open({.path = path, .sync = true});
  EXPECT_EQ(reopened.status().code(), absl::StatusCode::kFailedPrecondition) << reopened.status();
}

// tests/data/db_v0.1.0.tar.gz was written by quantd 0.1.0 (whose collection records held core's
// Metric enum value: 0 L2, 1 IP, 2 cosine) through quantctl: collections legacy_l2, legacy_ip
// and legacy_cos of 300 x 8 items each, a 8,8 tokenizer (seed 3) on legacy_cos and an IVF4
// index (seed 1) on legacy_ip. The answers below are what 0.1.0 gave.
TEST(StorageMigrationTest, OpensA010DatabaseAndConvertsItsRecords) {
  TempDir dir;
  ASSERT_EQ(std::system(absl::StrCat("tar -xzf '", QUANTD_TEST_FIXTURE_DIR,
                                     "/db_v0.1.0.tar.gz' -C '", dir.path(), "'")
                            .c_str()),
            0);
  const std::string path = dir.path() + "/db";
  for (int open = 0; open < 2; ++open) {  // the second open reads the converted records
    SCOPED_TRACE(open);
    auto storage = Storage::Open({.path = path, .sync = true});
    ASSERT_TRUE(storage.ok()) << storage.status();
    const CollectionRegistry& collections = (*storage)->collections();
    ASSERT_EQ(collections.List().size(), 3u);
    EXPECT_EQ(collections.Describe("legacy_l2")->metric, Metric::kL2);
    EXPECT_EQ(collections.Describe("legacy_ip")->metric, Metric::kInnerProduct);
    EXPECT_EQ(collections.Describe("legacy_cos")->metric, Metric::kCosine);
    EXPECT_EQ(collections.Describe("legacy_cos")->item_count, 300u);

    auto tokenizer = (*storage)->tokenizers().GetTokenizer("legacy_cos");
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    const std::vector<uint64_t> ids = {0, 1, 2};
    auto sids = (*storage)->tokenizers().GetSids("legacy_cos", **tokenizer, ids);
    ASSERT_TRUE(sids.ok()) << sids.status();
    EXPECT_EQ(sids->codes, (std::vector<int32_t>{2, 0, 4, 7, 6, 4}));
    EXPECT_EQ(sids->suffixes, (std::vector<uint32_t>{0, 0, 0}));

    auto queries = (*storage)->items().Get("legacy_ip", std::vector<uint64_t>{0, 1});
    ASSERT_TRUE(queries.ok()) << queries.status();
    auto found = (*storage)->indexes().Search("legacy_ip", queries->vectors, 3, 0, 0);
    ASSERT_TRUE(found.ok()) << found.status();
    ASSERT_EQ(found->neighbors.size(), 2u);
    const auto ids_of = [](const std::vector<IvfPqNeighbor>& neighbors) {
      std::vector<uint64_t> out;
      for (const IvfPqNeighbor& neighbor : neighbors) out.push_back(neighbor.id);
      return out;
    };
    EXPECT_EQ(ids_of(found->neighbors[0]), (std::vector<uint64_t>{0, 266, 153}));
    EXPECT_EQ(ids_of(found->neighbors[1]), (std::vector<uint64_t>{66, 198, 15}));
  }
  EXPECT_EQ(ReadRecord(path, "legacy_l2").metric(), v1::METRIC_L2);
  EXPECT_EQ(ReadRecord(path, "legacy_ip").metric(), v1::METRIC_INNER_PRODUCT);
  EXPECT_EQ(ReadRecord(path, "legacy_cos").metric(), v1::METRIC_COSINE);
}

}  // namespace
}  // namespace quantd
