// core/vectors.h: the one row normalisation (tiny, huge and zero rows) and batch validation.
#include "core/vectors.h"

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "gtest/gtest.h"

namespace quantd {
namespace {

// L2 norm of row i of x (n x d), in double.
double RowNorm(const std::vector<float>& x, int64_t d, int64_t i) {
  double squared = 0;
  for (int64_t j = 0; j < d; ++j) squared += static_cast<double>(x[i * d + j]) * x[i * d + j];
  return std::sqrt(squared);
}

bool AllFinite(const std::vector<float>& x) {
  for (float v : x) {
    if (!std::isfinite(v)) return false;
  }
  return true;
}

TEST(NormalizeRowsTest, SubnormalRowGetsTheDirectionOfItsNormalScaleTwin) {
  // Eight components of 1e-45 (the smallest subnormal, 1.4e-45): a float scale 1 / ||x|| is
  // 2.5e44 and overflows to inf.
  constexpr int64_t d = 8;
  std::vector<float> tiny(d, 1e-45f);
  ASSERT_GT(tiny[0], 0.0f);
  std::vector<float> unit(d, 3.0f);
  NormalizeRows(tiny.data(), 1, d);
  NormalizeRows(unit.data(), 1, d);
  ASSERT_TRUE(AllFinite(tiny));
  EXPECT_NEAR(RowNorm(tiny, d, 0), 1.0, 1e-6);
  EXPECT_EQ(tiny, unit);  // the same direction, to the bit

  // Subnormals of different sizes and signs, and a row mixing one subnormal with zeros.
  std::vector<float> mixed = {1e-45f, -3e-45f, 0.0f, 7e-44f, 2e-40f, -1e-42f, 5e-45f, 0.0f,
                              0.0f,   0.0f,    0.0f, 0.0f,   0.0f,   -1e-45f, 0.0f,   0.0f};
  NormalizeRows(mixed.data(), 2, d);
  ASSERT_TRUE(AllFinite(mixed));
  EXPECT_NEAR(RowNorm(mixed, d, 0), 1.0, 1e-6);
  EXPECT_NEAR(RowNorm(mixed, d, 1), 1.0, 1e-6);
  EXPECT_EQ(mixed[d + 5], -1.0f);
  EXPECT_GT(mixed[4], 0.99f);  // the largest component dominates the direction
}

TEST(NormalizeRowsTest, HugeRowsAtTheLargestDimensionStayFinite) {
  // Components near FLT_MAX over d = kMaxDimension: the squared norm (~7e81) overflows float.
  constexpr int64_t d = kMaxDimension;
  std::vector<float> x(2 * d);
  for (int64_t j = 0; j < d; ++j) {
    x[j] = (j % 2 == 0) ? 1e38f : -3e38f;
    x[d + j] = FLT_MAX;
  }
  NormalizeRows(x.data(), 2, d);
  ASSERT_TRUE(AllFinite(x));
  EXPECT_NEAR(RowNorm(x, d, 0), 1.0, 1e-6);
  EXPECT_NEAR(RowNorm(x, d, 1), 1.0, 1e-6);
  EXPECT_FLOAT_EQ(x[d], 1.0f / 256.0f);  // 1 / sqrt(65536)
  EXPECT_FLOAT_EQ(x[1] / x[0], -3.0f);   // the direction is kept
}

TEST(NormalizeRowsTest, ZeroRowsStayZeroBetweenOthers) {
  constexpr int64_t d = 4;
  std::vector<float> x = {0, 0, 0, 0, 3, 0, 4, 0, 0, 0, 0, 0, 1e-45f, 0, 0, 0};
  NormalizeRows(x.data(), 4, d);
  const std::vector<float> expected = {0, 0, 0, 0, 0.6f, 0, 0.8f, 0, 0, 0, 0, 0, 1, 0, 0, 0};
  EXPECT_EQ(x, expected);
}

TEST(NormalizeRowsTest, CopyingVariantLeavesItsInputAlone) {
  constexpr int64_t d = 3;
  const std::vector<float> x = {1e-45f, 1e-45f, 0, 2, 0, 0, 0, 0, 0};
  std::vector<float> in_place = x;
  NormalizeRows(in_place.data(), 3, d);
  EXPECT_EQ(NormalizedRows(x.data(), 3, d), in_place);
  EXPECT_EQ(x[0], 1e-45f);
  EXPECT_TRUE(NormalizedRows(x.data(), 0, d).empty());
}

TEST(CheckVectorsTest, TinyCosineRowsAreAcceptedAndZeroRowsRefused) {
  const std::vector<float> tiny(8, 1e-45f);
  EXPECT_TRUE(CheckVectors(tiny.data(), 1, 8, Metric::kCosine).ok());
  const std::vector<float> zero(8, 0.0f);
  const absl::Status status = CheckVectors(zero.data(), 1, 8, Metric::kCosine);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(CheckVectors(zero.data(), 1, 8, Metric::kL2).ok());
  std::vector<float> inf(8, 1.0f);
  inf[2] = std::numeric_limits<float>::infinity();
  EXPECT_EQ(CheckVectors(inf.data(), 1, 8, Metric::kL2).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace quantd
