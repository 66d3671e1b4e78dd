// Filtered IVF-PQ search (IvfPqSearchParams::selector) and ExactSearch on sift5k: recall of
// allow-list search against the exact filtered answer stays within 0.05 of unfiltered recall at
// the same nprobe (10% and 1% selectivity; 8-bit and fast-scan layouts), deny-lists never return
// a denied id, too few allowed ids in the probed lists widen the probe to k results, and IdSet
// in its bitmap and hash forms.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "core/id_set.h"
#include "core/ivf_pq.h"
#include "gtest/gtest.h"
#include "io/vector_file.h"
#include "tests/test_support.h"

namespace quantd {
namespace {

using Results = std::vector<std::vector<IvfPqNeighbor>>;

struct Data {
  Matrix base;
  Matrix queries;
};

Data LoadSift() {
  Data data;
  for (auto [path, matrix] : {std::pair{"sift5k/sift5k_base.fvecs", &data.base},
                              std::pair{"sift5k/sift5k_query.fvecs", &data.queries}}) {
    const std::string file = testing::DataFile(path);
    if (file.empty()) return {};
    auto m = ReadMatrix(file);
    EXPECT_TRUE(m.ok()) << m.status();
    if (m.ok()) *matrix = *std::move(m);
  }
  return data;
}

IvfPqIndex Build(const Matrix& base, bool fast_scan) {
  IvfPqOptions options;
  options.nlist = 64;
  options.m = 16;
  options.nbits = fast_scan ? 4 : 8;
  options.fast_scan = fast_scan;
  options.seed = 42;
  options.num_threads = 2;
  auto index = IvfPqIndex::Train(base.values.data(), base.rows, base.dim, options);
  EXPECT_TRUE(index.ok()) << index.status();
  if (!index.ok()) return {};
  EXPECT_TRUE(index->Add(testing::FirstIds(base.rows), base.values).ok());
  return *std::move(index);
}

// A seeded random `fraction` of the ids 0..n-1, ascending.
std::vector<uint64_t> Sample(int64_t n, double fraction, uint64_t seed) {
  testing::SeededRandom random(seed);
  std::vector<uint64_t> ids;
  for (int64_t i = 0; i < n; ++i) {
    if (static_cast<double>(random.Below(1000000)) < fraction * 1e6) ids.push_back(i);
  }
  return ids;
}

// The exact k nearest among `ids` (rows of base) of every query.
Results ExactAmong(const Data& data, const std::vector<uint64_t>& ids, int64_t k) {
  std::vector<float> rows;
  for (uint64_t id : ids) {
    rows.insert(rows.end(), data.base.values.begin() + static_cast<int64_t>(id) * data.base.dim,
                data.base.values.begin() + static_cast<int64_t>(id + 1) * data.base.dim);
  }
  auto exact = ExactSearch(Metric::kL2, data.base.dim, data.queries.values, ids, rows, k);
  EXPECT_TRUE(exact.ok()) << exact.status();
  return exact.ok() ? *std::move(exact) : Results{};
}

// Mean share of truth's ids found in results (per query, |truth| is the denominator).
double RecallAgainst(const Results& results, const Results& truth) {
  double sum = 0;
  for (size_t q = 0; q < truth.size(); ++q) {
    absl::flat_hash_set<uint64_t> found;
    for (const IvfPqNeighbor& n : results[q]) found.insert(n.id);
    int64_t hit = 0;
    for (const IvfPqNeighbor& n : truth[q]) hit += found.contains(n.id);
    sum += truth[q].empty() ? 1.0 : static_cast<double>(hit) / truth[q].size();
  }
  return sum / static_cast<double>(truth.size());
}

Results Search(const IvfPqIndex& index, const Matrix& queries, int64_t nprobe,
               const IdSelector* selector) {
  IvfPqSearchParams params;
  params.k = 10;
  params.nprobe = nprobe;
  params.selector = selector;
  auto results = index.Search(queries.values, params);
  EXPECT_TRUE(results.ok()) << results.status();
  return results.ok() ? *std::move(results) : Results{};
}

void ExpectFilteredRecallNearUnfiltered(bool fast_scan) {
  const Data data = LoadSift();
  if (data.base.rows == 0) return;
  const IvfPqIndex index = Build(data.base, fast_scan);
  constexpr int64_t kNprobe = 8;
  const double unfiltered = RecallAgainst(Search(index, data.queries, kNprobe, nullptr),
                                          ExactAmong(data, testing::FirstIds(data.base.rows), 10));
  for (double selectivity : {0.1, 0.01}) {
    const std::vector<uint64_t> allowed = Sample(data.base.rows, selectivity, 7);
    const IdSet set(allowed);
    const IdSelector selector{&set, false};
    const Results results = Search(index, data.queries, kNprobe, &selector);
    for (const auto& neighbors : results) {
      EXPECT_EQ(neighbors.size(), 10u);
      for (const IvfPqNeighbor& n : neighbors) EXPECT_TRUE(set.Contains(n.id)) << n.id;
    }
    const double filtered = RecallAgainst(results, ExactAmong(data, allowed, 10));
    std::printf("%s, selectivity %g: filtered recall@10 %.3f, unfiltered %.3f (nprobe %d)\n",
                fast_scan ? "fast-scan" : "8-bit", selectivity, filtered, unfiltered,
                static_cast<int>(kNprobe));
    EXPECT_GE(filtered, unfiltered - 0.05)
        << "selectivity " << selectivity << " unfiltered " << unfiltered;
  }
}

TEST(IvfPqFilterTest, AllowListRecallNearUnfilteredAtTenAndOnePercent) {
  ExpectFilteredRecallNearUnfiltered(/*fast_scan=*/false);
}

TEST(IvfPqFilterTest, AllowListRecallNearUnfilteredFastScan) {
  ExpectFilteredRecallNearUnfiltered(/*fast_scan=*/true);
}

TEST(IvfPqFilterTest, DenyListNeverReturnsDeniedIds) {
  const Data data = LoadSift();
  if (data.base.rows == 0) return;
  for (bool fast_scan : {false, true}) {
    const IvfPqIndex index = Build(data.base, fast_scan);
    // Deny each query's unfiltered top 5 and a random half of the rest.
    std::vector<uint64_t> denied = Sample(data.base.rows, 0.5, 11);
    for (const auto& neighbors : Search(index, data.queries, 4, nullptr)) {
      for (size_t i = 0; i < 5 && i < neighbors.size(); ++i) denied.push_back(neighbors[i].id);
    }
    const IdSet set(denied);
    const IdSelector selector{&set, true};
    for (const auto& neighbors : Search(index, data.queries, 4, &selector)) {
      EXPECT_EQ(neighbors.size(), 10u);
      for (const IvfPqNeighbor& n : neighbors) EXPECT_FALSE(set.Contains(n.id)) << n.id;
    }
  }
}

TEST(IvfPqFilterTest, TooFewAllowedInProbedListsWidensToK) {
  const Data data = LoadSift();
  if (data.base.rows == 0) return;
  const IvfPqIndex index = Build(data.base, /*fast_scan=*/false);
  // 12 ids spread over the collection: one probed list holds at most a few of them.
  std::vector<uint64_t> allowed;
  for (uint64_t id = 17; allowed.size() < 12; id += 401) allowed.push_back(id);
  const IdSet set(allowed);
  const IdSelector selector{&set, false};
  const Results results = Search(index, data.queries, 1, &selector);
  for (const auto& neighbors : results) {
    ASSERT_EQ(neighbors.size(), 10u);
    for (const IvfPqNeighbor& n : neighbors) EXPECT_TRUE(set.Contains(n.id));
  }
  // Every list scanned for some query: the answer is the exact one up to PQ error; it holds
  // all 12 candidates at k 12.
  IvfPqSearchParams params;
  params.k = 12;
  params.nprobe = 1;
  params.selector = &selector;
  auto all = index.Search(data.queries.values, params);
  ASSERT_TRUE(all.ok());
  for (const auto& neighbors : *all) EXPECT_EQ(neighbors.size(), 12u);
}

TEST(IvfPqFilterTest, ExactSearchRanksByExactDistance) {
  const Data data = LoadSift();
  if (data.base.rows == 0) return;
  const std::vector<uint64_t> allowed = Sample(data.base.rows, 0.02, 3);
  const Results exact = ExactAmong(data, allowed, 10);
  ASSERT_EQ(exact.size(), static_cast<size_t>(data.queries.rows));
  for (int64_t q = 0; q < data.queries.rows; ++q) {
    // Brute force in double over the allowed rows, ties by id.
    std::vector<std::pair<double, uint64_t>> all;
    for (uint64_t id : allowed) {
      double sum = 0;
      for (int64_t j = 0; j < data.base.dim; ++j) {
        const double diff = static_cast<double>(data.queries.values[q * data.base.dim + j]) -
                            data.base.values[static_cast<int64_t>(id) * data.base.dim + j];
        sum += diff * diff;
      }
      all.push_back({static_cast<float>(sum), id});
    }
    std::sort(all.begin(), all.end());
    ASSERT_EQ(exact[q].size(), 10u);
    for (size_t i = 0; i < 10; ++i) {
      EXPECT_EQ(exact[q][i].id, all[i].second);
      EXPECT_FLOAT_EQ(exact[q][i].distance, static_cast<float>(all[i].first));
    }
  }
  EXPECT_FALSE(ExactSearch(Metric::kL2, 4, std::vector<float>(5), {}, {}, 1).ok());
  EXPECT_FALSE(ExactSearch(Metric::kL2, 4, std::vector<float>(4), {}, {}, 0).ok());
}

TEST(IdSetTest, BitmapAndHashFormsAgree) {
  const std::vector<uint64_t> dense = {5, 7, 7, 900, 64, 3};
  const IdSet a(dense);
  EXPECT_EQ(a.size(), 5);
  EXPECT_EQ(a.Sorted(), (std::vector<uint64_t>{3, 5, 7, 64, 900}));
  EXPECT_TRUE(a.Contains(900));
  EXPECT_FALSE(a.Contains(2));
  EXPECT_FALSE(a.Contains(901));
  // Sparse over a huge span: the hash form.
  const std::vector<uint64_t> sparse = {1, uint64_t{1} << 40, ~uint64_t{0}};
  const IdSet b(sparse);
  EXPECT_EQ(b.size(), 3);
  EXPECT_TRUE(b.Contains(~uint64_t{0}));
  EXPECT_FALSE(b.Contains(2));
  EXPECT_EQ(b.Sorted(), sparse);
  // Bitmap bytes: bit j of byte i is id base + 8 i + j.
  const IdSet c = IdSet::FromBitmap(100, std::string("\x81\x00\x02", 3));
  EXPECT_EQ(c.Sorted(), (std::vector<uint64_t>{100, 107, 117}));
  EXPECT_FALSE(c.Contains(99));
  EXPECT_FALSE(c.Contains(124));
  const IdSelector deny{&c, true};
  EXPECT_FALSE(deny.Accepts(107));
  EXPECT_TRUE(deny.Accepts(108));
}

}  // namespace
}  // namespace quantd
