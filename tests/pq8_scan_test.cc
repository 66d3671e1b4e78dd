// The 8-bit PQ scan: every kernel leaves the heap exactly as the scalar loop does, and the
// lower bound behind the SIMD filter holds (the filter never drops a code that could enter).
#include "core/pq8_scan.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

namespace quantd::pq8 {
namespace {

enum class Tables { kGaussian, kSquares, kTies, kLargeOffset, kNegative };

struct Case {
  int64_t n;
  int64_t m;
  Tables tables;
  float base;
};

std::vector<float> MakeTable(int64_t m, Tables kind, std::mt19937_64& rng) {
  std::vector<float> sim(static_cast<size_t>(m * 256));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> small(0, 3);
  for (float& v : sim) {
    switch (kind) {
      case Tables::kGaussian:
        v = normal(rng);
        break;
      case Tables::kSquares: {  // L2 residual tables: non-negative, skewed
        const float x = normal(rng);
        v = x * x;
        break;
      }
      case Tables::kTies:  // few distinct values: many codes share a distance
        v = static_cast<float>(small(rng));
        break;
      case Tables::kLargeOffset:  // entries far above their spread: float rounding matters
        v = 1.0e4f + 1.0e-3f * normal(rng);
        break;
      case Tables::kNegative:  // inner products: every entry negative
        v = -std::fabs(normal(rng)) - 5.0f;
        break;
    }
  }
  return sim;
}

// Codes near one another, as in an IVF list (a few prototypes, perturbed), so that many codes
// come close to the heap's threshold.
std::vector<uint8_t> MakeCodes(int64_t n, int64_t m, std::mt19937_64& rng) {
  std::vector<uint8_t> codes(static_cast<size_t>(n * m));
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<int> coin(0, 3);
  std::vector<uint8_t> prototype(static_cast<size_t>(m));
  for (uint8_t& b : prototype) b = static_cast<uint8_t>(byte(rng));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t s = 0; s < m; ++s) {
      codes[i * m + s] = coin(rng) == 0 ? static_cast<uint8_t>(byte(rng)) : prototype[s];
    }
  }
  return codes;
}

std::vector<Candidate> ScanTwoLists(Kernel kernel, const std::vector<uint8_t>& codes,
                                    const std::vector<uint64_t>& ids, int64_t n, int64_t m,
                                    const std::vector<float>& sim, float base, int64_t k,
                                    const IdSelector* selector, ScanCounts* counts) {
  TopK top(k, n, selector);
  Scratch scratch;
  // Two calls, as two lists of one query: the second starts with a full heap.
  const int64_t half = n / 3;
  ScanWith(kernel, codes.data(), ids.data(), half, m, sim.data(), base, top, scratch, counts);
  ScanWith(kernel, codes.data() + half * m, ids.data() + half, n - half, m, sim.data(), base, top,
           scratch, counts);
  return top.Sorted();
}

void ExpectSame(const std::vector<Candidate>& want, const std::vector<Candidate>& got) {
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(want[i].id, got[i].id) << "rank " << i;
    // Bit-identical distances: the SIMD kernel rescores survivors with the scalar sum.
    uint32_t a, b;
    std::memcpy(&a, &want[i].distance, 4);
    std::memcpy(&b, &got[i].distance, 4);
    EXPECT_EQ(a, b) << "rank " << i << ": " << want[i].distance << " vs " << got[i].distance;
  }
}

class Pq8ScanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!KernelSupported(Kernel::kAvx512Vbmi)) {
      GTEST_SKIP() << "this CPU has no AVX-512 VBMI; the scalar kernel is the reference";
    }
  }
};

TEST(Pq8ScanScalarTest, DistanceIsTheSumInItsFixedOrder) {
  std::mt19937_64 rng(1);
  for (int64_t m : {3, 4, 8, 12, 16, 20, 32, 56, 64}) {
    const std::vector<float> sim = MakeTable(m, Tables::kGaussian, rng);
    const std::vector<uint8_t> code = MakeCodes(1, m, rng);
    float a[4] = {0, 0, 0, 0};
    const int lanes = m % 4 == 0 ? 4 : 2;
    for (int64_t s = 0; s < m; ++s) a[s % lanes] += sim[s * 256 + code[s]];
    const float want = lanes == 4 ? 0.5f + ((a[0] + a[1]) + (a[2] + a[3])) : 0.5f + (a[0] + a[1]);
    EXPECT_EQ(Distance(code.data(), m, sim.data(), 0.5f), want) << "m " << m;
  }
}

TEST_F(Pq8ScanTest, EveryCaseMatchesTheScalarScanExactly) {
  std::mt19937_64 rng(7);
  const Case cases[] = {
      {0, 16, Tables::kSquares, 0.0f},         {1, 16, Tables::kSquares, 0.0f},
      {191, 16, Tables::kSquares, 1.0f},       {192, 16, Tables::kSquares, 1.0f},
      {1000, 16, Tables::kSquares, 2.5f},      {4097, 16, Tables::kGaussian, -3.0f},
      {3000, 32, Tables::kSquares, 0.0f},      {3000, 32, Tables::kTies, 0.0f},
      {3000, 64, Tables::kSquares, 10.0f},     {3000, 56, Tables::kGaussian, 0.0f},
      {3000, 8, Tables::kSquares, 0.0f},       {3000, 4, Tables::kTies, 0.0f},
      {3000, 12, Tables::kSquares, 0.0f},      {3000, 24, Tables::kNegative, 0.0f},
      {3000, 17, Tables::kGaussian, 0.0f},     {3000, 6, Tables::kSquares, 0.0f},
      {3000, 3, Tables::kTies, 0.0f},          {3000, 16, Tables::kLargeOffset, 0.0f},
      {3000, 32, Tables::kLargeOffset, -1e5f}, {3000, 16, Tables::kTies, 0.0f},
      {3000, 16, Tables::kNegative, 100.0f},   {2000, 96, Tables::kSquares, 0.0f},
  };
  for (const Case& c : cases) {
    const std::vector<float> sim = MakeTable(c.m, c.tables, rng);
    const std::vector<uint8_t> codes = MakeCodes(c.n, c.m, rng);
    std::vector<uint64_t> ids(static_cast<size_t>(c.n));
    for (int64_t i = 0; i < c.n; ++i) ids[i] = static_cast<uint64_t>((i * 7919) % 100003);
    for (int64_t k : {1, 10, 100}) {
      SCOPED_TRACE(testing::Message() << "n " << c.n << " m " << c.m << " tables "
                                      << static_cast<int>(c.tables) << " k " << k);
      const auto want =
          ScanTwoLists(Kernel::kScalar, codes, ids, c.n, c.m, sim, c.base, k, nullptr, nullptr);
      ScanCounts counts;
      const auto got =
          ScanTwoLists(Kernel::kAvx512Vbmi, codes, ids, c.n, c.m, sim, c.base, k, nullptr, &counts);
      ExpectSame(want, got);
      if (c.n >= 1000) {
        EXPECT_GT(counts.filtered, 0) << "the SIMD kernel did not run";
      }
    }
  }
}

TEST_F(Pq8ScanTest, SelectorSeesTheSameCandidates) {
  std::mt19937_64 rng(11);
  const int64_t n = 5000, m = 16;
  const std::vector<float> sim = MakeTable(m, Tables::kSquares, rng);
  const std::vector<uint8_t> codes = MakeCodes(n, m, rng);
  std::vector<uint64_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[i] = static_cast<uint64_t>(i);
  const IdSet denied(std::vector<uint64_t>{0, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610});
  IdSelector selector;
  selector.ids = &denied;
  selector.deny = true;
  const auto want =
      ScanTwoLists(Kernel::kScalar, codes, ids, n, m, sim, 0.0f, 10, &selector, nullptr);
  const auto got =
      ScanTwoLists(Kernel::kAvx512Vbmi, codes, ids, n, m, sim, 0.0f, 10, &selector, nullptr);
  ExpectSame(want, got);
}

#if defined(__x86_64__)
// The property the filter rests on: a code whose float distance d is at or under the threshold
// the table was built for has a byte sum of at most Limit(d).
TEST_F(Pq8ScanTest, ByteSumNeverExceedsTheLimitOfItsOwnDistance) {
  std::mt19937_64 rng(3);
  for (Tables kind : {Tables::kGaussian, Tables::kSquares, Tables::kTies, Tables::kLargeOffset,
                      Tables::kNegative}) {
    for (int64_t m : {4, 16, 32, 56}) {
      SCOPED_TRACE(testing::Message() << "tables " << static_cast<int>(kind) << " m " << m);
      const int64_t n = 4000;
      const std::vector<float> sim = MakeTable(m, kind, rng);
      const std::vector<uint8_t> codes = MakeCodes(n, m, rng);
      std::vector<float> distances(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) distances[i] = Distance(&codes[i * m], m, sim.data(), 1.0f);
      std::vector<float> sorted = distances;
      std::sort(sorted.begin(), sorted.end());
      // Thresholds as a heap would have them (the 10th and the 1st best), the median and the
      // largest (every code at or under it).
      for (float threshold : {sorted[9], sorted[0], sorted[n / 2], sorted[n - 1]}) {
        internal::Bound bound;
        std::vector<uint8_t> lut(static_cast<size_t>(m * 256));
        if (!bound.Build(sim.data(), m, 1.0f, threshold, lut.data())) continue;
        int64_t tight = 0;
        for (int64_t i = 0; i < n; ++i) {
          int64_t sum = 0;
          for (int64_t s = 0; s < m; ++s) sum += lut[s * 256 + codes[i * m + s]];
          if (distances[i] > threshold) continue;  // the filter runs under the threshold only
          const int32_t limit = bound.Limit(distances[i]);
          ASSERT_LE(sum, limit) << "code " << i << " distance " << distances[i];
          if (distances[i] <= threshold && sum + m >= limit) ++tight;
        }
        // Not vacuous: some codes under the threshold come within m of their limit (except
        // where the rounding margin of entries far above their spread dominates).
        if (threshold == sorted[n / 2] && kind != Tables::kLargeOffset) {
          EXPECT_GT(tight, 0);
        }
      }
    }
  }
}

TEST_F(Pq8ScanTest, NoScaleWithoutRoomUnderTheThreshold) {
  const int64_t m = 4;
  std::vector<float> sim(static_cast<size_t>(m * 256), 2.0f);
  std::vector<uint8_t> lut(static_cast<size_t>(m * 256));
  internal::Bound bound;
  // Every distance is 0 + 4 x 2 = 8: a threshold well below cannot be scaled to.
  EXPECT_FALSE(bound.Build(sim.data(), m, 0.0f, 7.0f, lut.data()));
  EXPECT_FALSE(bound.Build(sim.data(), m, 0.0f, INFINITY, lut.data()));
  sim[5] = -INFINITY;  // a code can reach -inf: no finite scale
  EXPECT_FALSE(bound.Build(sim.data(), m, 0.0f, 9.0f, lut.data()));
}

// Entries that are not finite (overflowing tables): NaN distances never enter, +inf ones not
// once the heap is full, -inf ones always; the SIMD kernel must agree.
TEST_F(Pq8ScanTest, TablesWithInfinitiesAndNanMatchTheScalarScan) {
  std::mt19937_64 rng(13);
  const int64_t n = 3000, m = 16;
  const std::vector<uint8_t> codes = MakeCodes(n, m, rng);
  std::vector<uint64_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[i] = static_cast<uint64_t>(i);
  for (float odd : {NAN, INFINITY, -INFINITY}) {
    std::vector<float> sim = MakeTable(m, Tables::kSquares, rng);
    for (int64_t s = 0; s < m; s += 3) sim[s * 256 + codes[(s * 97) * m + s]] = odd;
    SCOPED_TRACE(testing::Message() << "entry " << odd);
    const auto want =
        ScanTwoLists(Kernel::kScalar, codes, ids, n, m, sim, 0.0f, 10, nullptr, nullptr);
    const auto got =
        ScanTwoLists(Kernel::kAvx512Vbmi, codes, ids, n, m, sim, 0.0f, 10, nullptr, nullptr);
    ASSERT_EQ(want.size(), got.size());
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(want[i].id, got[i].id) << "rank " << i;
      EXPECT_TRUE(want[i].distance == got[i].distance ||
                  (std::isnan(want[i].distance) && std::isnan(got[i].distance)))
          << "rank " << i;
    }
  }
}

#endif  // __x86_64__

TEST_F(Pq8ScanTest, FilterRescoresFewCodesOnClusteredCodes) {
  std::mt19937_64 rng(5);
  const int64_t n = 20000, m = 16;
  const std::vector<float> sim = MakeTable(m, Tables::kSquares, rng);
  std::vector<uint8_t> codes(static_cast<size_t>(n * m));
  std::uniform_int_distribution<int> byte(0, 255);
  for (uint8_t& b : codes) b = static_cast<uint8_t>(byte(rng));
  std::vector<uint64_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[i] = static_cast<uint64_t>(i);
  ScanCounts counts;
  ScanTwoLists(Kernel::kAvx512Vbmi, codes, ids, n, m, sim, 0.0f, 10, nullptr, &counts);
  EXPECT_GT(counts.filtered, n / 2);
  // Uniform codes: a 10-best threshold leaves a small tail under the bound.
  EXPECT_LT(counts.rescored, counts.filtered / 10) << counts.rescored << " of " << counts.filtered;
}

}  // namespace
}  // namespace quantd::pq8
