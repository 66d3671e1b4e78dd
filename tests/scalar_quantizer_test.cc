// 8-bit scalar quantizer: round-trip error within half a step inside the trained range, clamping
// outside it, distances equal to those of the decoded vector, and bad ranges refused.
#include "core/scalar_quantizer.h"

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace quantd {
namespace {

TEST(ScalarQuantizer8Test, RoundTripWithinHalfAStepAndClampsOutside) {
  const int64_t n = 500, d = 37;  // an odd d exercises the distance loops' tails
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0, 1);
  std::vector<float> x(static_cast<size_t>(n * d));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < d; ++j) x[i * d + j] = normal(rng) * static_cast<float>(j + 1) - j;
  }
  auto sq = ScalarQuantizer8::Train(x.data(), n, d);
  ASSERT_TRUE(sq.ok()) << sq.status();
  std::vector<uint8_t> codes(static_cast<size_t>(n * d));
  sq->Encode(x.data(), n, codes.data());
  std::vector<float> decoded(static_cast<size_t>(d));
  for (int64_t i = 0; i < n; ++i) {
    sq->Decode(codes.data() + i * d, decoded.data());
    for (int64_t j = 0; j < d; ++j) {
      ASSERT_NEAR(decoded[j], x[i * d + j], 0.5f * sq->step()[j] * 1.001f + 1e-5f) << i << " " << j;
    }
    // Distance to a code is the distance to its decoded vector.
    const float* q = x.data() + ((i + 1) % n) * d;
    double l2 = 0, dot = 0;
    for (int64_t j = 0; j < d; ++j) {
      l2 += (static_cast<double>(q[j]) - decoded[j]) * (q[j] - decoded[j]);
      dot += static_cast<double>(q[j]) * decoded[j];
    }
    EXPECT_NEAR(sq->Distance(q, codes.data() + i * d, true), l2, 1e-4 * (1 + l2));
    EXPECT_NEAR(sq->Distance(q, codes.data() + i * d, false), -dot, 1e-4 * (1 + std::abs(dot)));
  }
  // Outside the range: the ends.
  std::vector<float> far(static_cast<size_t>(d), 1e6f), near(static_cast<size_t>(d), -1e6f);
  std::vector<uint8_t> code(static_cast<size_t>(d));
  sq->Encode(far.data(), 1, code.data());
  for (uint8_t c : code) EXPECT_EQ(c, 255);
  sq->Encode(near.data(), 1, code.data());
  for (uint8_t c : code) EXPECT_EQ(c, 0);
}

TEST(ScalarQuantizer8Test, ConstantDimensionsAndBadRanges) {
  const std::vector<float> x = {1, 2, 1, 3, 1, 4};  // 3 x 2: dimension 0 constant
  auto sq = ScalarQuantizer8::Train(x.data(), 3, 2);
  ASSERT_TRUE(sq.ok());
  EXPECT_EQ(sq->step()[0], 0.0f);
  std::vector<uint8_t> code(2);
  std::vector<float> decoded(2);
  sq->Encode(x.data() + 2, 1, code.data());
  sq->Decode(code.data(), decoded.data());
  EXPECT_EQ(decoded[0], 1.0f);
  EXPECT_NEAR(decoded[1], 3.0f, 0.5f * sq->step()[1]);
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_FALSE(ScalarQuantizer8::FromRanges({0, 0}, {1}).ok());
  EXPECT_FALSE(ScalarQuantizer8::FromRanges({}, {}).ok());
  EXPECT_FALSE(ScalarQuantizer8::FromRanges({0, inf}, {1, 1}).ok());
  EXPECT_FALSE(ScalarQuantizer8::FromRanges({0, 0}, {-1, 1}).ok());
  EXPECT_FALSE(ScalarQuantizer8::FromRanges({0, 0}, {1, std::nanf("")}).ok());
  EXPECT_FALSE(ScalarQuantizer8::FromRanges({0, 3e38f}, {1, 1e37f}).ok());  // the top overflows
  EXPECT_FALSE(ScalarQuantizer8::Train(x.data(), 0, 2).ok());
}

}  // namespace
}  // namespace quantd
