// Semantic-ID rendering, parsing, suffixes and statistics.
#include "core/semantic_id.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace quantd {
namespace {

TEST(SemanticIdTest, RendersTokensWithLetterPerLevel) {
  const std::vector<int32_t> codes = {12, 201, 7};
  EXPECT_EQ(RenderSidTokens(codes), "<a_12><b_201><c_7>");
  EXPECT_EQ(RenderSidTokens(codes, 0), "<a_12><b_201><c_7><d_0>");
  EXPECT_EQ(RenderSidTokens(std::vector<int32_t>{5}, 3), "<a_5><b_3>");
}

TEST(SemanticIdTest, ParsesWhatItRenders) {
  auto parsed = ParseSidTokens("<a_12><b_201><c_7><d_0>");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, (std::vector<int64_t>{12, 201, 7, 0}));
  auto prefix = ParseSidTokens("<a_3>");
  ASSERT_TRUE(prefix.ok());
  EXPECT_EQ(*prefix, (std::vector<int64_t>{3}));
}

TEST(SemanticIdTest, RejectsMalformedTokens) {
  for (const char* bad :
       {"", "<a_1", "<b_1>", "<a_1><c_2>", "<a_-1>", "<a_x>", "a_1", "<a_1>x", "<a__1>", "<A_1>"}) {
    SCOPED_TRACE(bad);
    const absl::Status status = ParseSidTokens(bad).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  }
  const absl::Status status = ParseSidTokens("<a_1><c_2>").status();
  EXPECT_NE(status.message().find("'<c_2>'"), absl::string_view::npos) << status;
}

TEST(SemanticIdTest, FreshSuffixesCountWithinATuple) {
  // Tuples: A, B, A, A, B, C  ->  suffixes 0, 0, 1, 2, 1, 0
  const std::vector<int32_t> codes = {1, 2, 3, 4, 1, 2, 1, 2, 3, 4, 5, 6};
  EXPECT_EQ(AssignFreshSuffixes(codes.data(), 6, 2), (std::vector<uint32_t>{0, 0, 1, 2, 1, 0}));
}

TEST(SemanticIdTest, PreferredSuffixesAreKeptAndTheRestFillTheGaps) {
  // Tuples: A, A, A, B, A. Rows 1 and 3 keep suffixes 0 and 5; row 4's preference (0) is taken
  // by row 1, so it and row 0 take the lowest free ones (1, 2); row 2 keeps 7.
  const std::vector<int32_t> codes = {1, 1, 1, 1, 1, 1, 2, 2, 1, 1};
  const std::vector<int64_t> preferred = {-1, 0, 7, 5, 0};
  int64_t carried = 0;
  EXPECT_EQ(AssignSuffixes(codes.data(), 5, 2, preferred, &carried),
            (std::vector<uint32_t>{1, 0, 7, 5, 2}));
  EXPECT_EQ(carried, 3);
  // Without preferences: the fresh suffixes.
  EXPECT_EQ(AssignSuffixes(codes.data(), 5, 2, {}, &carried),
            AssignFreshSuffixes(codes.data(), 5, 2));
  EXPECT_EQ(carried, 0);
}

TEST(SemanticIdTest, RendersOneToken) {
  EXPECT_EQ(RenderSidToken(0, 12), "<a_12>");
  EXPECT_EQ(RenderSidToken(3, 0), "<d_0>");
}

TEST(SemanticIdTest, CollisionStats) {
  const std::vector<int32_t> codes = {1, 2, 3, 4, 1, 2, 1, 2, 3, 4, 5, 6};
  const CollisionStats stats = ComputeCollisions(codes.data(), 6, 2);
  EXPECT_EQ(stats.items, 6);
  EXPECT_EQ(stats.unique_tuples, 3);
  EXPECT_DOUBLE_EQ(stats.collision_rate, 0.5);
  EXPECT_EQ(stats.collision_groups, 2);
  EXPECT_EQ(stats.largest_group, 3);
  const CollisionStats none = ComputeCollisions(codes.data(), 0, 2);
  EXPECT_EQ(none.collision_rate, 0);
}

TEST(SemanticIdTest, LevelUsage) {
  // Level 0 of four items over a codebook of 4: codes 0, 0, 1, 3 (code 2 unused).
  const std::vector<int32_t> codes = {0, 9, 0, 9, 1, 9, 3, 9};
  const LevelUsage usage = ComputeLevelUsage(codes.data(), 4, 2, 4);
  EXPECT_EQ(usage.codes_used, 3);
  EXPECT_EQ(usage.size_min, 0);
  EXPECT_EQ(usage.size_max, 2);
  EXPECT_DOUBLE_EQ(usage.size_mean, 1.0);
  EXPECT_NEAR(usage.size_std, std::sqrt(0.5), 1e-12);
  // Entropy of {1/2, 1/4, 1/4} is 1.5 ln 2, so perplexity 2^1.5.
  EXPECT_NEAR(usage.perplexity, std::pow(2.0, 1.5), 1e-9);
  const LevelUsage uniform = ComputeLevelUsage(std::vector<int32_t>{0, 1, 2, 3}.data(), 4, 1, 4);
  EXPECT_NEAR(uniform.perplexity, 4.0, 1e-9);
  EXPECT_EQ(uniform.size_min, 1);
}

}  // namespace
}  // namespace quantd
