// Residual quantizer: encode/decode round trip, balanced levels meet their bounds, and on real
// recommender embeddings balanced RQ-KMeans collides no more than plain RQ-KMeans.
#include "core/residual_quantizer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "core/balanced_kmeans.h"
#include "core/semantic_id.h"
#include "gtest/gtest.h"
#include "io/vector_file.h"
#include "tests/test_support.h"

namespace quantd {
namespace {

using ::quantd::testing::DataFile;

RqOptions Levels(std::vector<int64_t> ks, bool balanced, uint64_t seed = 3) {
  RqOptions options;
  for (int64_t k : ks)
    options.levels.push_back({.k = k, .balanced = balanced, .bounds = {}, .initial_centroids = {}});
  options.kmeans.seed = seed;
  options.kmeans.max_iterations = 20;
  return options;
}

std::vector<int64_t> ClusterSizes(const std::vector<int32_t>& codes, int64_t n, int64_t levels,
                                  int64_t level, int64_t k) {
  std::vector<int64_t> sizes(static_cast<size_t>(k), 0);
  for (int64_t i = 0; i < n; ++i) ++sizes[codes[i * levels + level]];
  return sizes;
}

TEST(ResidualQuantizerTest, PlainEncodeReproducesTrainingCodesAndDecodeTheError) {
  auto data = ReadMatrix(DataFile("sift5k/sift5k_base.fvecs"), 3000);
  ASSERT_TRUE(data.ok());
  auto trained = TrainResidualQuantizer(data->values.data(), data->rows, data->dim,
                                        Levels({32, 16, 8}, false));
  ASSERT_TRUE(trained.ok()) << trained.status();
  const ResidualQuantizer& rq = trained->quantizer;
  ASSERT_EQ(rq.levels(), 3);
  std::vector<int32_t> codes(static_cast<size_t>(data->rows * 3));
  rq.Encode(data->values.data(), data->rows, codes.data());
  EXPECT_EQ(codes, trained->codes);  // greedy nearest codes are what plain training assigned

  // Decode + per-level MSE: the last level's MSE is the decoded reconstruction error.
  std::vector<float> decoded(data->values.size());
  rq.Decode(codes.data(), data->rows, decoded.data());
  double squared = 0;
  for (size_t i = 0; i < decoded.size(); ++i) {
    const double diff = static_cast<double>(data->values[i]) - decoded[i];
    squared += diff * diff;
  }
  const std::vector<double> mse = rq.LevelMse(data->values.data(), data->rows, codes.data());
  ASSERT_EQ(mse.size(), 3u);
  EXPECT_NEAR(mse[2], squared / static_cast<double>(decoded.size()), 1e-6 * mse[2]);
  EXPECT_GT(mse[0], mse[1]);
  EXPECT_GT(mse[1], mse[2]);
  for (int l = 0; l < 3; ++l) EXPECT_NEAR(mse[l], trained->levels[l].mse_after, 1e-6 * mse[l]);
}

// Over three seeds (one seed's collision counts are a few dozen items, too few to compare
// alone): every balanced level meets its bounds, and balanced RQ-KMeans collides less than plain
// with the same seeds, in total and in its largest groups.
TEST(ResidualQuantizerTest, BalancedBeatsPlainOnCollisionsAndMeetsBoundsOnSasrecBeauty) {
  auto data = ReadMatrix(DataFile("sasrec/Beauty-32d-sasrec.npy"));
  ASSERT_TRUE(data.ok());
  const int64_t n = data->rows;
  int64_t plain_colliding = 0, balanced_colliding = 0, plain_largest = 0, balanced_largest = 0;
  for (uint64_t seed : {42, 43, 44}) {
    auto plain = TrainResidualQuantizer(data->values.data(), n, data->dim,
                                        Levels({256, 256, 256}, false, seed));
    ASSERT_TRUE(plain.ok()) << plain.status();
    auto balanced = TrainResidualQuantizer(data->values.data(), n, data->dim,
                                           Levels({256, 256, 256}, true, seed));
    ASSERT_TRUE(balanced.ok()) << balanced.status();
    for (int64_t l = 0; l < 3; ++l) {
      const SizeBounds bounds = balanced->levels[l].bounds;
      EXPECT_EQ(bounds.size_min, static_cast<int64_t>(std::floor(n / 256.0 * 0.9)));
      EXPECT_EQ(bounds.size_max, static_cast<int64_t>(std::ceil(n / 256.0 * 1.1)));
      for (int64_t size : ClusterSizes(balanced->codes, n, 3, l, 256)) {
        ASSERT_GE(size, bounds.size_min) << "seed " << seed << " level " << l;
        ASSERT_LE(size, bounds.size_max) << "seed " << seed << " level " << l;
      }
    }
    const CollisionStats plain_stats = ComputeCollisions(plain->codes.data(), n, 3);
    const CollisionStats balanced_stats = ComputeCollisions(balanced->codes.data(), n, 3);
    plain_colliding += n - plain_stats.unique_tuples;
    balanced_colliding += n - balanced_stats.unique_tuples;
    plain_largest += plain_stats.largest_group;
    balanced_largest += balanced_stats.largest_group;
    // Balance costs some reconstruction error, but not much.
    EXPECT_LT(balanced->levels[2].mse_after, 1.25 * plain->levels[2].mse_after) << "seed " << seed;
  }
  EXPECT_LT(balanced_colliding, plain_colliding);
  EXPECT_LE(balanced_largest, plain_largest);
}

// Trained on a sample, balanced k-means assigns all rows from the sample's prices plus a repair:
// the bounds hold over all n, the objective is that of the returned assignment, and it is close
// to the exact balanced assignment of all rows to the same centroids.
TEST(ResidualQuantizerTest, BalancedKMeansOnSampleMeetsBoundsOverAllRows) {
  auto sift = ReadMatrix(DataFile("sift5k/sift5k_base.fvecs"));
  ASSERT_TRUE(sift.ok());
  const int64_t n = sift->rows, d = sift->dim, k = 16;
  KMeansOptions options;
  options.k = k;
  options.max_points_per_centroid = 39;  // 624 training rows of 5000
  options.seed = 7;
  const SizeBounds bounds = BoundsFromSlack(n, k, 0.05);
  auto result = TrainBalancedKMeans(sift->values.data(), n, d, bounds, options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->training_rows, 16 * 39);
  ASSERT_EQ(static_cast<int64_t>(result->assignments.size()), n);
  std::vector<int64_t> sizes(k, 0);
  for (int32_t c : result->assignments) ++sizes[c];
  for (int64_t c = 0; c < k; ++c) {
    EXPECT_GE(sizes[c], bounds.size_min) << c;
    EXPECT_LE(sizes[c], bounds.size_max) << c;
  }
  std::vector<float> costs(static_cast<size_t>(n * k));
  SquaredDistances(sift->values.data(), n, result->centroids.data(), k, d, costs.data(), 1);
  const double objective = AssignmentCost(costs.data(), n, k, result->assignments);
  EXPECT_NEAR(result->objective, objective, 1e-5 * objective);
  auto exact = BalancedAssign(costs.data(), n, k, bounds, BalancedMode::kExact);
  ASSERT_TRUE(exact.ok()) << exact.status();
  const double best = AssignmentCost(costs.data(), n, k, *exact);
  EXPECT_GE(objective, best * (1 - 1e-9));
  EXPECT_LE(objective, best * 1.04);  // measured 1.0% above
}

// Seed 001's layout: plain levels, only the last one balanced. The plain levels are exactly what
// an all-plain quantizer trains, the last level meets its bounds, and the options of
// RqOptions::kmeans (tolerance, restarts, max_iterations) reach every level, whose report gives
// the iterations run and the final objective.
TEST(ResidualQuantizerTest, MixedLevelsOnlyTheLastBalancedOnSasrecBeauty) {
  auto data = ReadMatrix(DataFile("sasrec/Beauty-32d-sasrec.npy"));
  ASSERT_TRUE(data.ok());
  const int64_t n = data->rows, d = data->dim, k = 64;
  RqOptions mixed = Levels({k, k, k}, false, 9);
  mixed.levels[2].balanced = true;
  mixed.kmeans.max_iterations = 8;
  mixed.kmeans.tolerance = 0.5;  // stops at the second iteration: proves tolerance arrives
  mixed.kmeans.restarts = 2;
  mixed.kmeans.num_threads = 2;
  std::vector<std::vector<int>> reported(3);
  mixed.on_progress = [&](int level, int iteration, double) {
    reported[level].push_back(iteration);
    return true;
  };
  auto trained = TrainResidualQuantizer(data->values.data(), n, d, mixed);
  ASSERT_TRUE(trained.ok()) << trained.status();
  RqOptions plain = mixed;
  plain.levels[2].balanced = false;
  plain.on_progress = nullptr;
  auto all_plain = TrainResidualQuantizer(data->values.data(), n, d, plain);
  ASSERT_TRUE(all_plain.ok()) << all_plain.status();

  const SizeBounds bounds = BoundsFromSlack(n, k, 0.1);
  for (int64_t l = 0; l < 3; ++l) {
    SCOPED_TRACE(l);
    const RqLevelReport& report = trained->levels[l];
    EXPECT_EQ(report.balanced, l == 2);
    // Tolerance 0.5: the second iteration never improves by half, so each restart runs 2.
    EXPECT_EQ(report.iterations, 2);
    EXPECT_EQ(report.total_iterations, 4);  // restarts arrive: 2 restarts x 2 iterations
    EXPECT_EQ(reported[l], (std::vector<int>{0, 1, 8, 9}));
    EXPECT_GE(report.restart, 0);
    EXPECT_LT(report.restart, 2);
    EXPECT_NEAR(report.objective, report.mse_after * static_cast<double>(n * d),
                1e-4 * report.objective);
    const std::vector<int64_t> sizes = ClusterSizes(trained->codes, n, 3, l, k);
    const auto [smallest, largest] = std::minmax_element(sizes.begin(), sizes.end());
    if (l == 2) {
      EXPECT_EQ(report.bounds.size_min, bounds.size_min);
      EXPECT_EQ(report.bounds.size_max, bounds.size_max);
      EXPECT_GE(*smallest, bounds.size_min);
      EXPECT_LE(*largest, bounds.size_max);
    } else {
      // Plain levels: the same codes as the all-plain quantizer, and not balanced.
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(trained->codes[i * 3 + l], all_plain->codes[i * 3 + l]) << "row " << i;
      }
      EXPECT_GT(*largest, bounds.size_max);
    }
  }
  // The plain last level would break the bounds; balancing it costs little reconstruction error
  // (after two iterations either may come out lower, so only an upper bound).
  const std::vector<int64_t> plain_sizes = ClusterSizes(all_plain->codes, n, 3, 2, k);
  EXPECT_GT(*std::max_element(plain_sizes.begin(), plain_sizes.end()), bounds.size_max);
  EXPECT_LT(trained->levels[2].objective, all_plain->levels[2].objective * 1.25);

  // Bad k-means options are refused before any level trains, naming the field.
  RqOptions bad = mixed;
  bad.kmeans.tolerance = 1;
  auto refused = TrainResidualQuantizer(data->values.data(), n, d, bad);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "kmeans.tolerance 1"))
      << refused.status();
}

TEST(ResidualQuantizerTest, RejectsBadOptions) {
  auto data = ReadMatrix(DataFile("sift5k/sift5k_base.fvecs"), 100);
  ASSERT_TRUE(data.ok());
  const auto status = [&](RqOptions options) {
    return TrainResidualQuantizer(data->values.data(), data->rows, data->dim, options).status();
  };
  EXPECT_EQ(status(Levels({}, false)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status(Levels(std::vector<int64_t>(17, 2), false)).code(),
            absl::StatusCode::kInvalidArgument);
  const absl::Status too_big = status(Levels({8, 101}, false));
  EXPECT_EQ(too_big.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(too_big.message().find("level 1"), absl::string_view::npos) << too_big;
  RqOptions infeasible = Levels({10}, true);
  infeasible.levels[0].bounds = {.size_min = 11, .size_max = 20};
  const absl::Status bounds = status(infeasible);
  EXPECT_EQ(bounds.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bounds.message().find("level 0"), absl::string_view::npos) << bounds;

  EXPECT_FALSE(ResidualQuantizer::FromCodebooks(4, {2}, {std::vector<float>(7)}).ok());
  EXPECT_FALSE(ResidualQuantizer::FromCodebooks(0, {1}, {std::vector<float>()}).ok());
  EXPECT_TRUE(ResidualQuantizer::FromCodebooks(4, {2}, {std::vector<float>(8)}).ok());
}

TEST(ResidualQuantizerTest, CancelledThroughProgress) {
  auto data = ReadMatrix(DataFile("sift5k/sift5k_base.fvecs"), 1000);
  ASSERT_TRUE(data.ok());
  for (bool balanced : {false, true}) {
    RqOptions options = Levels({16, 16}, balanced);
    options.on_progress = [](int level, int, double) { return level < 1; };
    EXPECT_EQ(
        TrainResidualQuantizer(data->values.data(), data->rows, data->dim, options).status().code(),
        absl::StatusCode::kCancelled);
  }
}

// A quantizer trained on the first 1000 SIFT rows: levels of 16, 8 and 4 codes, d = 128.
ResidualQuantizer SiftQuantizer() {
  auto data = ReadMatrix(DataFile("sift5k/sift5k_base.fvecs"), 1000);
  EXPECT_TRUE(data.ok()) << data.status();
  if (!data.ok()) return ResidualQuantizer();
  auto trained =
      TrainResidualQuantizer(data->values.data(), data->rows, data->dim, Levels({16, 8, 4}, false));
  EXPECT_TRUE(trained.ok()) << trained.status();
  return trained.ok() ? std::move(trained->quantizer) : ResidualQuantizer();
}

TEST(ResidualQuantizerSerializeTest, RoundTripIsExact) {
  const ResidualQuantizer rq = SiftQuantizer();
  ASSERT_EQ(rq.levels(), 3);
  const std::string blob = rq.Serialize();
  // Header (8 + 4 + 8 + 8 bytes), three sizes, then (16 + 8 + 4) x 128 floats.
  EXPECT_EQ(blob.size(), 28u + 3 * 8 + 28 * 128 * sizeof(float));
  auto loaded = ResidualQuantizer::Deserialize(blob);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->dimension(), 128);
  EXPECT_EQ(loaded->codebook_sizes(), rq.codebook_sizes());
  for (int64_t l = 0; l < 3; ++l) EXPECT_EQ(loaded->codebook(l), rq.codebook(l)) << l;
  EXPECT_EQ(loaded->Serialize(), blob);

  auto queries = ReadMatrix(DataFile("sift5k/sift5k_query.fvecs"), 100);
  ASSERT_TRUE(queries.ok());
  std::vector<int32_t> expected(static_cast<size_t>(queries->rows * 3));
  std::vector<int32_t> codes(expected.size());
  rq.Encode(queries->values.data(), queries->rows, expected.data());
  loaded->Encode(queries->values.data(), queries->rows, codes.data());
  EXPECT_EQ(codes, expected);
}

TEST(ResidualQuantizerSerializeTest, DamagedBlobsAreInvalidArgumentNamingTheField) {
  const std::string blob = SiftQuantizer().Serialize();
  ASSERT_FALSE(blob.empty());
  const auto error = [](const std::string& bytes) {
    return ResidualQuantizer::Deserialize(bytes).status();
  };
  // Every cut, and one byte too many.
  for (size_t cut = 0; cut < blob.size(); cut += (cut < 64 ? 1 : 509)) {
    EXPECT_EQ(error(blob.substr(0, cut)).code(), absl::StatusCode::kInvalidArgument) << cut;
  }
  EXPECT_EQ(error(blob.substr(0, blob.size() - 1)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(error(blob + "x").message(), "1 trailing bytes"));

  // Header fields: offsets 0 magic, 8 version, 12 d, 20 L, 28 k_0.
  const auto with = [&blob](size_t offset, auto value) {
    std::string bad = blob;
    std::memcpy(bad.data() + offset, &value, sizeof(value));
    return bad;
  };
  EXPECT_TRUE(absl::StrContains(error(with(0, 'X')).message(), "bad magic"));
  EXPECT_TRUE(absl::StrContains(error(with(8, uint32_t{2})).message(), "version 2"));
  EXPECT_TRUE(absl::StrContains(error(with(12, int64_t{0})).message(), "d 0"));
  EXPECT_TRUE(absl::StrContains(error(with(12, int64_t{1} << 40)).message(), "d 1099511627776"));
  EXPECT_TRUE(absl::StrContains(error(with(20, int64_t{0})).message(), "L 0"));
  EXPECT_TRUE(absl::StrContains(error(with(20, int64_t{17})).message(), "L 17"));
  EXPECT_TRUE(absl::StrContains(error(with(28, int64_t{-1})).message(), "k -1"));
  // A huge k is refused before anything is allocated for it.
  EXPECT_TRUE(
      absl::StrContains(error(with(28, int64_t{1} << 30)).message(), "needs more than the"));
  // Shapes that still add up to the blob's size but move the codebook boundaries are caught by
  // the trailing-bytes check.
  EXPECT_TRUE(absl::StrContains(error(with(28, int64_t{8})).message(), "trailing bytes"));
  // Non-finite values: codebook 1, row 2, component 5.
  const size_t value_offset = 28 + 3 * 8 + ((16 + 2) * 128 + 5) * sizeof(float);
  const absl::Status nan = error(with(value_offset, std::nanf("")));
  EXPECT_EQ(nan.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(nan.message(), "codebook 1 [row 2, component 5] = nan")) << nan;
  EXPECT_EQ(error(with(value_offset, std::numeric_limits<float>::infinity())).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ResidualQuantizerSerializeTest, RandomDamageNeverCrashes) {
  const std::string blob = SiftQuantizer().Serialize();
  ASSERT_FALSE(blob.empty());
  std::mt19937_64 rng(5);
  int accepted = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    std::string bad = blob;
    // Damage the header (first 52 bytes) as often as the values.
    const size_t span = trial % 2 == 0 ? 52 : bad.size();
    for (int flips = 1 + static_cast<int>(rng() % 4); flips > 0; --flips) {
      bad[rng() % span] ^= static_cast<char>(1 + rng() % 255);
    }
    auto loaded = ResidualQuantizer::Deserialize(bad);
    if (loaded.ok()) {
      ++accepted;  // a value changed to another finite value: still a well-formed quantizer
      EXPECT_EQ(loaded->dimension(), 128);
    } else {
      EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
    }
  }
  EXPECT_LT(accepted, 2000);
}

}  // namespace
}  // namespace quantd
