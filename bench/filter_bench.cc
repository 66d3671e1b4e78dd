// Filtered search (issue #15): recall@10 and queries/s of allow-list, deny-list, attribute and
// SID-prefix search at selectivities 50%, 10%, 1% and 0.1% on Fashion-MNIST or (--data=synth1m) the
// 1M x 128 Gaussian mixture of ivfpq_bench (bench::GaussianMixture, same seeds), against the exact
// filtered answer, for
//   scan       quantd's IVF-PQ with the filter inside the scan (IvfPqSearchParams::selector)
//   exact      quantd's exact scoring of the allowed items (ExactSearch) after reading their
//              stored vectors from RocksDB (ItemService::Get on a Storage holding the data);
//              measured for allow-lists and prefixes of at most 2 x the codes a scan reads
//              (0 where not measured)
//              (deny-lists: the complement of the denied ids among the index's, as Search
//              takes it, included in the time)
//   served     what Search does: exact when ScoreExactly (server/index.h) says so for the
//              mean allowed-set size (deny-lists: the accepted share), else scan (the figures
//              of the chosen path)
//   post       post-filtering: unfiltered search for k' = min(n, ceil(k / selectivity)) (at most
//              kMaxPostK), then the first k accepted
//   faiss      faiss::IndexIVFPQ with SearchParametersIVF + IDSelectorBatch (IDSelectorNot of
//              one for deny-lists), same nlist, M, nbits, nprobe
// Then the crossover sweep behind kExactCostPerItem: per allowed-set size, the time of a scan
// (and the codes it read, widening included) against the time of exact scoring with its RocksDB
// reads, and the cost of one exactly scored item in scanned codes.
//
//   env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE build/bench/filter_bench [--queries=N]
//       [--rows=N]   (the first N base rows only, for a quick run)  [--data=fmnist|synth1m]
//
// Index: Fashion-MNIST nlist 256, M 56; synth1m nlist 1024, M 32; 8 bits, nprobe 16 (both
// libraries), one thread, one query a call.
// Allowed sets: seeded uniform samples of the ids (allow: the selectivity; deny: all but it);
// prefix: per query, the SID prefix (depth 1..4 of an RQ-KMeans tokenizer with K = 2, 5, 10,
// 10, about 50%, 10%, 1%, 0.1% of the items a prefix) of its exact nearest item, so each query
// searches its own semantic cluster (the printed selectivity is the mean share of items under
// the prefixes). Attributes (`where`): every item carries an int `rank`, seeded uniform in
// 0..999, and on Fashion-MNIST a string `label`, its real class; the conditions are rank <= 499
// (50%), then on Fashion-MNIST label = the query's own class (10%) and with rank <= 99 (1%) and
// rank <= 9 (0.1%), on the mixture rank <= 99, <= 9 and = 0. The attribute rows' times include
// what Search adds for `where`: the server's AttributeIndex::Plan with Search's limit, then the
// allowed set built from its ids or, for broad conditions, the per-candidate test. Ground truth:
// exact L2 over the accepted items.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/bench_util.h"
#include "core/id_set.h"
#include "core/ivf_pq.h"
#include "core/kmeans.h"
#include "core/residual_quantizer.h"
#include "faiss/IndexFlat.h"
#include "faiss/IndexIVFPQ.h"
#include "faiss/impl/IDSelector.h"
#include "server/attributes.h"
#include "server/index.h"
#include "server/storage.h"

namespace quantd {
namespace {

using bench::Clock;
using bench::Die;
using bench::SecondsSince;

constexpr int64_t kK = 10;
constexpr int64_t kNprobe = 16;
constexpr int64_t kMaxPostK = 10000;
constexpr uint64_t kSeed = 42;

struct Figures {
  double recall = 0;
  double qps = 0;
};

// One filter: per query the accepted set (allowed ids, or denied ones when `deny`).
struct Filter {
  std::string kind;
  double selectivity = 0;  // mean share of accepted items
  bool deny = false;
  std::vector<const IdSet*> per_query;        // nq
  std::vector<std::vector<uint64_t>> sorted;  // the distinct sets, ascending
  std::vector<size_t> which;                  // nq: each query's set in `sorted`
  // Attribute filters: the conjunction of each distinct set (parallel to `sorted`), evaluated
  // again in every timed search as Search does.
  std::vector<std::vector<AttributeCondition>> where;
};

AttributeCondition RankAtMost(int64_t max) {
  AttributeCondition c;
  c.key = "rank";
  c.kind = AttributeCondition::Kind::kRange;
  c.max = max;
  return c;
}
AttributeCondition RankEquals(int64_t value) {
  AttributeCondition c = RankAtMost(value);
  c.kind = AttributeCondition::Kind::kEqualsInt;
  c.min = value;
  return c;
}
AttributeCondition LabelIs(int label) {
  AttributeCondition c;
  c.key = "label";
  c.kind = AttributeCondition::Kind::kEqualsString;
  c.text = absl::StrCat("class", label);
  return c;
}

// Exact top-k accepted ids per query from the full distance table (nq x n), from the sorted
// sets (a hash lookup per item and query is minutes on 1M rows).
std::vector<std::vector<uint64_t>> Truth(const std::vector<float>& dist, int64_t nq, int64_t n,
                                         const Filter& filter) {
  std::vector<std::vector<uint64_t>> truth(static_cast<size_t>(nq));
  std::vector<int64_t> order;
  std::vector<char> denied;
  size_t denied_set = SIZE_MAX;
  for (int64_t q = 0; q < nq; ++q) {
    const std::vector<uint64_t>& set = filter.sorted[filter.which[q]];
    order.clear();
    if (!filter.deny) {
      order.assign(set.begin(), set.end());
    } else {
      if (denied_set != filter.which[q]) {
        denied.assign(static_cast<size_t>(n), 0);
        for (uint64_t id : set) denied[id] = 1;
        denied_set = filter.which[q];
      }
      for (int64_t i = 0; i < n; ++i) {
        if (!denied[i]) order.push_back(i);
      }
    }
    const float* row = dist.data() + q * n;
    const auto count = std::min<size_t>(kK, order.size());
    std::partial_sort(
        order.begin(), order.begin() + count, order.end(),
        [row](int64_t a, int64_t b) { return row[a] < row[b] || (row[a] == row[b] && a < b); });
    for (size_t i = 0; i < count; ++i) truth[q].push_back(static_cast<uint64_t>(order[i]));
  }
  return truth;
}

double Recall(const std::vector<std::vector<uint64_t>>& found,
              const std::vector<std::vector<uint64_t>>& truth) {
  double sum = 0;
  for (size_t q = 0; q < truth.size(); ++q) {
    int64_t hits = 0;
    for (uint64_t id : found[q]) {
      hits += std::find(truth[q].begin(), truth[q].end(), id) != truth[q].end();
    }
    sum += truth[q].empty() ? 1.0 : static_cast<double>(hits) / truth[q].size();
  }
  return sum / static_cast<double>(truth.size());
}

// Runs search(q) -> ids for every query, twice (the second timed); recall against truth.
template <typename Search>
Figures Measure(int64_t nq, const std::vector<std::vector<uint64_t>>& truth, const Search& search) {
  std::vector<std::vector<uint64_t>> found(static_cast<size_t>(nq));
  for (int64_t q = 0; q < std::min<int64_t>(nq, 8); ++q) found[q] = search(q);  // warm-up
  const auto start = Clock::now();
  for (int64_t q = 0; q < nq; ++q) found[q] = search(q);
  const double seconds = SecondsSince(start);
  return {Recall(found, truth), static_cast<double>(nq) / seconds};
}

std::vector<uint64_t> Ids(const std::vector<IvfPqNeighbor>& neighbors) {
  std::vector<uint64_t> ids;
  for (const IvfPqNeighbor& n : neighbors) ids.push_back(n.id);
  return ids;
}

std::vector<uint64_t> SampleIds(int64_t n, double fraction, std::mt19937_64& rng) {
  std::vector<uint64_t> ids;
  std::uniform_real_distribution<double> uniform(0, 1);
  for (int64_t i = 0; i < n; ++i) {
    if (uniform(rng) < fraction) ids.push_back(static_cast<uint64_t>(i));
  }
  return ids;
}

int Main(int argc, char** argv) {
  int64_t nq = 200;
  int64_t rows = -1;  // base rows; -1: all (60000, or 1000000 for synth1m)
  std::string data = "fmnist";
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--queries=", 10) == 0) {
      nq = std::atoll(argv[i] + 10);
    } else if (std::strncmp(argv[i], "--rows=", 7) == 0) {
      rows = std::atoll(argv[i] + 7);
    } else if (std::strncmp(argv[i], "--data=", 7) == 0) {
      data = argv[i] + 7;
    } else {
      Die(absl::StrCat("unknown argument ", argv[i],
                       " (--queries=N, --rows=N, --data=fmnist|synth1m)"));
    }
  }
  omp_set_num_threads(1);
  Matrix base, queries;
  int64_t nlist = 0, m = 0;
  if (data == "fmnist") {
    const std::string dir = QUANTD_FASHION_MNIST_DIR;
    base = bench::LoadMatrix(dir + "/train-images-idx3-ubyte.gz", rows);
    queries = bench::LoadMatrix(dir + "/t10k-images-idx3-ubyte.gz", nq);
    nlist = 256;
    m = 56;
  } else if (data == "synth1m") {
    // ivfpq_bench's 1M x 128 mixture of 1000 Gaussians (same seeds), queries from the same
    // centres; M 32 (4 dimensions a sub-code, the service's default for d 128).
    base = bench::GaussianMixture(rows < 0 ? 1000000 : rows, 128, 1000, kSeed, kSeed + 1);
    queries = bench::GaussianMixture(nq, 128, 1000, kSeed, kSeed + 2);
    nlist = 1024;
    m = 32;
  } else {
    Die("--data is fmnist or synth1m");
  }
  const int64_t n = base.rows, d = base.dim;
  nq = queries.rows;
  // Fashion-MNIST's classes, for the attribute filters (empty for the mixture).
  std::vector<int> base_labels, query_labels;
  if (data == "fmnist") {
    const std::string dir = QUANTD_FASHION_MNIST_DIR;
    for (const auto& [file, rows_wanted, out] :
         {std::tuple{"/train-labels-idx1-ubyte.gz", n, &base_labels},
          std::tuple{"/t10k-labels-idx1-ubyte.gz", nq, &query_labels}}) {
      const Matrix labels = bench::LoadMatrix(dir + file, rows_wanted);
      if (labels.dim != 1 || labels.rows != rows_wanted) Die(absl::StrCat(file, ": bad labels"));
      out->assign(labels.values.begin(), labels.values.end());
    }
  }
  std::printf("filter_bench: %s %lld x %lld, %lld queries, k %lld; CPU %s\n", data.c_str(),
              static_cast<long long>(n), static_cast<long long>(d), static_cast<long long>(nq),
              static_cast<long long>(kK), bench::CpuModel().c_str());
  std::printf("IVF%lld,PQ%lldx8, nprobe %lld, one thread, one query a call\n",
              static_cast<long long>(nlist), static_cast<long long>(m),
              static_cast<long long>(kNprobe));
  std::fflush(stdout);

  // quantd's index and FAISS's, same parameters.
  IvfPqOptions options;
  options.nlist = nlist;
  options.m = m;
  options.nbits = 8;
  options.seed = kSeed;
  options.num_threads = 2;
  auto trained = IvfPqIndex::Train(base.values.data(), n, d, options);
  if (!trained.ok()) Die(trained.status().ToString());
  IvfPqIndex ours = *std::move(trained);
  std::vector<uint64_t> all_ids(static_cast<size_t>(n));
  std::iota(all_ids.begin(), all_ids.end(), 0);
  if (auto s = ours.Add(all_ids, base.values); !s.ok()) Die(s.ToString());
  omp_set_num_threads(2);
  faiss::IndexFlatL2 quantizer(d);
  faiss::IndexIVFPQ peer(&quantizer, d, nlist, m, 8);
  peer.train(n, base.values.data());
  peer.add(n, base.values.data());
  omp_set_num_threads(1);

  // Stored vectors in RocksDB, for the exact path's reads.
  auto storage = Storage::Open({.path = bench::FreshDir("filter"), .sync = false});
  if (!storage.ok()) Die(storage.status().ToString());
  if (auto s = (*storage)->collections().Create(data, d, Metric::kL2); !s.ok()) {
    Die(s.status().ToString());
  }
  for (int64_t row = 0; row < n; row += 1000) {
    const int64_t batch = std::min<int64_t>(1000, n - row);
    auto put = (*storage)->items().Upsert(
        data, absl::MakeConstSpan(all_ids.data() + row, static_cast<size_t>(batch)),
        absl::MakeConstSpan(base.values.data() + row * d, static_cast<size_t>(batch * d)));
    if (!put.ok()) Die(put.status().ToString());
  }

  // Exact distances (nq x n) for the ground truth and the prefixes.
  std::vector<float> dist(static_cast<size_t>(nq * n));
  SquaredDistances(queries.values.data(), nq, base.values.data(), n, d, dist.data(), 2);

  // The tokenizer of the prefix filters.
  RqOptions rq;
  for (int64_t k : {2, 5, 10, 10}) {
    RqLevelOptions level;
    level.k = k;
    rq.levels.push_back(level);
  }
  rq.kmeans.seed = kSeed;
  rq.kmeans.num_threads = 2;
  auto tokenizer = TrainResidualQuantizer(base.values.data(), n, d, rq);
  if (!tokenizer.ok()) Die(tokenizer.status().ToString());
  const std::vector<int32_t>& codes = tokenizer->codes;  // n x 4

  std::vector<Filter> filters;
  std::vector<std::unique_ptr<IdSet>> sets;
  std::mt19937_64 rng(kSeed);
  const std::vector<double> selectivities = {0.5, 0.1, 0.01, 0.001};
  for (bool deny : {false, true}) {
    for (double s : selectivities) {
      Filter f{deny ? "deny" : "allow", s, deny, {}, {}, {}, {}};
      f.sorted.push_back(SampleIds(n, deny ? 1 - s : s, rng));
      sets.push_back(std::make_unique<IdSet>(f.sorted.back()));
      f.per_query.assign(static_cast<size_t>(nq), sets.back().get());
      f.which.assign(static_cast<size_t>(nq), 0);
      f.selectivity =
          deny ? 1 - static_cast<double>(sets.back()->size()) / n : sets.back()->size() * 1.0 / n;
      filters.push_back(std::move(f));
    }
  }
  for (int depth = 1; depth <= 4; ++depth) {
    Filter f{absl::StrCat("prefix/", depth), 0, false, {}, {}, {}, {}};
    double share = 0;
    // Queries under the same prefix share one set (on 1M rows a depth-1 set per query would
    // take gigabytes).
    std::map<std::vector<int32_t>, size_t> seen;
    for (int64_t q = 0; q < nq; ++q) {
      const float* row = dist.data() + q * n;
      const int64_t nearest = std::min_element(row, row + n) - row;
      const std::vector<int32_t> prefix(codes.begin() + nearest * 4,
                                        codes.begin() + nearest * 4 + depth);
      if (const auto it = seen.find(prefix); it != seen.end()) {
        share += static_cast<double>(f.sorted[it->second].size()) / n;
        f.which.push_back(it->second);
        f.per_query.push_back(sets[sets.size() - f.sorted.size() + it->second].get());
        continue;
      }
      std::vector<uint64_t> under;
      for (int64_t i = 0; i < n; ++i) {
        if (std::equal(codes.begin() + i * 4, codes.begin() + i * 4 + depth,
                       codes.begin() + nearest * 4)) {
          under.push_back(static_cast<uint64_t>(i));
        }
      }
      share += static_cast<double>(under.size()) / n;
      seen[prefix] = f.sorted.size();
      f.which.push_back(f.sorted.size());
      f.sorted.push_back(std::move(under));
      sets.push_back(std::make_unique<IdSet>(f.sorted.back()));
      f.per_query.push_back(sets.back().get());
    }
    f.selectivity = share / nq;
    filters.push_back(std::move(f));
  }

  // Attributes: rank (and label) per item in a server AttributeIndex; per selectivity the
  // conditions of each query (they differ per query only through its label).
  AttributeIndex attributes;
  {
    std::vector<AttributeIndex::Change> items(static_cast<size_t>(n));
    std::uniform_int_distribution<int64_t> rank(0, 999);
    for (int64_t i = 0; i < n; ++i) {
      items[i].id = static_cast<uint64_t>(i);
      if (!base_labels.empty()) {
        items[i].after.push_back({"label", absl::StrCat("class", base_labels[i])});
      }
      items[i].after.push_back({"rank", rank(rng)});
    }
    AttributeSchema schema = {{"rank", AttributeType::kInt}};
    if (!base_labels.empty()) schema["label"] = AttributeType::kString;
    attributes.Apply(schema, items);
  }
  for (int level = 0; level < 4; ++level) {
    Filter f{"attr", 0, false, {}, {}, {}, {}};
    std::map<int, size_t> seen;  // by label (-1: none)
    double share = 0;
    for (int64_t q = 0; q < nq; ++q) {
      std::vector<AttributeCondition> where;
      const int label = level > 0 && !query_labels.empty() ? query_labels[q] : -1;
      if (level == 0) {
        where = {RankAtMost(499)};
      } else if (label >= 0) {
        where = {LabelIs(label)};
        if (level == 2) where.push_back(RankAtMost(99));
        if (level == 3) where.push_back(RankAtMost(9));
      } else {
        where = {level == 1 ? RankAtMost(99) : level == 2 ? RankAtMost(9) : RankEquals(0)};
      }
      if (const auto it = seen.find(label); it != seen.end()) {
        f.which.push_back(it->second);
        share += static_cast<double>(f.sorted[it->second].size()) / n;
        continue;
      }
      auto ids = attributes.Match(where, data);
      if (!ids.ok()) Die(ids.status().ToString());
      std::sort(ids->begin(), ids->end());
      share += static_cast<double>(ids->size()) / n;
      seen[label] = f.sorted.size();
      f.which.push_back(f.sorted.size());
      f.sorted.push_back(*std::move(ids));
      f.where.push_back(std::move(where));
      sets.push_back(std::make_unique<IdSet>(f.sorted.back()));
    }
    for (int64_t q = 0; q < nq; ++q) {
      f.per_query.push_back(sets[sets.size() - f.sorted.size() + f.which[q]].get());
    }
    f.selectivity = share / nq;
    filters.push_back(std::move(f));
  }

  const int64_t scanned = kNprobe * n / nlist;
  std::printf("\n%-9s %7s | %-15s | %-15s | %-15s | %-15s | %-15s | %s\n", "filter", "select",
              "scan R@10 q/s", "exact R@10 q/s", "post R@10 q/s", "faiss R@10 q/s",
              "served R@10 q/s", "served path");
  double unfiltered_recall = 0;
  {
    Filter none{"none", 1, true, {}, {}, {}, {}};
    const IdSet empty;
    none.per_query.assign(static_cast<size_t>(nq), &empty);
    none.sorted.emplace_back();
    none.which.assign(static_cast<size_t>(nq), 0);
    const auto truth = Truth(dist, nq, n, none);
    IvfPqSearchParams params;
    params.k = kK;
    params.nprobe = kNprobe;
    const Figures plain = Measure(nq, truth, [&](int64_t q) {
      return Ids((*ours.Search(absl::MakeConstSpan(queries.values.data() + q * d, d), params))[0]);
    });
    unfiltered_recall = plain.recall;
    std::printf("%-9s %6.1f%% | %5.3f %9.0f |\n", "none", 100.0, plain.recall, plain.qps);
    std::fflush(stdout);
  }
  for (const Filter& f : filters) {
    const auto truth = Truth(dist, nq, n, f);
    auto query = [&](int64_t q) { return absl::MakeConstSpan(queries.values.data() + q * d, d); };
    // The selector of query q: its prebuilt set, or for an attribute filter what Search does:
    // the planned matches built into `built` when some condition is narrow, else the per-id
    // test `test`.
    const int64_t limit = AttributeMaterializeLimit(kK, kNprobe, n, nlist);
    auto select = [&](int64_t q, IdSet& built, std::function<bool(uint64_t)>& test) -> IdSelector {
      if (f.where.empty()) return {f.per_query[q], f.deny, nullptr};
      const std::vector<AttributeCondition>& where = f.where[f.which[q]];
      auto plan = attributes.Plan(where, limit, data);
      if (!plan.ok()) Die(plan.status().ToString());
      if (plan->materialized) {
        built = IdSet(plan->ids);
        return {&built, false, nullptr};
      }
      test = [&attributes, &where](uint64_t id) { return attributes.Matches(where, id); };
      return {nullptr, false, &test};
    };
    const Figures scan = Measure(nq, truth, [&](int64_t q) {
      IdSet built;
      std::function<bool(uint64_t)> test;
      const IdSelector selector = select(q, built, test);
      IvfPqSearchParams params;
      params.k = kK;
      params.nprobe = kNprobe;
      params.selector = &selector;
      return Ids((*ours.Search(query(q), params))[0]);
    });
    // Exact scoring only where it could compete: allowed sets up to twice the codes scanned.
    Figures exact{0, 0};
    if (f.selectivity * static_cast<double>(n) <= 2.0 * static_cast<double>(scanned)) {
      exact = Measure(nq, truth, [&](int64_t q) {
        IdSet built;
        std::function<bool(uint64_t)> test;
        IdSelector selector = select(q, built, test);
        if (selector.ids == nullptr) {  // broad: Search would scan; matched here to compare
          auto ids = attributes.Match(f.where[f.which[q]], data);
          if (!ids.ok()) Die(ids.status().ToString());
          built = IdSet(*ids);
          selector.ids = &built;
        }
        const std::vector<uint64_t> ids =
            f.deny ? ours.IdsNotIn(*selector.ids) : selector.ids->Sorted();
        auto got = (*storage)->items().Get(data, ids);
        if (!got.ok()) Die(got.status().ToString());
        return Ids((*ExactSearch(Metric::kL2, d, query(q), got->ids, got->vectors, kK))[0]);
      });
    }
    const auto post_k = std::min<int64_t>(
        {n, kMaxPostK, static_cast<int64_t>(std::ceil(kK / std::max(f.selectivity, 1e-9)))});
    const Figures post = Measure(nq, truth, [&](int64_t q) {
      IvfPqSearchParams params;
      params.k = post_k;
      params.nprobe = kNprobe;
      const IdSelector selector{f.per_query[q], f.deny};
      std::vector<uint64_t> ids;
      auto results = ours.Search(query(q), params);
      if (!results.ok()) Die(results.status().ToString());
      for (const IvfPqNeighbor& neighbor : (*results)[0]) {
        if (selector.Accepts(neighbor.id) && static_cast<int64_t>(ids.size()) < kK) {
          ids.push_back(neighbor.id);
        }
      }
      return ids;
    });
    // FAISS: selectors built before the timing, as quantd's sets are.
    std::vector<std::unique_ptr<faiss::IDSelectorBatch>> batches;
    std::vector<std::unique_ptr<faiss::IDSelectorNot>> inverses;
    for (const std::vector<uint64_t>& ids : f.sorted) {
      const std::vector<faiss::Index::idx_t> members(ids.begin(), ids.end());
      batches.push_back(std::make_unique<faiss::IDSelectorBatch>(members.size(), members.data()));
      inverses.push_back(std::make_unique<faiss::IDSelectorNot>(batches.back().get()));
    }
    std::vector<faiss::Index::idx_t> labels(kK);
    std::vector<float> distances(kK);
    const Figures faiss_figures = Measure(nq, truth, [&](int64_t q) {
      const size_t which = f.which[q];
      faiss::SearchParametersIVF params;
      params.nprobe = kNprobe;
      params.sel =
          f.deny ? static_cast<faiss::IDSelector*>(inverses[which].get()) : batches[which].get();
      peer.search(1, queries.values.data() + q * d, kK, distances.data(), labels.data(), &params);
      std::vector<uint64_t> out;
      for (faiss::Index::idx_t l : labels) {
        if (l >= 0) out.push_back(static_cast<uint64_t>(l));
      }
      return out;
    });
    // The served rule, on the mean accepted-set size.
    const double allowed = f.selectivity * n;
    const bool served_exact = ScoreExactly(static_cast<int64_t>(allowed), kK, kNprobe, n, nlist);
    const Figures served = served_exact ? exact : scan;
    std::printf(
        "%-9s %6.2f%% | %5.3f %9.0f | %5.3f %9.0f | %5.3f %9.0f | %5.3f %9.0f | %5.3f %9.0f | %s\n",
        f.kind.c_str(), 100 * f.selectivity, scan.recall, scan.qps, exact.recall, exact.qps,
        post.recall, post.qps, faiss_figures.recall, faiss_figures.qps, served.recall, served.qps,
        served_exact ? "exact" : "scan");
    std::fflush(stdout);
  }
  std::printf(
      "(unfiltered recall@10 at nprobe %lld: %.3f; post-filter k' = min(ceil(k / s), %lld))\n",
      static_cast<long long>(kNprobe), unfiltered_recall, static_cast<long long>(kMaxPostK));

  // Crossover: allowed sets of growing size, scan vs exact with RocksDB reads (per query).
  std::printf("\ncrossover (allow-list, per query; the scan reads ~%lld codes at nprobe %lld):\n",
              static_cast<long long>(scanned), static_cast<long long>(kNprobe));
  std::printf("%8s %10s %10s %10s %8s %10s %6s\n", "allowed", "codes", "scan us", "exact us",
              "exact/scan", "item/code", "rule");
  for (int64_t size : {16, 32, 64, 128, 256, 512, 1024, 2048}) {
    std::vector<uint64_t> ids = SampleIds(n, static_cast<double>(size) / n, rng);
    const IdSet set(ids);
    const IdSelector selector{&set, false};
    auto time_per_query = [&](auto&& body) {
      const auto start = Clock::now();
      for (int64_t q = 0; q < nq; ++q) body(q);
      return 1e6 * SecondsSince(start) / static_cast<double>(nq);
    };
    std::atomic<int64_t> read{0};
    const double scan_us = time_per_query([&](int64_t q) {
      IvfPqSearchParams params;
      params.k = kK;
      params.nprobe = kNprobe;
      params.selector = &selector;
      params.codes_scanned = &read;
      return ours.Search(absl::MakeConstSpan(queries.values.data() + q * d, d), params).ok();
    });
    const double exact_us = time_per_query([&](int64_t q) {
      auto got = (*storage)->items().Get(data, ids);
      return ExactSearch(Metric::kL2, d, absl::MakeConstSpan(queries.values.data() + q * d, d),
                         got->ids, got->vectors, kK)
          .ok();
    });
    const double codes_per_query = static_cast<double>(read.load()) / static_cast<double>(nq);
    const auto count = static_cast<int64_t>(ids.size());
    std::printf("%8lld %10.0f %10.1f %10.1f %8.2f %10.1f %6s\n", static_cast<long long>(count),
                codes_per_query, scan_us, exact_us, exact_us / scan_us,
                (exact_us / static_cast<double>(count)) / (scan_us / codes_per_query),
                ScoreExactly(count, kK, kNprobe, n, nlist) ? "exact" : "scan");
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace
}  // namespace quantd

int main(int argc, char** argv) { return quantd::Main(argc, argv); }
