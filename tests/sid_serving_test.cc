// Semantic IDs at serving time (issue #11) through gRPC, in-process, on real embeddings: stable
// SIDs (an unchanged upsert changes nothing; Encode by id answers the stored SID), capacity-aware
// assignment of new items under the bounds in force as the collection grows, deletes freeing
// capacity, drift figures that survive a restart, and bad training options.
#include <algorithm>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "client/client.h"
#include "gtest/gtest.h"
#include "io/vector_file.h"
#include "server/server.h"
#include "tests/server_fixture.h"
#include "tests/test_support.h"

namespace quantd {
namespace {

using ::quantd::testing::DataFile;

constexpr int64_t kBeautyRows = 12101;
constexpr int kBeautyDim = 32;

class SidServingTest : public ::quantd::testing::InProcessServerTest {
 protected:
  void SetUp() override {
    InProcessServerTest::SetUp();
    auto matrix = ReadMatrix(DataFile("sasrec/Beauty-32d-sasrec.npy"), kBeautyRows);
    ASSERT_TRUE(matrix.ok()) << matrix.status();
    beauty_ = std::move(matrix->values);
  }

  std::vector<float> Rows(const std::vector<uint64_t>& ids) const {
    std::vector<float> out;
    for (uint64_t id : ids) {
      out.insert(out.end(), beauty_.begin() + id * kBeautyDim,
                 beauty_.begin() + (id + 1) * kBeautyDim);
    }
    return out;
  }

  // Creates `name` and upserts Beauty's rows `ids` (ids are row numbers), in batches.
  void Load(const std::string& name, const std::vector<uint64_t>& ids) {
    CreateCollection(name, kBeautyDim);
    UpsertRows(name, ids);
  }
  void UpsertRows(const std::string& name, const std::vector<uint64_t>& ids) {
    for (size_t begin = 0; begin < ids.size(); begin += 1000) {
      const std::vector<uint64_t> batch(ids.begin() + begin,
                                        ids.begin() + std::min(ids.size(), begin + 1000));
      const grpc::Status status = Upsert(name, batch, Rows(batch));
      ASSERT_TRUE(status.ok()) << status.error_message();
    }
  }

  // A balanced 3 x 64 tokenizer request (slack 0.1) for `name`.
  static v1::TrainTokenizerRequest Balanced(const std::string& name) {
    v1::TrainTokenizerRequest request;
    request.set_collection(name);
    for (int l = 0; l < 3; ++l) request.add_codebook_sizes(64);
    request.set_balanced(true);
    request.set_max_iterations(10);
    request.set_seed(11);
    return request;
  }

  v1::TokenizerStats TokenizerStatsOf(const std::string& name) { return Stats(name).tokenizer(); }

  v1::EncodeResponse Encode(const std::string& name, const std::vector<uint64_t>& ids,
                            const std::vector<float>& vectors) {
    grpc::ClientContext context;
    v1::EncodeRequest request;
    request.set_collection(name);
    request.mutable_ids()->Add(ids.begin(), ids.end());
    request.mutable_vectors()->Add(vectors.begin(), vectors.end());
    v1::EncodeResponse response;
    const grpc::Status status = stub_->Encode(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  // A seeded permutation of Beauty's row numbers.
  static std::vector<uint64_t> Shuffled() {
    std::vector<uint64_t> ids(kBeautyRows);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), std::mt19937_64(5));
    return ids;
  }

  std::vector<float> beauty_;  // kBeautyRows x kBeautyDim
};

std::string SidKey(const v1::Sid& sid) {
  std::string key;
  for (uint32_t code : sid.codes()) key += std::to_string(code) + ",";
  return key + "#" + std::to_string(sid.suffix());
}

TEST_F(SidServingTest, UnchangedUpsertsKeepEverythingAndEncodeByIdAnswersTheStoredSid) {
  std::vector<uint64_t> all(kBeautyRows);
  std::iota(all.begin(), all.end(), 0);
  Load("beauty", all);
  ASSERT_EQ(TrainAndWait(Balanced("beauty")).state(), v1::JOB_STATE_SUCCEEDED);
  const std::map<uint64_t, std::string> before = AllSids("beauty");
  ASSERT_EQ(before.size(), static_cast<size_t>(kBeautyRows));

  // Encode by id answers the stored SID, for every item.
  for (size_t begin = 0; begin < all.size(); begin += 5000) {
    const std::vector<uint64_t> ids(all.begin() + begin,
                                    all.begin() + std::min(all.size(), begin + 5000));
    const v1::EncodeResponse by_id = Encode("beauty", ids, {});
    ASSERT_EQ(by_id.sids_size(), static_cast<int>(ids.size()));
    for (int i = 0; i < by_id.sids_size(); ++i) {
      EXPECT_EQ(SidKey(by_id.sids(i)), before.at(by_id.ids(i))) << by_id.ids(i);
    }
  }

  // Re-upserting 1000 unchanged vectors (some twice in the batch) changes no SID and assigns
  // nothing: the items were not written at all.
  std::vector<uint64_t> again(all.begin() + 3000, all.begin() + 4000);
  again.insert(again.end(), all.begin() + 3000, all.begin() + 3010);
  ASSERT_TRUE(Upsert("beauty", again, Rows(again)).ok());
  EXPECT_EQ(AllSids("beauty"), before);
  EXPECT_EQ(TokenizerStatsOf("beauty").drift().assigned_since_training(), 0u);

  // A changed vector is a new assignment; the others still keep theirs.
  std::vector<float> moved = Rows({3000});
  for (float& v : moved) v = -v;
  ASSERT_TRUE(Upsert("beauty", {3000, 3001},
                     [&] {
                       auto rows = moved;
                       auto same = Rows({3001});
                       rows.insert(rows.end(), same.begin(), same.end());
                       return rows;
                     }())
                  .ok());
  const std::map<uint64_t, std::string> after = AllSids("beauty");
  EXPECT_EQ(TokenizerStatsOf("beauty").drift().assigned_since_training(), 1u);
  size_t changed = 0;
  for (const auto& [id, sid] : after) changed += sid != before.at(id);
  EXPECT_LE(changed, 1u);
  EXPECT_EQ(after.at(3001), before.at(3001));
}

TEST_F(SidServingTest, CapacityAssignmentHoldsTheBoundsInForceAsTheCollectionGrows) {
  // Train on 80% of the items, then upsert the other 20% as new items, under capacity and under
  // nearest assignment (the same training otherwise).
  const std::vector<uint64_t> order = Shuffled();
  const std::vector<uint64_t> trained(order.begin(), order.begin() + kBeautyRows * 8 / 10);
  const std::vector<uint64_t> added(order.begin() + kBeautyRows * 8 / 10, order.end());
  std::map<std::string, v1::TokenizerStats> stats;
  for (const std::string name : {"capacity", "nearest"}) {
    Load(name, trained);
    v1::TrainTokenizerRequest request = Balanced(name);
    request.set_assignment(name == "capacity" ? v1::ASSIGNMENT_CAPACITY : v1::ASSIGNMENT_NEAREST);
    if (name == "capacity") request.set_suffix_cap(2);
    const v1::Job job = TrainAndWait(request);
    ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.error();
    UpsertRows(name, added);
    stats[name] = TokenizerStatsOf(name);
  }

  const v1::TokenizerStats& capacity = stats["capacity"];
  EXPECT_EQ(capacity.assignment(), v1::ASSIGNMENT_CAPACITY);
  EXPECT_EQ(capacity.beam_width(), 4u);
  EXPECT_EQ(capacity.suffix_cap(), 2u);
  EXPECT_EQ(capacity.drift().assigned_since_training(), added.size());
  EXPECT_EQ(capacity.items(), static_cast<uint64_t>(kBeautyRows));
  const double overflow = capacity.drift().overflow_fraction();
  EXPECT_LT(overflow, 0.01);
  // The bounds in force follow the item count (slack 0.1 around n / K) ...
  for (const v1::LevelStats& level : capacity.level_stats()) {
    EXPECT_TRUE(level.balanced());
    EXPECT_EQ(level.bounds().size_max(),
              static_cast<uint64_t>(std::ceil(kBeautyRows / 64.0 * 1.1)));
    EXPECT_LT(level.trained_bounds().size_max(), level.bounds().size_max());
    // ... and capacity assignment holds them: only overflowing items may break them.
    EXPECT_LE(level.size_max(),
              level.bounds().size_max() + static_cast<uint64_t>(overflow * added.size() + 0.5));
  }
  // Tuples hold at most the cap, bar overflows.
  if (overflow == 0) {
    EXPECT_LE(capacity.largest_group(), 2u);
  }
  EXPECT_LE(capacity.drift().largest_suffix(), capacity.largest_group());

  // Nearest assignment ignores them: some cluster grows past its bound. (This is what makes the
  // checks above able to fail.)
  const v1::TokenizerStats& nearest = stats["nearest"];
  EXPECT_EQ(nearest.assignment(), v1::ASSIGNMENT_NEAREST);
  EXPECT_EQ(nearest.drift().displaced_fraction(), 0);
  uint32_t over = 0;
  for (const v1::LevelStats& level : nearest.level_stats()) over += level.clusters_over_bound();
  EXPECT_GT(over, 0u);
  // Capacity costs a little quantization error over nearest, not much.
  EXPECT_LE(capacity.drift().assigned_mse(), 1.3 * nearest.drift().assigned_mse());
  EXPECT_GT(capacity.drift().displaced_fraction(), 0);

  // Everything persists: the same figures and the same Encode answers after a restart.
  const std::vector<float> probe = Rows({order[0], order[1], added[0], added[1]});
  const v1::EncodeResponse before_restart = Encode("capacity", {}, probe);
  Restart();
  const v1::TokenizerStats restarted = TokenizerStatsOf("capacity");
  EXPECT_EQ(restarted.drift().assigned_since_training(),
            capacity.drift().assigned_since_training());
  EXPECT_EQ(restarted.drift().displaced_fraction(), capacity.drift().displaced_fraction());
  EXPECT_EQ(restarted.drift().assigned_mse(), capacity.drift().assigned_mse());
  EXPECT_EQ(restarted.collision_rate(), capacity.collision_rate());
  const v1::EncodeResponse after_restart = Encode("capacity", {}, probe);
  ASSERT_EQ(after_restart.encoded_size(), 4);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(after_restart.encoded(i).SerializeAsString(),
              before_restart.encoded(i).SerializeAsString())
        << i;
  }
}

TEST_F(SidServingTest, EncodeByVectorAnswersAssignedAndNearestCodesAndDeletesFreeCapacity) {
  std::vector<uint64_t> all(kBeautyRows);
  std::iota(all.begin(), all.end(), 0);
  Load("beauty", all);
  v1::TrainTokenizerRequest request = Balanced("beauty");
  request.set_suffix_cap(1);  // collision-free where capacity allows
  const v1::Job job = TrainAndWait(request);
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.error();
  const v1::TokenizerStats stats = TokenizerStatsOf("beauty");
  // Training-time collision resolution: reported, and it removed collisions.
  EXPECT_GT(stats.collisions_before_resolution(), 0u);
  EXPECT_LT(stats.collisions_after_resolution(), stats.collisions_before_resolution());
  EXPECT_GT(stats.resolution_moved(), 0u);
  EXPECT_LE(stats.mse_after_resolution(), 1.1 * stats.mse_before_resolution());
  EXPECT_EQ(stats.collision_groups() > 0, stats.collisions_after_resolution() > 0);

  // Each stored item's own vector, as a new item: its tuple is taken (cap 1), so it is either
  // displaced to a free tuple or an overflow; nearest codes and errors come with it.
  const std::map<uint64_t, std::string> sids = AllSids("beauty");
  const std::vector<uint64_t> probe_ids = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  const v1::EncodeResponse proposed = Encode("beauty", {}, Rows(probe_ids));
  ASSERT_EQ(proposed.encoded_size(), 10);
  uint64_t victim = 0;
  bool found = false;
  for (int i = 0; i < proposed.encoded_size(); ++i) {
    const v1::EncodedVector& e = proposed.encoded(i);
    ASSERT_EQ(e.codes_size(), 3);
    ASSERT_EQ(e.nearest_codes_size(), 3);
    const bool same = std::equal(e.codes().begin(), e.codes().end(), e.nearest_codes().begin());
    EXPECT_EQ(e.displaced(), !same) << i;
    if (e.overflow()) {
      EXPECT_TRUE(same) << i;
    } else {
      EXPECT_EQ(e.items_with_codes(), 0u) << i;  // a free tuple (cap 1)
    }
    EXPECT_GE(e.error(), 0);
    EXPECT_GE(e.nearest_error(), 0);
    // The item sits in its nearest tuple: take it as the one to delete.
    std::string nearest_key;
    for (uint32_t code : e.nearest_codes()) nearest_key += std::to_string(code) + ",";
    const std::string stored = sids.at(probe_ids[i]);
    if (!found && stored.substr(0, stored.find('#')) == nearest_key && e.displaced()) {
      victim = probe_ids[i];
      found = true;
    }
  }
  ASSERT_TRUE(found) << "no probed item sits in its nearest tuple";

  // Deleting that item frees its tuple: its vector now gets the nearest codes, undisplaced.
  {
    grpc::ClientContext context;
    v1::DeleteItemsRequest del;
    del.set_collection("beauty");
    del.add_ids(victim);
    v1::DeleteItemsResponse response;
    ASSERT_TRUE(stub_->DeleteItems(&context, del, &response).ok());
  }
  const v1::EncodeResponse freed = Encode("beauty", {}, Rows({victim}));
  ASSERT_EQ(freed.encoded_size(), 1);
  EXPECT_FALSE(freed.encoded(0).displaced());
  EXPECT_EQ(freed.encoded(0).items_with_codes(), 0u);
  EXPECT_EQ(freed.encoded(0).error(), freed.encoded(0).nearest_error());
}

TEST_F(SidServingTest, NearestAssignmentAnswersTheGreedyCodes) {
  std::vector<uint64_t> all(3000);
  std::iota(all.begin(), all.end(), 0);
  Load("plain", all);
  v1::TrainTokenizerRequest request = Balanced("plain");
  request.set_balanced(false);
  const v1::Job job = TrainAndWait(request);
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.error();
  EXPECT_EQ(TokenizerStatsOf("plain").assignment(), v1::ASSIGNMENT_NEAREST);
  const v1::EncodeResponse response = Encode("plain", {}, Rows({5, 6, 7}));
  const std::map<uint64_t, std::string> sids = AllSids("plain");
  for (int i = 0; i < 3; ++i) {
    const v1::EncodedVector& e = response.encoded(i);
    EXPECT_FALSE(e.displaced());
    EXPECT_FALSE(e.overflow());
    EXPECT_TRUE(std::equal(e.codes().begin(), e.codes().end(), e.nearest_codes().begin()));
    EXPECT_EQ(e.error(), e.nearest_error());
    // Plain training labels are the nearest codes: the stored item has the same ones.
    std::string key;
    for (uint32_t code : e.codes()) key += std::to_string(code) + ",";
    EXPECT_EQ(sids.at(5 + i).substr(0, key.size()), key);
    EXPECT_GE(e.items_with_codes(), 1u);
  }
}

TEST_F(SidServingTest, BadTrainingOptionsAreRejectedAndStartNothing) {
  std::vector<uint64_t> all(500);
  std::iota(all.begin(), all.end(), 0);
  Load("c", all);
  using R = v1::TrainTokenizerRequest;
  const auto rejected = [&](const std::function<void(R&)>& edit, const std::string& fragment) {
    R request = Balanced("c");
    request.clear_codebook_sizes();
    request.add_codebook_sizes(8);
    request.add_codebook_sizes(8);
    edit(request);
    v1::Job job;
    const grpc::Status status = StartTraining(request, &job);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << fragment;
    EXPECT_NE(status.error_message().find(fragment), std::string::npos)
        << fragment << " / " << status.error_message();
  };
  rejected([](R& r) { r.set_beam_width(0); }, "beam_width 0 is outside 1..64");
  rejected([](R& r) { r.set_beam_width(65); }, "beam_width 65 is outside 1..64");
  rejected([](R& r) { r.set_suffix_cap(0); }, "suffix_cap 0 is below 1");
  rejected([](R& r) { r.set_tolerance(-0.1); }, "tolerance -0.1 is outside [0, 1)");
  rejected([](R& r) { r.set_tolerance(1); }, "tolerance 1 is outside [0, 1)");
  rejected([](R& r) { r.set_tolerance(std::nan("")); }, "tolerance nan");
  rejected([](R& r) { r.set_restarts(11); }, "restarts 11 is outside 1..10");
  rejected([](R& r) { r.set_assignment(static_cast<v1::Assignment>(7)); }, "assignment 7");
  rejected(
      [](R& r) {
        r.set_assignment(v1::ASSIGNMENT_NEAREST);
        r.set_beam_width(4);
      },
      "beam_width and suffix_cap apply to assignment ASSIGNMENT_CAPACITY only");
  rejected(
      [](R& r) {
        r.set_balanced(false);
        r.add_level_balanced(true);
      },
      "level_balanced has 1 entries for 2 levels");
  rejected(
      [](R& r) {
        r.add_level_balanced(false);
        r.add_level_balanced(true);
      },
      "not both");
  rejected(
      [](R& r) {
        r.set_balanced(false);
        r.add_size_bounds()->set_size_max(100);
        r.add_size_bounds()->set_size_max(100);
      },
      "need balanced = true");
  rejected(
      [](R& r) {
        r.add_size_bounds()->set_size_max(10);  // 8 x 10 < 500 items: cannot hold
        r.add_size_bounds()->set_size_max(100);
      },
      "size_bounds[0]");

  grpc::ClientContext context;
  v1::ListJobsRequest list;
  list.set_collection("c");
  v1::ListJobsResponse jobs;
  ASSERT_TRUE(stub_->ListJobs(&context, list, &jobs).ok());
  EXPECT_EQ(jobs.jobs_size(), 0);

  // Per-level choice: only the last level balanced, as RQ-VAE tokenizers do.
  R mixed = Balanced("c");
  mixed.set_balanced(false);
  mixed.clear_codebook_sizes();
  mixed.add_codebook_sizes(8);
  mixed.add_codebook_sizes(8);
  mixed.add_level_balanced(false);
  mixed.add_level_balanced(true);
  mixed.set_restarts(2);
  mixed.set_tolerance(0);
  const v1::Job job = TrainAndWait(mixed);
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.error();
  const v1::TokenizerStats stats = TokenizerStatsOf("c");
  EXPECT_FALSE(stats.level_stats(0).balanced());
  EXPECT_TRUE(stats.level_stats(1).balanced());
  EXPECT_EQ(stats.assignment(), v1::ASSIGNMENT_CAPACITY);
  EXPECT_EQ(stats.restarts(), 2u);
  EXPECT_EQ(stats.tolerance(), 0);
  // Tolerance 0 runs every iteration.
  EXPECT_EQ(stats.level_stats(1).iterations(), 10u);
}

}  // namespace
}  // namespace quantd
