// The run-time dispatched product x . c^T against a double-precision reference, for every
// kernel this CPU supports and for shapes that exercise every edge (row and column remainders,
// d across the L1 slice).
#include "core/gemm.h"

#include <cmath>
#include <random>
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

TEST(GemmTest, BestKernelIsNamed) { EXPECT_FALSE(GemmKernelName(BestGemmKernel()).empty()); }

}  // namespace
}  // namespace quantd
