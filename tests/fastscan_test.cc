// 4-bit fast-scan: the blocked layout round-trips codes, the quantised tables stay within their
// rounding bound, and every kernel this CPU supports returns exactly what a plain per-code sum of
// the same quantised table returns (partial blocks, empty lists, k above n, ties, M up to 256).
#include "core/fastscan.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "hwy/targets.h"

namespace quantd::fastscan {
namespace {

std::vector<Kernel> SupportedKernels() {
  std::vector<Kernel> out;
  for (Kernel k : {Kernel::kScalar, Kernel::kAvx2, Kernel::kAvx512, Kernel::kHighway}) {
    if (KernelSupported(k)) out.push_back(k);
  }
  return out;
}

// n random 4-bit PQ codes (n x ceil(m / 2) bytes, unused high nibble of an odd M zero).
std::vector<uint8_t> RandomCodes(int64_t n, int64_t m, std::mt19937_64& rng) {
  const int64_t cs = (m + 1) / 2;
  std::vector<uint8_t> codes(static_cast<size_t>(n * cs));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t s = 0; s < m; ++s) {
      codes[i * cs + s / 2] |= static_cast<uint8_t>((rng() & 15) << ((s & 1) * 4));
    }
  }
  return codes;
}

std::vector<uint8_t> Pack(const std::vector<uint8_t>& codes, int64_t n, int64_t m) {
  std::vector<uint8_t> blocks(static_cast<size_t>(NumBlocks(n) * BlockBytes(m)));
  for (int64_t i = 0; i < n; ++i) SetCode(blocks.data(), m, i, codes.data() + i * ((m + 1) / 2));
  return blocks;
}

std::vector<Candidate> RunKernel(Kernel kernel, const std::vector<uint8_t>& blocks, int64_t n,
                                 int64_t m, const std::vector<uint8_t>& lut, float bias,
                                 float inv_scale, const std::vector<uint64_t>& ids, int64_t k) {
  TopK top(k, n);
  ScanWith(kernel, blocks.data(), n, m, lut.data(), bias, inv_scale, ids.data(), top);
  return top.Sorted();
}

// The definition: every code's sum of table bytes, decoded, the k best by (distance, id).
std::vector<Candidate> Reference(const std::vector<uint8_t>& blocks, int64_t n, int64_t m,
                                 const std::vector<uint8_t>& lut, float bias, float inv_scale,
                                 const std::vector<uint64_t>& ids, int64_t k) {
  std::vector<Candidate> all;
  for (int64_t i = 0; i < n; ++i) {
    uint32_t sum = 0;
    for (int64_t s = 0; s < m; ++s) sum += lut[s * 16 + GetSubCode(blocks.data(), m, i, s)];
    all.push_back({bias + static_cast<float>(sum) * inv_scale, ids[i]});
  }
  std::sort(all.begin(), all.end(), Before);
  if (static_cast<int64_t>(all.size()) > k) all.resize(static_cast<size_t>(k));
  return all;
}

void ExpectSame(const std::vector<Candidate>& a, const std::vector<Candidate>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].id, b[i].id) << "rank " << i;
    EXPECT_EQ(a[i].distance, b[i].distance) << "rank " << i;
  }
}

TEST(FastScanTest, LayoutRoundTripsAndClears) {
  std::mt19937_64 rng(7);
  for (int64_t m : {1, 2, 3, 4, 7, 8, 16, 32, 64}) {
    for (int64_t n : {1, 31, 32, 33, 100}) {
      const std::vector<uint8_t> codes = RandomCodes(n, m, rng);
      std::vector<uint8_t> blocks = Pack(codes, n, m);
      const int64_t cs = (m + 1) / 2;
      std::vector<uint8_t> back(static_cast<size_t>(cs));
      for (int64_t i = 0; i < n; ++i) {
        GetCode(blocks.data(), m, i, back.data());
        ASSERT_TRUE(std::equal(back.begin(), back.end(), codes.begin() + i * cs))
            << "m " << m << " n " << n << " i " << i;
      }
      // Clearing every slot leaves the all-zero blocks a fresh list has.
      for (int64_t i = 0; i < n; ++i) ClearCode(blocks.data(), m, i);
      EXPECT_TRUE(std::all_of(blocks.begin(), blocks.end(), [](uint8_t b) { return b == 0; }));
    }
  }
}

TEST(FastScanTest, QuantizedTableWithinRoundingBound) {
  std::mt19937_64 rng(11);
  std::normal_distribution<float> normal(0, 3);
  const int64_t m = 13;  // padded to 16: rows 13..15 must be zero
  std::vector<float> table(static_cast<size_t>(m * 16));
  for (float& v : table) v = normal(rng);
  std::vector<uint8_t> lut(static_cast<size_t>(LutBytes(m)), 0xaa);
  float bias = 0, inv_scale = 0;
  QuantizeLut(table.data(), nullptr, m, 5.0f, lut.data(), &bias, &inv_scale);
  EXPECT_GT(inv_scale, 0);
  for (int64_t i = m * 16; i < LutBytes(m); ++i) EXPECT_EQ(lut[i], 0);
  // Each entry decodes to within half a step of the float (its row's minimum goes to the bias).
  float sum_min = 5.0f;
  for (int64_t s = 0; s < m; ++s) {
    const float lo = *std::min_element(table.begin() + s * 16, table.begin() + s * 16 + 16);
    sum_min += lo;
    for (int j = 0; j < 16; ++j) {
      EXPECT_NEAR(lo + lut[s * 16 + j] * inv_scale, table[s * 16 + j], 0.5f * inv_scale + 1e-5f);
    }
  }
  EXPECT_NEAR(bias, sum_min, 1e-4f);
  // The widest row spans the whole byte range.
  EXPECT_EQ(*std::max_element(lut.begin(), lut.end()), 255);

  // A constant table: no spread, all zero, distances are the bias.
  std::fill(table.begin(), table.end(), 2.0f);
  QuantizeLut(table.data(), nullptr, m, 1.0f, lut.data(), &bias, &inv_scale);
  EXPECT_EQ(inv_scale, 0);
  EXPECT_TRUE(std::all_of(lut.begin(), lut.end(), [](uint8_t b) { return b == 0; }));
  EXPECT_FLOAT_EQ(bias, 1.0f + 2.0f * m);
}

TEST(FastScanTest, EveryKernelMatchesTheReference) {
  std::mt19937_64 rng(3);
  std::normal_distribution<float> normal(0, 1);
  const std::vector<Kernel> kernels = SupportedKernels();
  for (int64_t m : {1, 2, 4, 6, 8, 16, 32, 64}) {
    for (int64_t n : {0, 1, 5, 31, 32, 33, 64, 97, 1000}) {
      const std::vector<uint8_t> blocks = Pack(RandomCodes(n, m, rng), n, m);
      std::vector<uint64_t> ids(static_cast<size_t>(n));
      for (auto& id : ids) id = rng() % 100000;  // arbitrary, maybe repeated: ties by id
      std::vector<float> table(static_cast<size_t>(m * 16));
      for (float& v : table) v = normal(rng);
      std::vector<uint8_t> lut(static_cast<size_t>(LutBytes(m)));
      float bias = 0, inv_scale = 0;
      QuantizeLut(table.data(), nullptr, m, 10.0f, lut.data(), &bias, &inv_scale);
      for (int64_t k : {int64_t{1}, int64_t{10}, int64_t{100}, n + 7}) {
        const auto want = Reference(blocks, n, m, lut, bias, inv_scale, ids, k);
        for (Kernel kernel : kernels) {
          SCOPED_TRACE(::testing::Message()
                       << KernelName(kernel) << " m " << m << " n " << n << " k " << k);
          ExpectSame(RunKernel(kernel, blocks, n, m, lut, bias, inv_scale, ids, k), want);
        }
      }
    }
  }
}

// Few distinct sums (a two-level table): many exact ties, broken by id in every kernel; and a
// heap that already holds candidates from an earlier list with another scale.
TEST(FastScanTest, TiesAndAThresholdFromAnotherList) {
  std::mt19937_64 rng(5);
  const int64_t m = 8, n = 300;
  const std::vector<uint8_t> blocks = Pack(RandomCodes(n, m, rng), n, m);
  std::vector<uint64_t> ids(static_cast<size_t>(n));
  std::iota(ids.begin(), ids.end(), 1000);
  std::shuffle(ids.begin(), ids.end(), rng);
  std::vector<float> table(static_cast<size_t>(m * 16));
  for (size_t i = 0; i < table.size(); ++i) table[i] = (i % 16) < 8 ? 0.0f : 1.0f;
  std::vector<uint8_t> lut(static_cast<size_t>(LutBytes(m)));
  float bias = 0, inv_scale = 0;
  QuantizeLut(table.data(), nullptr, m, 0.0f, lut.data(), &bias, &inv_scale);
  for (Kernel kernel : SupportedKernels()) {
    SCOPED_TRACE(KernelName(kernel));
    // Seeded heap: 5 candidates at distance 3.0 from "another list".
    auto seeded = [&](TopK& top) {
      for (uint64_t id = 0; id < 5; ++id) top.Push(3.0f, id);
    };
    TopK top(20, n + 5);
    seeded(top);
    ScanWith(kernel, blocks.data(), n, m, lut.data(), bias, inv_scale, ids.data(), top);
    TopK ref(20, n + 5);
    seeded(ref);
    for (const Candidate& c : Reference(blocks, n, m, lut, bias, inv_scale, ids, n)) {
      ref.Push(c.distance, c.id);
    }
    ExpectSame(top.Sorted(), ref.Sorted());
  }
}

// M = 256 with every code on its row's largest entry: sums reach 256 x 255 = 65280, the most a
// 16-bit lane holds here, and large biases test the conservative 16-bit threshold.
TEST(FastScanTest, LargestSumsAndLargeBias) {
  std::mt19937_64 rng(9);
  const int64_t m = kMaxM, n = 70;
  std::vector<uint8_t> codes(static_cast<size_t>(n * m / 2), 0xff);  // code 15 everywhere
  for (int64_t i = 40; i < n; ++i) {                                 // the rest random
    for (int64_t t = 0; t < m / 2; ++t) codes[i * m / 2 + t] = static_cast<uint8_t>(rng());
  }
  const std::vector<uint8_t> blocks = Pack(codes, n, m);
  std::vector<uint64_t> ids(static_cast<size_t>(n));
  std::iota(ids.begin(), ids.end(), 0);
  std::vector<float> table(static_cast<size_t>(m * 16));
  for (size_t i = 0; i < table.size(); ++i) table[i] = static_cast<float>(i % 16);
  std::vector<uint8_t> lut(static_cast<size_t>(LutBytes(m)));
  float bias = 0, inv_scale = 0;
  QuantizeLut(table.data(), nullptr, m, 1e6f, lut.data(), &bias, &inv_scale);
  EXPECT_EQ(lut[15], 255);
  for (int64_t k : {1, 10, 69, 70}) {
    const auto want = Reference(blocks, n, m, lut, bias, inv_scale, ids, k);
    for (Kernel kernel : SupportedKernels()) {
      SCOPED_TRACE(::testing::Message() << KernelName(kernel) << " k " << k);
      ExpectSame(RunKernel(kernel, blocks, n, m, lut, bias, inv_scale, ids, k), want);
    }
  }
  // The all-15 codes decode to the largest distance: with k = 70 they are last.
  const auto all = RunKernel(Kernel::kScalar, blocks, n, m, lut, bias, inv_scale, ids, n);
  EXPECT_FLOAT_EQ(all.back().distance, bias + 65280.0f * inv_scale);
}

// The SIMD table builders give the same bytes, bias and scale as the scalar one, with and without
// the added term, on wide and narrow value ranges.
TEST(FastScanTest, TableKernelsMatchTheScalarOne) {
  std::mt19937_64 rng(13);
  for (int64_t m : {int64_t{1}, int64_t{4}, int64_t{7}, int64_t{32}, int64_t{64}, kMaxM}) {
    for (float spread : {1e-3f, 1.0f, 1e4f}) {
      std::normal_distribution<float> normal(0, spread);
      std::vector<float> table(static_cast<size_t>(m * 16)), add(table.size());
      for (float& v : table) v = normal(rng);
      for (float& v : add) v = normal(rng) + 3.0f;
      for (const float* extra : std::vector<const float*>{nullptr, add.data()}) {
        std::vector<uint8_t> want(static_cast<size_t>(LutBytes(m)));
        float want_bias = 0, want_inv = 0;
        QuantizeLutWith(Kernel::kScalar, table.data(), extra, m, 7.0f, want.data(), &want_bias,
                        &want_inv);
        for (Kernel kernel : SupportedKernels()) {
          SCOPED_TRACE(::testing::Message() << KernelName(kernel) << " m " << m << " spread "
                                            << spread << " add " << (extra != nullptr));
          std::vector<uint8_t> got(want.size(), 0xcc);
          float bias = 0, inv = 0;
          QuantizeLutWith(kernel, table.data(), extra, m, 7.0f, got.data(), &bias, &inv);
          EXPECT_EQ(got, want);
          EXPECT_EQ(bias, want_bias);
          EXPECT_EQ(inv, want_inv);
        }
      }
    }
  }
}

// Highway's kernel on each target this CPU runs (on x86: SSSE3, SSE4, AVX2, AVX3 as supported),
// not just the best: the 128-bit targets take the same code path as ARM NEON. Every result must
// be the definition's, for padded, compile-time and run-time sub-quantizer counts.
TEST(FastScanTest, HighwayMatchesTheReferenceOnEveryTarget) {
  std::mt19937_64 rng(23);
  int targets_run = 0;
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    if (target == HWY_SCALAR || target == HWY_EMU128) continue;
    hwy::SetSupportedTargetsForTest(target);
    ++targets_run;
    SCOPED_TRACE(HighwayTargetName());
    EXPECT_STREQ(HighwayTargetName(), hwy::TargetName(target));
    for (int64_t m : {4, 13, 16, 32, 64, 100}) {
      for (int64_t n : {1, 33, 700}) {
        const std::vector<uint8_t> blocks = Pack(RandomCodes(n, m, rng), n, m);
        std::vector<uint8_t> lut(static_cast<size_t>(LutBytes(m)), 0);
        for (int64_t i = 0; i < m * 16; ++i) lut[i] = static_cast<uint8_t>(rng() & 255);
        std::vector<uint64_t> ids(static_cast<size_t>(n));
        std::iota(ids.begin(), ids.end(), uint64_t{1000});
        for (int64_t k : {int64_t{1}, int64_t{10}, n}) {
          SCOPED_TRACE(::testing::Message() << "m " << m << " n " << n << " k " << k);
          ExpectSame(RunKernel(Kernel::kHighway, blocks, n, m, lut, 0.5f, 0.25f, ids, k),
                     Reference(blocks, n, m, lut, 0.5f, 0.25f, ids, k));
        }
      }
    }
  }
  hwy::SetSupportedTargetsForTest(0);
#if defined(__x86_64__) || defined(__aarch64__)
  EXPECT_GE(targets_run, 1);
#endif
}

// ScanMulti over one list for count queries (each its own random table, bias, scale, k and a heap
// seeded as if by an earlier list) leaves every heap as a separate Scan of that query does, for
// every kernel, full and partial last blocks, M padded or not, and counts 1 .. 2 x kMaxQueries + 1
// (the calls split into groups of at most kMaxQueries).
TEST(FastScanTest, ScanMultiEqualsSeparateScans) {
  std::mt19937_64 rng(17);
  std::normal_distribution<float> normal(0, 1);
  const std::vector<Kernel> kernels = SupportedKernels();
  for (int64_t m : {1, 6, 8, 13, 16, 24, 32, 64, 256}) {
    for (int64_t n : {0, 1, 31, 32, 33, 100, 517}) {
      const std::vector<uint8_t> blocks = Pack(RandomCodes(n, m, rng), n, m);
      std::vector<uint64_t> ids(static_cast<size_t>(n));
      for (auto& id : ids) id = rng() % 1000;  // repeated ids: ties by id
      for (int64_t count = 1; count <= 2 * kMaxQueries + 1; ++count) {
        std::vector<std::vector<uint8_t>> luts;
        std::vector<float> biases, scales;
        std::vector<int64_t> ks;
        std::vector<Candidate> seeds;  // per query: one candidate from "an earlier list"
        for (int64_t q = 0; q < count; ++q) {
          std::vector<float> table(static_cast<size_t>(m * 16));
          const float spread = q % 3 == 2 ? 0.0f : 1.0f + static_cast<float>(q);  // 0: no spread
          for (float& v : table) v = spread * normal(rng);
          luts.emplace_back(static_cast<size_t>(LutBytes(m)));
          float bias = 0, inv_scale = 0;
          QuantizeLut(table.data(), nullptr, m, static_cast<float>(q), luts.back().data(), &bias,
                      &inv_scale);
          biases.push_back(bias);
          scales.push_back(inv_scale);
          ks.push_back(q % 4 == 0 ? 1 : q % 4 == 1 ? 10 : q % 4 == 2 ? 3 : n + 3);
          seeds.push_back({bias + static_cast<float>(rng() % 2000) * inv_scale,
                           static_cast<uint64_t>(5000 + q)});
        }
        auto fresh_tops = [&] {
          std::vector<TopK> tops;
          for (int64_t q = 0; q < count; ++q) {
            tops.emplace_back(ks[q], n + 1);
            tops.back().Push(seeds[q].distance, seeds[q].id);
          }
          return tops;
        };
        for (Kernel kernel : kernels) {
          SCOPED_TRACE(::testing::Message()
                       << KernelName(kernel) << " m " << m << " n " << n << " count " << count);
          std::vector<TopK> want = fresh_tops();
          for (int64_t q = 0; q < count; ++q) {
            ScanWith(kernel, blocks.data(), n, m, luts[q].data(), biases[q], scales[q], ids.data(),
                     want[q]);
          }
          std::vector<TopK> got = fresh_tops();
          std::vector<QueryTable> tables;
          for (int64_t q = 0; q < count; ++q) {
            tables.push_back({luts[q].data(), biases[q], scales[q], &got[q]});
          }
          ScanMultiWith(kernel, blocks.data(), n, m, ids.data(), tables.data(), count);
          for (int64_t q = 0; q < count; ++q) {
            SCOPED_TRACE(::testing::Message() << "query " << q);
            ExpectSame(got[q].Sorted(), want[q].Sorted());
          }
        }
      }
    }
  }
}

TEST(FastScanTest, KernelSelection) {
  EXPECT_TRUE(KernelSupported(Kernel::kScalar));
  EXPECT_TRUE(KernelSupported(BestKernel()));
  const Kernel before = ActiveKernel();
  EXPECT_TRUE(SetKernel(Kernel::kScalar));
  EXPECT_EQ(ActiveKernel(), Kernel::kScalar);
  EXPECT_TRUE(SetKernel(before));
  EXPECT_EQ(ActiveKernel(), before);
  // Highway runs wherever the CPU has byte shuffles: every x86-64 CPU since SSSE3 (2006), and
  // ARM's NEON; the hand-written x86 kernels rank first where they exist.
#if defined(__x86_64__) || defined(__aarch64__)
  EXPECT_TRUE(KernelSupported(Kernel::kHighway));
  EXPECT_STRNE(HighwayTargetName(), "none");
#endif
  if (KernelSupported(Kernel::kAvx2)) {
    EXPECT_NE(BestKernel(), Kernel::kHighway);
  }
  std::printf("fast-scan kernels: best %s; Highway dispatches to %s\n", KernelName(BestKernel()),
              HighwayTargetName());
}

}  // namespace
}  // namespace quantd::fastscan
