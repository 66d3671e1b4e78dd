// Capacity-aware SID assignment (core/sid_assignment.h) on real recommender embeddings: the beam
// without limits matches greedy encoding and beats it with a wider beam, capacity is respected
// in row order with overflows flagged, Propose only reads, deletes free capacity, training-time
// collision resolution, the bounds in force as a collection grows or shrinks, and bad inputs.
#include "core/sid_assignment.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "absl/strings/match.h"
#include "core/semantic_id.h"
#include "gtest/gtest.h"
#include "io/vector_file.h"
#include "tests/test_support.h"

namespace quantd {
namespace {

using ::quantd::testing::DataFile;

class SidAssignmentTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto data = ReadMatrix(DataFile("sasrec/Beauty-32d-sasrec.npy"));
    ASSERT_TRUE(data.ok()) << data.status();
    data_ = new Matrix(std::move(*data));
    RqOptions options;
    for (int l = 0; l < 3; ++l) {
      options.levels.push_back({.k = 64, .balanced = true, .bounds = {}, .initial_centroids = {}});
    }
    options.kmeans.seed = 5;
    options.kmeans.max_iterations = 10;
    auto trained = TrainResidualQuantizer(data_->values.data(), data_->rows, data_->dim, options);
    ASSERT_TRUE(trained.ok()) << trained.status();
    trained_ = new RqTrainResult(std::move(*trained));
  }
  static void TearDownTestSuite() {
    delete data_;
    delete trained_;
  }

  static const ResidualQuantizer& rq() { return trained_->quantizer; }
  static const float* x() { return data_->values.data(); }
  static int64_t n() { return data_->rows; }
  static int64_t d() { return data_->dim; }
  static CapacityLimits Unbounded() {
    return {.size_max = std::vector<int64_t>(3, kUnbounded), .suffix_cap = kUnbounded};
  }

  static Matrix* data_;
  static RqTrainResult* trained_;
};
Matrix* SidAssignmentTest::data_ = nullptr;
RqTrainResult* SidAssignmentTest::trained_ = nullptr;

TEST_F(SidAssignmentTest, BeamOfOneIsGreedyEncodingAndWiderBeamsQuantizeBetter) {
  std::vector<int32_t> greedy(static_cast<size_t>(n() * 3));
  rq().Encode(x(), n(), greedy.data());
  const SidAssigner assigner(&rq());
  SidOccupancy occupancy(rq().codebook_sizes());
  auto one = assigner.Propose(x(), n(), Unbounded(), {.beam_width = 1}, occupancy);
  ASSERT_TRUE(one.ok()) << one.status();
  // The beam computes residual products from inter-level tables; greedy encoding from the
  // residuals. Exact ties aside, they agree.
  int64_t same = 0;
  for (int64_t i = 0; i < n(); ++i) {
    same += std::equal(greedy.begin() + i * 3, greedy.begin() + i * 3 + 3,
                       one->nearest_codes.begin() + i * 3);
    EXPECT_NEAR(one->nearest_error[i], assigner.Error(x() + i * d(), &one->nearest_codes[i * 3]),
                1e-3 * (1 + one->nearest_error[i]));
  }
  EXPECT_GE(same, n() - n() / 1000);
  EXPECT_EQ(one->codes, one->nearest_codes);  // no limits: nothing displaced
  EXPECT_EQ(std::count(one->displaced.begin(), one->displaced.end(), 1), 0);
  EXPECT_EQ(occupancy.items(), 0);  // Propose only reads

  auto eight = assigner.Propose(x(), n(), Unbounded(), {.beam_width = 8}, occupancy);
  ASSERT_TRUE(eight.ok());
  // A beam is a heuristic: a wider one is not better on every row, but on nearly all.
  double sum_one = 0, sum_eight = 0;
  int64_t worse = 0;
  for (int64_t i = 0; i < n(); ++i) {
    sum_one += one->nearest_error[i];
    sum_eight += eight->nearest_error[i];
    worse += eight->nearest_error[i] > one->nearest_error[i] * (1 + 1e-4) + 1e-6;
  }
  EXPECT_LT(worse, n() / 100);
  EXPECT_LT(sum_eight, 0.99 * sum_one);
}

TEST_F(SidAssignmentTest, AssignKeepsEveryCodeAndTupleWithinCapacityInRowOrder) {
  // The first 8000 rows take their place, the next 4000 come as new items under tight limits.
  SidOccupancy occupancy(rq().codebook_sizes());
  for (int64_t i = 0; i < 8000; ++i) occupancy.Add(&trained_->codes[i * 3]);
  const int64_t bound = BoundsFromSlack(n(), 64, 0.1).size_max;  // as training's
  const CapacityLimits limits = {.size_max = {bound, bound, bound}, .suffix_cap = 1};
  const int64_t added = 4000;
  const SidAssigner assigner(&rq());
  auto assigned = assigner.Assign(x() + 8000 * d(), added, limits, {.beam_width = 4}, &occupancy);
  ASSERT_TRUE(assigned.ok()) << assigned.status();
  EXPECT_EQ(occupancy.items(), 8000 + added);
  const int64_t overflow = std::count(assigned->overflow.begin(), assigned->overflow.end(), 1);
  EXPECT_LT(overflow, added / 100);
  for (int64_t l = 0; l < 3; ++l) {
    for (int64_t count : occupancy.level_counts(l)) EXPECT_LE(count, bound + overflow);
  }
  // A new row never joins a tuple that was full (cap 1), unless it overflowed.
  SidOccupancy replay(rq().codebook_sizes());
  for (int64_t i = 0; i < 8000; ++i) replay.Add(&trained_->codes[i * 3]);
  int64_t displaced = 0;
  for (int64_t i = 0; i < added; ++i) {
    const int32_t* codes = &assigned->codes[i * 3];
    if (!assigned->overflow[i]) {
      EXPECT_EQ(replay.tuple_count(codes), 0) << i;
      for (int64_t l = 0; l < 3; ++l) EXPECT_LT(replay.level_count(l, codes[l]), bound) << i;
    }
    displaced += assigned->displaced[i];
    EXPECT_EQ(assigned->displaced[i] != 0,
              !std::equal(codes, codes + 3, &assigned->nearest_codes[i * 3]));
    replay.Add(codes);
  }
  EXPECT_GT(displaced, 0);
  // Capacity costs some error, not much: the mean error stays within 1.5x of nearest's.
  double error = 0, nearest = 0;
  for (int64_t i = 0; i < added; ++i) {
    error += assigned->error[i];
    nearest += assigned->nearest_error[i];
  }
  EXPECT_LT(error, 1.5 * nearest);
}

TEST_F(SidAssignmentTest, OverflowWhenNoTupleHasRoomAndDeletesFreeCapacity) {
  const SidAssigner assigner(&rq());
  SidOccupancy occupancy(rq().codebook_sizes());
  // One item per level-0 code: the 65th row finds every first-level code full.
  const CapacityLimits limits = {.size_max = {1, kUnbounded, kUnbounded}, .suffix_cap = 1};
  auto first = assigner.Assign(x(), 64, limits, {.beam_width = kMaxBeamWidth}, &occupancy);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(std::count(first->overflow.begin(), first->overflow.end(), 1), 0);
  auto next = assigner.Propose(x() + 64 * d(), 1, limits, {.beam_width = 4}, occupancy);
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->overflow[0], 1);
  EXPECT_EQ(next->codes, next->nearest_codes);
  EXPECT_EQ(occupancy.items(), 64);  // Propose took nothing
  // Removing the item of the row's nearest level-0 code frees it: the row gets its nearest tuple
  // (the tuple itself is free: no other item has those level-1 and level-2 codes... or takes
  // the best free one).
  for (int64_t i = 0; i < 64; ++i) {
    if (first->codes[i * 3] == next->nearest_codes[0]) occupancy.Remove(&first->codes[i * 3]);
  }
  auto freed = assigner.Propose(x() + 64 * d(), 1, limits, {.beam_width = 4}, occupancy);
  ASSERT_TRUE(freed.ok());
  EXPECT_EQ(freed->overflow[0], 0);
  EXPECT_EQ(freed->codes[0], next->nearest_codes[0]);
  // Propose answers what Assign then does, row by row.
  SidOccupancy copy = occupancy;
  auto taken = assigner.Assign(x() + 64 * d(), 1, limits, {.beam_width = 4}, &copy);
  ASSERT_TRUE(taken.ok());
  EXPECT_EQ(taken->codes, freed->codes);
  EXPECT_EQ(copy.items(), occupancy.items() + 1);
  EXPECT_EQ(copy.tuple_count(taken->codes.data()), 1);
}

TEST_F(SidAssignmentTest, CollisionResolutionMovesTheCheapestRowsAndNeverAddsCollisions) {
  std::vector<int32_t> codes = trained_->codes;
  const int64_t before = n() - ComputeCollisions(codes.data(), n(), 3).unique_tuples;
  ASSERT_GT(before, 50);  // 64^3 tuples for 12101 items: some collide
  const int64_t bound = BoundsFromSlack(n(), 64, 0.1).size_max;  // training's bound
  const CapacityLimits limits = {.size_max = {bound, bound, bound}, .suffix_cap = 1};
  auto report = ResolveCollisions(rq(), x(), n(), limits, {.beam_width = 8}, &codes);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->collisions_before, before);
  EXPECT_EQ(report->collisions_after, n() - ComputeCollisions(codes.data(), n(), 3).unique_tuples);
  EXPECT_LT(report->collisions_after, before / 10);
  EXPECT_GT(report->moved, 0);
  EXPECT_LE(report->moved, before);  // only rows beyond the cap move
  EXPECT_LT(report->mse_after, 1.05 * report->mse_before);
  const std::vector<double> mse = rq().LevelMse(x(), n(), codes.data());
  EXPECT_NEAR(mse.back(), report->mse_after, 1e-3 * report->mse_after);
  // Level bounds still hold after the moves.
  SidOccupancy occupancy(rq().codebook_sizes());
  for (int64_t i = 0; i < n(); ++i) occupancy.Add(&codes[i * 3]);
  for (int64_t l = 0; l < 3; ++l) {
    for (int64_t count : occupancy.level_counts(l)) EXPECT_LE(count, bound);
  }
  // A cap the assignment already meets moves nothing.
  std::vector<int32_t> again = codes;
  auto none = ResolveCollisions(rq(), x(), n(), {.size_max = limits.size_max, .suffix_cap = 1000},
                                {.beam_width = 8}, &again);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->moved, 0);
  EXPECT_EQ(again, codes);
}

TEST(SidOccupancyTest, NextCodesCountTheItemsUnderEachPrefix) {
  SidOccupancy occupancy({4, 3, 5});
  const std::vector<std::vector<int32_t>> tuples = {{0, 1, 2}, {0, 1, 2}, {0, 1, 4},
                                                    {0, 2, 0}, {3, 0, 0}, {3, 0, 1}};
  for (const auto& tuple : tuples) occupancy.Add(tuple.data());
  using Next = std::vector<std::pair<int32_t, int64_t>>;
  EXPECT_EQ(occupancy.NextCodes(nullptr, 0), (Next{{0, 4}, {3, 2}}));
  const std::vector<int32_t> a0 = {0, 1};
  EXPECT_EQ(occupancy.NextCodes(a0.data(), 1), (Next{{1, 3}, {2, 1}}));
  EXPECT_EQ(occupancy.NextCodes(a0.data(), 2), (Next{{2, 2}, {4, 1}}));
  EXPECT_EQ(occupancy.prefix_count(a0.data(), 2), 3);
  EXPECT_EQ(occupancy.unique_tuples(), 5);
  const std::vector<int32_t> absent = {1, 0};
  EXPECT_TRUE(occupancy.NextCodes(absent.data(), 1).empty());
  EXPECT_TRUE(occupancy.NextCodes(absent.data(), 2).empty());
  // Removing items updates every prefix.
  occupancy.Remove(tuples[2].data());
  occupancy.Remove(tuples[3].data());
  EXPECT_EQ(occupancy.NextCodes(a0.data(), 1), (Next{{1, 2}}));
  EXPECT_EQ(occupancy.NextCodes(a0.data(), 2), (Next{{2, 2}}));
  EXPECT_EQ(occupancy.NextCodes(nullptr, 0), (Next{{0, 2}, {3, 2}}));
  EXPECT_EQ(occupancy.unique_tuples(), 3);
}

TEST(BoundsInForceTest, SlackFollowsTheCountAndExplicitBoundsScale) {
  // Slack: recomputed around the current n / K.
  const SizeBounds slack = BoundsInForce({90, 110}, 10000, 12000, 100, 0.1);
  EXPECT_EQ(slack.size_min, 108);
  EXPECT_EQ(slack.size_max, 132);
  // Explicit: scaled by n_now / n_trained, outwards.
  const SizeBounds grown = BoundsInForce({80, 120}, 10000, 12500, 100, std::nullopt);
  EXPECT_EQ(grown.size_min, 100);
  EXPECT_EQ(grown.size_max, 150);
  const SizeBounds shrunk = BoundsInForce({80, 120}, 10000, 5000, 100, std::nullopt);
  EXPECT_EQ(shrunk.size_min, 40);
  EXPECT_EQ(shrunk.size_max, 60);
  // Always feasible: size_max * k >= n and size_min * k <= n.
  const SizeBounds tight = BoundsInForce({100, 100}, 10000, 10050, 100, std::nullopt);
  EXPECT_GE(tight.size_max * 100, 10050);
  EXPECT_LE(tight.size_min * 100, 10050);
}

TEST_F(SidAssignmentTest, BadInputsNameTheFieldAndChangeNothing) {
  const SidAssigner assigner(&rq());
  SidOccupancy occupancy(rq().codebook_sizes());
  const auto message = [&](const CapacityLimits& limits, const SidAssignOptions& options,
                           const float* rows) {
    auto result = assigner.Assign(rows, 1, limits, options, &occupancy);
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(result.status().message());
  };
  EXPECT_EQ(message(Unbounded(), {.beam_width = 0}, x()), "beam_width 0 is outside 1..64");
  EXPECT_EQ(message(Unbounded(), {.beam_width = 65}, x()), "beam_width 65 is outside 1..64");
  EXPECT_EQ(message({.size_max = {1, 1, 1}, .suffix_cap = 0}, {}, x()), "suffix_cap 0 is below 1");
  EXPECT_EQ(message({.size_max = {1, 1}, .suffix_cap = 1}, {}, x()),
            "size_max has 2 entries for 3 levels");
  EXPECT_EQ(message({.size_max = {1, 0, 1}, .suffix_cap = 1}, {}, x()),
            "size_max[1] = 0 is below 1");
  std::vector<float> bad(x(), x() + d());
  bad[7] = std::nanf("");
  EXPECT_TRUE(absl::StrContains(message(Unbounded(), {}, bad.data()), "x[row 0, component 7]"));
  SidOccupancy other({64, 64});
  EXPECT_EQ(assigner.Assign(x(), 1, Unbounded(), {}, &other).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(occupancy.items(), 0);
  std::vector<int32_t> codes = {0, 0, 64};
  EXPECT_EQ(ResolveCollisions(rq(), x(), 1, Unbounded(), {}, &codes).status().message(),
            "codes[row 0, level 2] = 64 is outside 0..63");
}

// Codebooks too large for the inter-level tables: the beam multiplies residuals instead, and
// still matches greedy encoding.
TEST(SidAssignerTest, WithoutTablesTheBeamStillMatchesGreedyEncoding) {
  const int64_t d = 4;
  const int64_t k = 4200;  // 4200^2 floats > 64 MiB
  std::mt19937 random(3);
  std::normal_distribution<float> gaussian;
  std::vector<std::vector<float>> books(2, std::vector<float>(static_cast<size_t>(k * d)));
  for (auto& book : books) {
    for (float& v : book) v = gaussian(random);
  }
  books[1].resize(static_cast<size_t>(k * d));
  for (float& v : books[1]) v *= 0.1f;
  auto rq = ResidualQuantizer::FromCodebooks(d, {k, k}, books);
  ASSERT_TRUE(rq.ok());
  std::vector<float> x(200 * d);
  for (float& v : x) v = gaussian(random);
  std::vector<int32_t> greedy(400);
  rq->Encode(x.data(), 200, greedy.data());
  const SidAssigner assigner(&*rq);
  SidOccupancy occupancy(rq->codebook_sizes());
  auto beam = assigner.Propose(x.data(), 200,
                               {.size_max = {kUnbounded, kUnbounded}, .suffix_cap = kUnbounded},
                               {.beam_width = 1}, occupancy);
  ASSERT_TRUE(beam.ok());
  EXPECT_EQ(beam->nearest_codes, greedy);
}

}  // namespace
}  // namespace quantd
