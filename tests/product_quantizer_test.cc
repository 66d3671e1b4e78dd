// Product quantizer on SIFT descriptors: reconstruction error against M and nbits, codes
// against a brute-force nearest-centroid reference (8-bit and the 4-bit nibble packing),
// distance tables against distances to the decoded vectors, determinism, and bad inputs.
#include "core/product_quantizer.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "io/vector_file.h"
#include "tests/test_support.h"

namespace quantd {
namespace {

using ::quantd::testing::DataFile;

Matrix Sift(int64_t rows) {
  const std::string path = DataFile("sift5k/sift5k_base.fvecs");
  if (path.empty()) return {};
  auto m = ReadMatrix(path, rows);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? *std::move(m) : Matrix{};
}

ProductQuantizerOptions Options(int64_t m, int nbits) {
  ProductQuantizerOptions options;
  options.m = m;
  options.nbits = nbits;
  options.seed = 7;
  options.max_iterations = 10;
  options.num_threads = 1;
  return options;
}

// Mean over rows of ||x - decode(encode(x))||^2.
double RoundTripError(const ProductQuantizer& pq, const Matrix& x) {
  std::vector<uint8_t> codes(static_cast<size_t>(x.rows * pq.code_size()));
  EXPECT_TRUE(pq.Encode(x.values, codes.data()).ok());
  std::vector<float> decoded(x.values.size());
  pq.Decode(codes.data(), x.rows, decoded.data());
  double sum = 0;
  for (size_t i = 0; i < decoded.size(); ++i) {
    const double diff = static_cast<double>(x.values[i]) - decoded[i];
    sum += diff * diff;
  }
  return sum / static_cast<double>(x.rows);
}

TEST(ProductQuantizerTest, RoundTripErrorDecreasesWithMAndBits) {
  const Matrix x = Sift(3000);
  ASSERT_EQ(x.rows, 3000);
  double total = 0;  // mean squared norm: the error of quantizing everything to zero
  for (float v : x.values) total += static_cast<double>(v) * v;
  total /= static_cast<double>(x.rows);
  double previous = total;
  for (int64_t m : {2, 4, 8, 16}) {
    auto pq = ProductQuantizer::Train(x.values.data(), x.rows, x.dim, Options(m, 8));
    ASSERT_TRUE(pq.ok()) << pq.status();
    EXPECT_EQ(pq->code_size(), m);
    const double error = RoundTripError(*pq, x);
    EXPECT_LT(error, 0.9 * previous) << "M " << m;
    previous = error;
  }
  auto pq4 = ProductQuantizer::Train(x.values.data(), x.rows, x.dim, Options(16, 4));
  ASSERT_TRUE(pq4.ok()) << pq4.status();
  EXPECT_EQ(pq4->code_size(), 8);
  const double error4 = RoundTripError(*pq4, x);
  EXPECT_GT(error4, previous);  // 16 x 4 bits loses more than 16 x 8 bits
  EXPECT_LT(error4, 0.5 * total);
}

TEST(ProductQuantizerTest, CodesAreTheNearestCentroidsIn8And4Bits) {
  const Matrix x = Sift(1000);
  ASSERT_EQ(x.rows, 1000);
  for (int nbits : {8, 4}) {
    auto pq = ProductQuantizer::Train(x.values.data(), x.rows, x.dim, Options(8, nbits));
    ASSERT_TRUE(pq.ok()) << pq.status();
    std::vector<uint8_t> codes(static_cast<size_t>(x.rows * pq->code_size()));
    ASSERT_TRUE(pq->Encode(x.values, codes.data(), 2).ok());
    int64_t mismatches = 0;
    for (int64_t i = 0; i < x.rows; ++i) {
      const uint8_t* code = codes.data() + i * pq->code_size();
      for (int64_t m = 0; m < pq->m(); ++m) {
        const float* sub = x.values.data() + i * x.dim + m * pq->dsub();
        double best = std::numeric_limits<double>::infinity();
        double chosen = 0;
        for (int64_t j = 0; j < pq->ksub(); ++j) {
          double dist = 0;
          for (int64_t t = 0; t < pq->dsub(); ++t) {
            const double diff = static_cast<double>(sub[t]) - pq->centroid(m, j)[t];
            dist += diff * diff;
          }
          best = std::min(best, dist);
          if (j == pq->GetCode(code, m)) chosen = dist;
        }
        // Float GEMM distances may pick a different centroid only on a near tie.
        if (chosen > best * (1 + 1e-4) + 1e-3) ++mismatches;
      }
      if (nbits == 4) {  // sub-quantizer 2b in the low nibble of byte b, 2b + 1 in the high one
        EXPECT_EQ(pq->GetCode(code, 0), code[0] & 15);
        EXPECT_EQ(pq->GetCode(code, 1), code[0] >> 4);
      }
    }
    EXPECT_EQ(mismatches, 0) << "nbits " << nbits;
  }
}

TEST(ProductQuantizerTest, TablesGiveDistancesToDecodedVectors) {
  const Matrix x = Sift(2000);
  ASSERT_EQ(x.rows, 2000);
  auto pq = ProductQuantizer::Train(x.values.data(), x.rows, x.dim, Options(16, 8));
  ASSERT_TRUE(pq.ok()) << pq.status();
  const int64_t nq = 20, nb = 50;
  const float* queries = x.values.data() + 1000 * x.dim;
  std::vector<uint8_t> codes(static_cast<size_t>(nb * pq->code_size()));
  ASSERT_TRUE(pq->Encode(absl::MakeConstSpan(x.values.data(), nb * x.dim), codes.data()).ok());
  std::vector<float> decoded(static_cast<size_t>(nb * x.dim));
  pq->Decode(codes.data(), nb, decoded.data());
  const int64_t table = pq->m() * pq->ksub();
  std::vector<float> l2(static_cast<size_t>(nq * table)), ip(l2.size());
  pq->L2Tables(queries, nq, l2.data());
  pq->InnerProductTables(queries, nq, ip.data());
  for (int64_t q = 0; q < nq; ++q) {
    for (int64_t b = 0; b < nb; ++b) {
      double ref_l2 = 0, ref_ip = 0;
      for (int64_t j = 0; j < x.dim; ++j) {
        const double a = queries[q * x.dim + j], c = decoded[b * x.dim + j];
        ref_l2 += (a - c) * (a - c);
        ref_ip += a * c;
      }
      const uint8_t* code = codes.data() + b * pq->code_size();
      EXPECT_NEAR(pq->TableSum(l2.data() + q * table, code), ref_l2, 1e-4 * ref_l2 + 1.0);
      EXPECT_NEAR(pq->TableSum(ip.data() + q * table, code), ref_ip, 1e-4 * std::abs(ref_ip) + 1.0);
    }
  }
}

TEST(ProductQuantizerTest, DeterministicAndRebuiltFromCentroids) {
  const Matrix x = Sift(1000);
  ASSERT_EQ(x.rows, 1000);
  ProductQuantizerOptions one = Options(8, 8), two = Options(8, 8);
  two.num_threads = 2;
  auto a = ProductQuantizer::Train(x.values.data(), x.rows, x.dim, one);
  auto b = ProductQuantizer::Train(x.values.data(), x.rows, x.dim, two);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->centroids(), b->centroids());
  auto c = ProductQuantizer::FromCentroids(x.dim, 8, 8, a->centroids());
  ASSERT_TRUE(c.ok()) << c.status();
  std::vector<uint8_t> ca(static_cast<size_t>(x.rows * 8)), cc(ca.size());
  ASSERT_TRUE(a->Encode(x.values, ca.data()).ok());
  ASSERT_TRUE(c->Encode(x.values, cc.data()).ok());
  EXPECT_EQ(ca, cc);
  EXPECT_FALSE(ProductQuantizer::FromCentroids(x.dim, 8, 8, std::vector<float>(10)).ok());
}

TEST(ProductQuantizerTest, RejectsBadInputs) {
  const Matrix x = Sift(300);
  ASSERT_EQ(x.rows, 300);
  auto expect_invalid = [](const absl::Status& status, const std::string& text) {
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_TRUE(absl::StrContains(status.message(), text)) << status;
  };
  std::vector<float> d100(300 * 100, 1.0f);
  expect_invalid(ProductQuantizer::Train(d100.data(), 300, 100, Options(16, 8)).status(),
                 "d 100 is not divisible by M 16");
  expect_invalid(ProductQuantizer::Train(x.values.data(), x.rows, x.dim, Options(16, 6)).status(),
                 "nbits 6");
  expect_invalid(ProductQuantizer::Train(x.values.data(), x.rows, x.dim, Options(0, 8)).status(),
                 "M 0");
  expect_invalid(ProductQuantizer::Train(x.values.data(), 200, x.dim, Options(16, 8)).status(),
                 "n 200 training rows < 2^nbits 256");
  std::vector<float> nan = x.values;
  nan[5 * x.dim + 3] = std::numeric_limits<float>::quiet_NaN();
  expect_invalid(ProductQuantizer::Train(nan.data(), x.rows, x.dim, Options(16, 8)).status(),
                 "row 5, component 3");

  auto pq = ProductQuantizer::Train(x.values.data(), x.rows, x.dim, Options(16, 8));
  ASSERT_TRUE(pq.ok()) << pq.status();
  std::vector<uint8_t> codes(static_cast<size_t>(x.rows * 16));
  expect_invalid(pq->Encode(absl::MakeConstSpan(x.values.data(), 130), codes.data()),
                 "vectors size 130 is not a multiple of d 128");
  expect_invalid(pq->Encode(nan, codes.data()), "vectors[row 5, component 3]");
  ProductQuantizer untrained;
  EXPECT_EQ(untrained.Encode(x.values, codes.data()).code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace quantd
