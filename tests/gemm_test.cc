// The run-time dispatched product x . c^T against a double-precision reference, for every
// kernel this CPU supports and for shapes that exercise every edge (row and column remainders,
// d across the L1 slice).
#include "core/gemm.h"

#include <cmath>
#include <random>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace quantd {
namespace {

std::vector<GemmKernel> SupportedKernels() {
  std::vector<GemmKernel> kernels = {GemmKernel::kPortable};
  if (BestGemmKernel() == GemmKernel::kAvx2 || BestGemmKernel() == GemmKernel::kAvx512) {
    kernels.push_back(GemmKernel::kAvx2);
  }
  if (BestGemmKernel() == GemmKernel::kAvx512) kernels.push_back(GemmKernel::kAvx512);
  return kernels;
}

std::vector<float> Random(int64_t count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(count));
  for (float& x : v) x = normal(rng);
  return v;
}

TEST(GemmTest, MatchesDoubleReferenceForEveryKernelAndShape) {
  for (GemmKernel kernel : SupportedKernels()) {
    for (int64_t m : {1, 5, 6, 7, 13, 64}) {
      for (int64_t k : {1, 15, 16, 17, 33, 64}) {
        for (int64_t d : {1, 3, 128, 257, 600}) {
          SCOPED_TRACE(::testing::Message()
                       << GemmKernelName(kernel) << " m=" << m << " k=" << k << " d=" << d);
          const std::vector<float> x = Random(m * d, 1 + m * 1000 + d);
          const std::vector<float> c = Random(k * d, 2 + k * 1000 + d);
          const PackedRhs packed(c.data(), k, d, kernel);
          // A wider output stride, with sentinels that must stay untouched.
          const int64_t ldo = k + 3;
          std::vector<float> out(static_cast<size_t>(m * ldo), -7.0f);
          packed.Multiply(x.data(), m, out.data(), ldo);
          for (int64_t i = 0; i < m; ++i) {
            for (int64_t j = 0; j < k; ++j) {
              double exact = 0, magnitude = 0;
              for (int64_t p = 0; p < d; ++p) {
                exact += static_cast<double>(x[i * d + p]) * c[j * d + p];
                magnitude += std::abs(static_cast<double>(x[i * d + p]) * c[j * d + p]);
              }
              ASSERT_NEAR(out[i * ldo + j], exact, 1e-5 * magnitude + 1e-6) << i << "," << j;
            }
            for (int64_t j = k; j < ldo; ++j) ASSERT_EQ(out[i * ldo + j], -7.0f);
          }
        }
      }
    }
  }
}

TEST(GemmTest, RepackAndRepackTransposedGiveTheSamePacking) {
  // Repacking a used object (larger, then smaller shapes: stale padding must not leak) and
  // packing from c^T give exactly the product of a fresh packing, for every kernel.
  for (GemmKernel kernel : SupportedKernels()) {
    PackedRhs reused(nullptr, 0, 0, kernel);
    for (const auto& [k, d] : std::vector<std::pair<int64_t, int64_t>>{
             {70, 300}, {17, 5}, {33, 129}, {1, 1}, {40, 64}}) {
      SCOPED_TRACE(::testing::Message() << GemmKernelName(kernel) << " k=" << k << " d=" << d);
      const int64_t m = 7;
      const std::vector<float> x = Random(m * d, 3 + k);
      const std::vector<float> c = Random(k * d, 4 + d);
      std::vector<float> c_t(static_cast<size_t>(k * d));
      for (int64_t j = 0; j < k; ++j) {
        for (int64_t p = 0; p < d; ++p) c_t[p * k + j] = c[j * d + p];
      }
      std::vector<float> fresh(m * k), repacked(m * k), transposed(m * k);
      PackedRhs(c.data(), k, d, kernel).Multiply(x.data(), m, fresh.data(), k);
      reused.Repack(c.data(), k, d);
      reused.Multiply(x.data(), m, repacked.data(), k);
      EXPECT_EQ(repacked, fresh);
      reused.RepackTransposed(c_t.data(), k, d);
      reused.Multiply(x.data(), m, transposed.data(), k);
      EXPECT_EQ(transposed, fresh);
    }
  }
}

TEST(GemmTest, BestKernelIsNamed) { EXPECT_FALSE(GemmKernelName(BestGemmKernel()).empty()); }

}  // namespace
}  // namespace quantd
