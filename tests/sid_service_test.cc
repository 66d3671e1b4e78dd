// The SID layer over a real Storage: Encode's and Lookup's rules, and the figure cache that
// GetStats and the metrics collector share (one scan while the counts stay the same; GetStats
// sees a changed item count at once, a scrape within a minute may not).
#include "server/sid_service.h"

#include <memory>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "server/jobs.h"
#include "server/sid_ledger.h"
#include "server/storage.h"
#include "server/tokenizer_job.h"
#include "tests/test_support.h"

namespace quantd {
namespace {

using ::quantd::testing::TempDir;

class SidServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto opened = Storage::Open({.path = dir_.path() + "/db", .sync = false});
    ASSERT_TRUE(opened.ok()) << opened.status();
    storage_ = std::move(*opened);
    sids_ = std::make_unique<SidService>(storage_.get());
    ASSERT_TRUE(storage_->collections().Create("c", 4, Metric::kL2).ok());
    const std::vector<uint64_t> ids = testing::FirstIds(500);
    const std::vector<float> vectors = testing::PatternRows(500, 4);
    ASSERT_TRUE(storage_->items().Upsert("c", ids, vectors).ok());
    auto jobs = JobManager::Create(storage_.get());
    ASSERT_TRUE(jobs.ok()) << jobs.status();
    v1::TrainTokenizerRequest request;
    request.set_collection("c");
    request.add_codebook_sizes(8);
    request.add_codebook_sizes(4);
    auto job = (*jobs)->Start(std::make_unique<TokenizerJob>(request));
    ASSERT_TRUE(job.ok()) << job.status();
    for (int i = 0; i < 6000; ++i) {
      if ((*jobs)->Get(job->id())->state() == v1::JOB_STATE_SUCCEEDED) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_EQ((*jobs)->Get(job->id())->state(), v1::JOB_STATE_SUCCEEDED);
  }

  std::shared_ptr<const SidService::Figures> Figures(SidService::Freshness freshness) {
    auto info = storage_->collections().Describe("c");
    auto tokenizer = storage_->tokenizers().GetTokenizer("c");
    EXPECT_TRUE(info.ok() && tokenizer.ok());
    auto figures = sids_->GetFigures(*info, **tokenizer, freshness);
    EXPECT_TRUE(figures.ok()) << figures.status();
    return figures.ok() ? *figures : nullptr;
  }

  TempDir dir_;
  std::unique_ptr<Storage> storage_;
  std::unique_ptr<SidService> sids_;
};

TEST_F(SidServiceTest, EncodeAndLookupRules) {
  const SidService& sids = *sids_;
  auto encoded = sids.Encode("c", std::vector<uint64_t>{1, 2, 999}, std::vector<float>(8, 3.0f));
  ASSERT_TRUE(encoded.ok()) << encoded.status();
  EXPECT_EQ(encoded->tokenizer_version, 1u);
  EXPECT_EQ(encoded->levels, 2);
  EXPECT_EQ(encoded->by_id.ids, (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(encoded->by_id.missing, (std::vector<uint64_t>{999}));
  EXPECT_EQ(encoded->vectors.codes.size(), 4u);
  EXPECT_EQ(encoded->vectors.nearest_codes.size(), 4u);
  EXPECT_EQ(encoded->items_with_codes.size(), 2u);

  EXPECT_EQ(sids.Encode("c", {}, {}).status().message(),
            "ids and vectors are both empty: give either or both");
  EXPECT_EQ(sids.Encode("c", {}, std::vector<float>(5, 1.0f)).status().message(),
            "vectors has 5 values, not a multiple of dimension 4 of collection 'c'");
  EXPECT_EQ(sids.Encode("c", std::vector<uint64_t>(kMaxEncodeRows + 1), {}).status().code(),
            absl::StatusCode::kInvalidArgument);

  const std::vector<uint32_t> prefix = {static_cast<uint32_t>(encoded->by_id.codes[0])};
  auto found = sids.Lookup("c", prefix, "", 0);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_FALSE(found->ids.empty());
  EXPECT_EQ(sids.Lookup("c", prefix, "<a_1>", 0).status().message(),
            "give codes or tokens, not both");
  EXPECT_EQ(sids.Lookup("c", {}, "", 0).status().message(), "codes and tokens are both empty");
  EXPECT_EQ(sids.Lookup("c", prefix, "", kMaxLookupLimit + 1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(SidServiceTest, FiguresAreScannedOnceAndRecomputedAfterEveryWrite) {
  const auto first = Figures(SidService::Freshness::kCurrent);
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(first->items, 500);
  EXPECT_EQ(first->levels.size(), 2u);
  EXPECT_EQ(Figures(SidService::Freshness::kCurrent), first);  // cached, same object
  EXPECT_EQ(Figures(SidService::Freshness::kWithinAMinute), first);

  ASSERT_TRUE(
      storage_->items().Upsert("c", std::vector<uint64_t>{1000}, std::vector<float>(4, 7.0f)).ok());
  // A scrape within the minute keeps the cached figures; GetStats sees the new count at once,
  // and the scrape then shares what GetStats computed.
  EXPECT_EQ(Figures(SidService::Freshness::kWithinAMinute), first);
  const auto second = Figures(SidService::Freshness::kCurrent);
  ASSERT_NE(second, nullptr);
  EXPECT_NE(second, first);
  EXPECT_EQ(second->items, 501);
  EXPECT_EQ(Figures(SidService::Freshness::kWithinAMinute), second);

  // Replacing vectors changes SIDs but not the item count: GetStats still sees it at once.
  const std::vector<uint64_t> replaced = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  ASSERT_TRUE(storage_->items().Upsert("c", replaced, std::vector<float>(4 * 10, 7.0f)).ok());
  const auto third = Figures(SidService::Freshness::kCurrent);
  ASSERT_NE(third, nullptr);
  EXPECT_NE(third, second);
  EXPECT_EQ(third->items, 501);
  EXPECT_GE(third->collisions.largest_group, 11);  // the ten and item 1000 share one tuple

  sids_->KeepFiguresOf({});  // the collection is gone: its figures are forgotten
  EXPECT_NE(Figures(SidService::Freshness::kWithinAMinute), third);
}

// A write that fails leaves the ledger as the database is: a LedgerChange destroyed without
// Keep() undoes its removals, additions and drift; one kept stays.
TEST(SidLedgerTest, ChangesAreUndoneUnlessKept) {
  SidLedger ledger({4, 3});
  SidOccupancy start({4, 3});
  const std::vector<int32_t> a = {1, 2};
  const std::vector<int32_t> b = {3, 0};
  start.Add(a.data());
  start.Add(a.data());
  storage::SidDriftRecord drift;
  drift.set_version(1);
  drift.set_assigned(5);
  ledger.Load(start, drift);
  const auto snapshot = [&] {
    const SidLedger::Reader reader(ledger);
    return std::make_tuple(reader.occupancy().tuple_count(a.data()),
                           reader.occupancy().tuple_count(b.data()),
                           reader.occupancy().level_counts(0), reader.occupancy().level_counts(1),
                           reader.occupancy().items(), reader.drift().assigned());
  };
  const auto before = snapshot();
  EXPECT_EQ(std::get<0>(before), 2);
  {
    LedgerChange change(&ledger);
    change.Remove(a.data());
    change.Add(b.data());
    change.drift()->set_assigned(6);
    EXPECT_EQ(change.occupancy()->tuple_count(b.data()), 1);
  }  // not kept: a failed write
  EXPECT_EQ(snapshot(), before);
  {
    LedgerChange change(&ledger);
    change.Remove(a.data());
    change.Add(b.data());
    change.drift()->set_assigned(6);
    change.Keep();
  }
  const auto after = snapshot();
  EXPECT_EQ(std::get<0>(after), 1);
  EXPECT_EQ(std::get<1>(after), 1);
  EXPECT_EQ(std::get<3>(after), (std::vector<int64_t>{1, 0, 1}));
  EXPECT_EQ(std::get<5>(after), 6u);
}

}  // namespace
}  // namespace quantd
