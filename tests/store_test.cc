// Store: collections and items in RocksDB, driven directly (no network).
#include "server/store.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "server/index.h"
#include "tests/test_support.h"

namespace quantd {
namespace {

using ::quantd::testing::TempDir;

std::vector<float> Rows(int64_t n, int64_t d, float base) {
  std::vector<float> v(static_cast<size_t>(n * d));
  for (size_t i = 0; i < v.size(); ++i) v[i] = base + static_cast<float>(i) * 0.5f;
  return v;
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }
  void Reopen() {
    store_.reset();
    auto opened = Store::Open({.path = dir_.path() + "/db", .sync = true});
    ASSERT_TRUE(opened.ok()) << opened.status();
    store_ = std::move(*opened);
  }
  TempDir dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(StoreTest, CreateListDescribeDrop) {
  ASSERT_TRUE(store_->CreateCollection("b", 4, Metric::kCosine).ok());
  auto a = store_->CreateCollection("a", 8, Metric::kL2);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->dimension, 8);
  EXPECT_GT(a->create_time_ms, 0);
  const auto list = store_->ListCollections();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].name, "a");
  EXPECT_EQ(list[1].name, "b");
  EXPECT_EQ(list[1].metric, Metric::kCosine);

  auto dropped = store_->DropCollection("a");
  ASSERT_TRUE(dropped.ok()) << dropped.status();
  EXPECT_EQ(store_->DescribeCollection("a").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->DropCollection("a").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->ListCollections().size(), 1u);
}

TEST_F(StoreTest, RejectsBadCollections) {
  ASSERT_TRUE(store_->CreateCollection("ok", 4, Metric::kL2).ok());
  const auto code = [&](absl::string_view name, int64_t dim) {
    return store_->CreateCollection(name, dim, Metric::kL2).status().code();
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
  EXPECT_TRUE(store_->CreateCollection(std::string(128, 'a'), 1, Metric::kL2).ok());
  EXPECT_TRUE(store_->CreateCollection("Mixed-1.v2_x", kMaxDimension, Metric::kL2).ok());
  const absl::Status status = store_->CreateCollection("zero", 0, Metric::kL2).status();
  EXPECT_NE(status.message().find("dimension 0"), absl::string_view::npos) << status;
  EXPECT_EQ(store_->ListCollections().size(), 3u);
}

TEST_F(StoreTest, UpsertCountsInsertsAndReplacements) {
  ASSERT_TRUE(store_->CreateCollection("c", 3, Metric::kL2).ok());
  const std::vector<uint64_t> ids = {10, 11, 12};
  auto first = store_->Upsert("c", ids, Rows(3, 3, 1));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->inserted, 3u);
  EXPECT_EQ(first->item_count, 3u);

  // 12 is replaced, 13 is new, and 13 twice in one batch counts once (the later row wins).
  const std::vector<uint64_t> more = {12, 13, 13};
  std::vector<float> values = Rows(3, 3, 100);
  auto second = store_->Upsert("c", more, values);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->inserted, 1u);
  EXPECT_EQ(second->item_count, 4u);

  auto got = store_->Get("c", std::vector<uint64_t>{13, 12, 99, 13});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->ids, (std::vector<uint64_t>{13, 12}));
  EXPECT_EQ(got->missing, (std::vector<uint64_t>{99}));
  EXPECT_EQ(std::vector<float>(got->vectors.begin(), got->vectors.begin() + 3),
            std::vector<float>(values.begin() + 6, values.end()));
  EXPECT_EQ(std::vector<float>(got->vectors.begin() + 3, got->vectors.end()),
            std::vector<float>(values.begin(), values.begin() + 3));
}

TEST_F(StoreTest, InvalidBatchWritesNothing) {
  ASSERT_TRUE(store_->CreateCollection("c", 2, Metric::kL2).ok());
  ASSERT_TRUE(store_->CreateCollection("cos", 2, Metric::kCosine).ok());
  ASSERT_TRUE(store_->Upsert("c", std::vector<uint64_t>{1}, std::vector<float>{1, 2}).ok());

  std::vector<float> values = {1, 2, 3, std::numeric_limits<float>::quiet_NaN()};
  auto nan = store_->Upsert("c", std::vector<uint64_t>{5, 6}, values);
  EXPECT_EQ(nan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(nan.status().message().find("row 1, component 1"), absl::string_view::npos)
      << nan.status();
  values[3] = std::numeric_limits<float>::infinity();
  EXPECT_EQ(store_->Upsert("c", std::vector<uint64_t>{5, 6}, values).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto wrong_dim = store_->Upsert("c", std::vector<uint64_t>{5, 6}, std::vector<float>{1, 2, 3});
  EXPECT_EQ(wrong_dim.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(wrong_dim.status().message().find("dimension 2"), absl::string_view::npos);
  EXPECT_EQ(store_->Upsert("c", {}, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      store_->Upsert("cos", std::vector<uint64_t>{1}, std::vector<float>{0, 0}).status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      store_->Upsert("nope", std::vector<uint64_t>{1}, std::vector<float>{0, 0}).status().code(),
      absl::StatusCode::kNotFound);

  auto got = store_->Get("c", std::vector<uint64_t>{1, 5, 6});
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->ids, (std::vector<uint64_t>{1}));
  EXPECT_EQ(store_->DescribeCollection("c")->item_count, 1u);
  EXPECT_EQ(store_->DescribeCollection("cos")->item_count, 0u);
}

TEST_F(StoreTest, DeleteCountsAndPersists) {
  ASSERT_TRUE(store_->CreateCollection("c", 2, Metric::kL2).ok());
  std::vector<uint64_t> ids(100);
  std::iota(ids.begin(), ids.end(), 0);
  ASSERT_TRUE(store_->Upsert("c", ids, Rows(100, 2, 0)).ok());
  auto deleted = store_->Delete("c", std::vector<uint64_t>{3, 4, 4, 500});
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_EQ(deleted->deleted, 2u);
  EXPECT_EQ(deleted->missing, 1u);
  EXPECT_EQ(deleted->item_count, 98u);
  EXPECT_EQ(store_->Delete("c", {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Get("c", {}).status().code(), absl::StatusCode::kInvalidArgument);

  Reopen();
  EXPECT_EQ(store_->DescribeCollection("c")->item_count, 98u);
  auto got = store_->Get("c", std::vector<uint64_t>{2, 3, 4, 5});
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->ids, (std::vector<uint64_t>{2, 5}));
  EXPECT_EQ(got->missing, (std::vector<uint64_t>{3, 4}));
}

TEST_F(StoreTest, RestartKeepsEverythingBitForBit) {
  ASSERT_TRUE(store_->CreateCollection("a", 5, Metric::kInnerProduct).ok());
  ASSERT_TRUE(store_->CreateCollection("b", 1, Metric::kL2).ok());
  std::vector<uint64_t> ids = {0, 1, std::numeric_limits<uint64_t>::max(), 1ull << 40};
  std::vector<float> values = Rows(4, 5, -3);
  values[7] = -0.0f;
  values[8] = std::numeric_limits<float>::denorm_min();
  values[9] = std::numeric_limits<float>::max();
  ASSERT_TRUE(store_->Upsert("a", ids, values).ok());
  const int64_t created = store_->DescribeCollection("a")->create_time_ms;

  Reopen();
  auto a = store_->DescribeCollection("a");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->item_count, 4u);
  EXPECT_EQ(a->dimension, 5);
  EXPECT_EQ(a->metric, Metric::kInnerProduct);
  EXPECT_EQ(a->create_time_ms, created);
  auto got = store_->Get("a", ids);
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->ids, ids);
  ASSERT_EQ(got->vectors.size(), values.size());
  EXPECT_EQ(std::memcmp(got->vectors.data(), values.data(), values.size() * 4), 0);
  EXPECT_TRUE(std::signbit(got->vectors[7]));
}

TEST_F(StoreTest, DropThenRecreateStartsEmpty) {
  ASSERT_TRUE(store_->CreateCollection("c", 2, Metric::kL2).ok());
  const uint32_t old_id = store_->DescribeCollection("c")->id;
  ASSERT_TRUE(store_->Upsert("c", std::vector<uint64_t>{1, 2}, Rows(2, 2, 0)).ok());
  auto dropped = store_->DropCollection("c");
  ASSERT_TRUE(dropped.ok());
  EXPECT_EQ(*dropped, 2u);
  // Same name, other dimension: nothing of the old collection shows through, also after restart.
  ASSERT_TRUE(store_->CreateCollection("c", 3, Metric::kL2).ok());
  EXPECT_NE(store_->DescribeCollection("c")->id, old_id);
  Reopen();
  auto c = store_->DescribeCollection("c");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->dimension, 3);
  EXPECT_EQ(c->item_count, 0u);
  auto got = store_->Get("c", std::vector<uint64_t>{1, 2});
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(got->ids.empty());
}

TEST_F(StoreTest, ConcurrentWritersKeepCountExact) {
  ASSERT_TRUE(store_->CreateCollection("c", 4, Metric::kL2).ok());
  constexpr int kThreads = 4;
  constexpr int kBatches = 25;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int b = 0; b < kBatches; ++b) {
        // Overlapping id ranges: every thread writes ids b*10 .. b*10+19 (+t offset of 5).
        std::vector<uint64_t> ids(20);
        std::iota(ids.begin(), ids.end(), static_cast<uint64_t>(b * 10 + t * 5));
        ASSERT_TRUE(store_->Upsert("c", ids, Rows(20, 4, static_cast<float>(t))).ok());
      }
    });
  }
  for (auto& thread : threads) thread.join();
  // Distinct ids written: 0 .. (kBatches-1)*10 + (kThreads-1)*5 + 19.
  const uint64_t expected = (kBatches - 1) * 10 + (kThreads - 1) * 5 + 20;
  EXPECT_EQ(store_->DescribeCollection("c")->item_count, expected);
  Reopen();
  EXPECT_EQ(store_->DescribeCollection("c")->item_count, expected);
}

TEST_F(StoreTest, SecondOpenOfTheSameDirectoryIsRefused) {
  auto second = Store::Open({.path = dir_.path() + "/db", .sync = true});
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(second.status().message().find("in use by another quantd"), absl::string_view::npos)
      << second.status();
}

TEST(StoreOpenTest, UnwritableDirectoryIsAnError) {
  auto opened = Store::Open({.path = "/proc/quantd-cannot-be-here", .sync = true});
  EXPECT_FALSE(opened.ok());
}

// An index commit covers the items as they are at commit time: rows written or deleted while
// the job trained are encoded anew or left out, and the previous version served until then.
TEST_F(StoreTest, IndexCommitReencodesItemsWrittenDuringTraining) {
  constexpr int64_t kD = 8;
  constexpr int64_t kN = 600;
  ASSERT_TRUE(store_->CreateCollection("c", kD, Metric::kL2).ok());
  std::vector<uint64_t> ids(kN);
  std::iota(ids.begin(), ids.end(), 0);
  std::vector<float> vectors(static_cast<size_t>(kN * kD));
  for (size_t i = 0; i < vectors.size(); ++i) {
    vectors[i] = static_cast<float>(std::sin(0.37 * static_cast<double>(i)) * 10);
  }
  ASSERT_TRUE(store_->Upsert("c", ids, vectors).ok());
  EXPECT_EQ(store_->GetIndex("c").status().code(), absl::StatusCode::kFailedPrecondition);

  // The job's view: the items, a trained index and every item's entry.
  auto items = store_->LoadItems("c");
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
  ASSERT_TRUE(store_->Upsert("c", {3}, far).ok());
  ASSERT_TRUE(store_->Delete("c", {4}).ok());
  ASSERT_TRUE(store_->Upsert("c", {1000}, std::vector<float>(kD, -500.0f)).ok());

  storage::IndexRecord record;
  record.set_job_id("job-test");
  auto version = store_->CommitIndex("c", record, *std::move(trained), *items, lists, codes);
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_EQ(*version, 1u);
  auto serving = store_->GetIndex("c");
  ASSERT_TRUE(serving.ok());
  EXPECT_EQ((*serving)->index.size(), kN);  // 600 - item 4 + item 1000
  EXPECT_FALSE((*serving)->index.Contains(4));
  EXPECT_TRUE((*serving)->index.Contains(1000));
  auto near_far = store_->Search("c", far, 1, 4, 2);
  ASSERT_TRUE(near_far.ok()) << near_far.status();
  ASSERT_EQ(near_far->neighbors[0].size(), 1u);
  EXPECT_EQ(near_far->neighbors[0][0].id, 3u);
  EXPECT_EQ(near_far->neighbors[0][0].distance, 0.0f);

  // After a reopen the same entries are loaded.
  Reopen();
  auto after = store_->Search("c", far, 1, 4, 2);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->neighbors[0][0].id, 3u);
  auto reloaded = store_->GetIndex("c");
  ASSERT_TRUE(reloaded.ok());
  EXPECT_EQ((*reloaded)->index.size(), kN);
  EXPECT_EQ((*reloaded)->record.job_id(), "job-test");
}

}  // namespace
}  // namespace quantd
