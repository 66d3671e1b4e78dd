// IVF-PQ benchmark: quantd's core IvfPqIndex against faiss::IndexIVFPQ (IndexFlatL2 coarse
// quantizer, by residual, precomputed tables as FAISS decides) at the same nlist / M / nbits,
// with the same training budget (coarse k-means: 10 iterations on at most 256 rows per
// centroid; PQ k-means: 25 iterations on the residuals of at most 65536 rows; random init), on
// the same data in the same run.
//
//   env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE build/bench/ivfpq_bench [--quick]
//       [--threads=1,2] [--only=sift5k,movielens,fmnist,synth1m] [--fastscan]
//
// --fastscan: instead, 4-bit fast-scan at M = d / 4 (M32 x 4 bit for 128 dimensions): quantd's
// fast-scan lists with every kernel this CPU runs, quantd's plain 4-bit scan, and FAISS's
// IndexIVFPQFastScan (by residual and not), all on the same coarse centroids (quantd's, given
// to FAISS's IndexFlatL2 quantizer, so the lists are the same), with the PQ trained on 4096 rows
// (FAISS's 256 x 16). Per nprobe: R@1, R@10, q/s over the whole query batch (1000 for synth1m),
// the codes actually scanned per query (sizes of the probed lists) and ns per code (wall time
// of a pass / codes scanned in it; with 2 threads that is the pair's throughput). Ratios are
// q/s against FAISS's by-residual fast-scan in the same run.
//
// Per data set and thread count: train and add seconds, bytes per vector, then per nprobe in
// {1, 4, 16, 64}: recall@1 (the first result is the true nearest neighbour), recall@10
// (|top 10 ∩ true top 10| / 10) and queries/s (fastest of >= 3 passes over the whole query batch),
// each with the ratio quantd / FAISS. Ground truth: the shipped .ivecs for sift5k and movielens;
// exact brute force (our GEMM distances) for Fashion-MNIST and the synthetic set. --quick skips the
// 1M x 128 synthetic Gaussian mixture. Data: QUANTD_TEST_DATA_DIR or the checkout's ../shared/data,
// and Debian's dataset-fashion-mnist.
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numbers>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/types/span.h"
#include "bench/bench_util.h"
#include "core/fastscan.h"
#include "core/ivf_pq.h"
#include "core/kmeans.h"
#include "core/top_k.h"
#include "faiss/IndexFlat.h"
#include "faiss/IndexIVFPQ.h"
#include "faiss/IndexIVFPQFastScan.h"
#include "io/vector_file.h"

namespace quantd {
namespace {

using bench::Clock;
using bench::DataDir;
using bench::Die;
using bench::GaussianMixture;
using bench::SecondsSince;

uint64_t kSeed = 42;  // --seed
constexpr int64_t kK = 10;
constexpr int64_t kNprobes[] = {1, 4, 16, 64};

Matrix Load(const std::string& path) { return bench::LoadMatrix(path); }

// Ground truth: the kK nearest base rows of every query (nq x kK), nearest first.
std::vector<int64_t> LoadTruth(const std::string& path) {
  auto truth = ReadIntMatrix(path);
  if (!truth.ok()) Die(absl::StrCat("cannot read ", path, ": ", truth.status().ToString()));
  std::vector<int64_t> out(static_cast<size_t>(truth->rows * kK));
  for (int64_t q = 0; q < truth->rows; ++q) {
    std::copy_n(truth->values.begin() + q * truth->dim, kK, out.begin() + q * kK);
  }
  return out;
}

struct Dataset {
  std::string name;
  Matrix base;
  Matrix queries;
  std::vector<int64_t> truth;  // queries x kK
  int64_t nlist = 0;
  int64_t m = 0;
  int nbits = 8;
};

struct Recall {
  double at1 = 0;
  double at10 = 0;
};

// labels: nq x kK row ids (-1 for none).
Recall Measure(const Dataset& data, const std::vector<int64_t>& labels) {
  Recall r;
  const int64_t nq = data.queries.rows;
  for (int64_t q = 0; q < nq; ++q) {
    const int64_t* truth = data.truth.data() + q * kK;
    const int64_t* got = labels.data() + q * kK;
    if (got[0] == truth[0]) r.at1 += 1;
    for (int64_t i = 0; i < kK; ++i) {
      if (got[i] >= 0 && std::find(truth, truth + kK, got[i]) != truth + kK) r.at10 += 1;
    }
  }
  r.at1 /= static_cast<double>(nq);
  r.at10 /= static_cast<double>(nq * kK);
  return r;
}

// Runs `search` (one pass over all queries) at least 3 times and for at least min_seconds;
// returns queries/s of the fastest pass (the least disturbed by other load on the machine).
template <typename Fn>
double QueriesPerSecond(int64_t nq, const Fn& search, double min_seconds = 0.5) {
  int passes = 0;
  double best = std::numeric_limits<double>::infinity();
  const auto start = Clock::now();
  do {
    const auto pass = Clock::now();
    search();
    best = std::min(best, SecondsSince(pass));
    ++passes;
  } while (passes < 3 || SecondsSince(start) < min_seconds);
  return static_cast<double>(nq) / best;
}

void RunDataset(const Dataset& data, int threads) {
  const int64_t n = data.base.rows;
  const int64_t d = data.base.dim;
  const int64_t nq = data.queries.rows;
  std::fprintf(stderr, "  %s, %d thread(s): quantd ...\n", data.name.c_str(), threads);

  // quantd.
  IvfPqOptions options;
  options.nlist = data.nlist;
  options.m = data.m;
  options.nbits = data.nbits;
  options.seed = kSeed;
  options.num_threads = threads;
  auto start = Clock::now();
  auto trained = IvfPqIndex::Train(data.base.values.data(), n, d, options);
  const double ours_train = SecondsSince(start);
  if (!trained.ok()) Die(trained.status().ToString());
  IvfPqIndex ours = std::move(*trained);
  std::vector<uint64_t> ids(static_cast<size_t>(n));
  std::iota(ids.begin(), ids.end(), 0);
  start = Clock::now();
  if (auto s = ours.Add(ids, data.base.values); !s.ok()) Die(s.ToString());
  const double ours_add = SecondsSince(start);
  const IvfPqStats stats = ours.Stats();

  // FAISS.
  std::fprintf(stderr, "  %s, %d thread(s): FAISS ...\n", data.name.c_str(), threads);
  omp_set_num_threads(threads);
  faiss::IndexFlatL2 quantizer(d);
  faiss::IndexIVFPQ peer(&quantizer, d, data.nlist, data.m, data.nbits);
  peer.cp.seed = static_cast<int>(kSeed);         // coarse: niter 10 (FAISS's default for IVF)
  peer.pq.cp.seed = static_cast<int>(kSeed) + 1;  // PQ: niter 25, 256 x ksub training rows
  peer.verbose = false;
  start = Clock::now();
  peer.train(n, data.base.values.data());
  const double faiss_train = SecondsSince(start);
  start = Clock::now();
  peer.add(n, data.base.values.data());
  const double faiss_add = SecondsSince(start);
  const double faiss_bytes = static_cast<double>(peer.code_size + sizeof(faiss::Index::idx_t));

  std::printf(
      "%-12s thr %d  n %7lld d %4lld nlist %5lld M %3lld nbits %d  imbalance %.3f  "
      "precomputed table: quantd %s, FAISS %d%s\n",
      data.name.c_str(), threads, static_cast<long long>(n), static_cast<long long>(d),
      static_cast<long long>(data.nlist), static_cast<long long>(data.m), data.nbits,
      stats.imbalance_factor, stats.precomputed_table ? "yes" : "no", peer.use_precomputed_table,
      ours.training_warning().empty() ? "" : "  (n < 39 x nlist)");
  std::printf(
      "%-12s thr %d  train s   %8.3f FAISS %8.3f ratio %5.2f | add s %7.3f FAISS %7.3f "
      "ratio %5.2f | bytes/vec %5.1f FAISS %5.1f ratio %4.2f\n",
      data.name.c_str(), threads, ours_train, faiss_train, ours_train / faiss_train, ours_add,
      faiss_add, ours_add / faiss_add, static_cast<double>(stats.bytes_per_vector), faiss_bytes,
      static_cast<double>(stats.bytes_per_vector) / faiss_bytes);

  std::vector<int64_t> our_labels(static_cast<size_t>(nq * kK));
  std::vector<faiss::Index::idx_t> peer_labels(static_cast<size_t>(nq * kK));
  std::vector<float> peer_distances(static_cast<size_t>(nq * kK));
  for (int64_t nprobe : kNprobes) {
    IvfPqSearchParams params;
    params.k = kK;
    params.nprobe = nprobe;
    params.num_threads = threads;
    std::vector<std::vector<IvfPqNeighbor>> results;
    const double ours_qps = QueriesPerSecond(nq, [&] {
      auto r = ours.Search(data.queries.values, params);
      if (!r.ok()) Die(r.status().ToString());
      results = std::move(*r);
    });
    std::fill(our_labels.begin(), our_labels.end(), -1);
    for (int64_t q = 0; q < nq; ++q) {
      for (size_t i = 0; i < results[q].size(); ++i) {
        our_labels[q * kK + static_cast<int64_t>(i)] = static_cast<int64_t>(results[q][i].id);
      }
    }
    peer.nprobe = static_cast<size_t>(nprobe);
    const double faiss_qps = QueriesPerSecond(nq, [&] {
      peer.search(nq, data.queries.values.data(), kK, peer_distances.data(), peer_labels.data());
    });
    const std::vector<int64_t> faiss_labels(peer_labels.begin(), peer_labels.end());
    const Recall a = Measure(data, our_labels);
    const Recall b = Measure(data, faiss_labels);
    std::printf(
        "%-12s thr %d  nprobe %2lld  R@1 %.4f FAISS %.4f (%+.4f) | R@10 %.4f FAISS %.4f "
        "(%+.4f) | q/s %9.0f FAISS %9.0f ratio %5.2f\n",
        data.name.c_str(), threads, static_cast<long long>(nprobe), a.at1, b.at1, a.at1 - b.at1,
        a.at10, b.at10, a.at10 - b.at10, ours_qps, faiss_qps, ours_qps / faiss_qps);
    std::fflush(stdout);
  }
}

// The scan kernels alone: ns per code over a list of 2^20 random M-subquantizer codes (16 MB at
// M 32, beyond most L2 caches, like the lists of a real index) with one random quantised table
// and k = 10, best of 5 passes.
void KernelOnly(int64_t m) {
  const int64_t n = int64_t{1} << 20;
  std::mt19937_64 rng(kSeed);
  std::vector<uint8_t> blocks(
      static_cast<size_t>(fastscan::NumBlocks(n) * fastscan::BlockBytes(m)));
  for (uint8_t& b : blocks) b = static_cast<uint8_t>(rng());
  std::vector<uint64_t> ids(static_cast<size_t>(n));
  std::iota(ids.begin(), ids.end(), 0);
  std::vector<float> table(static_cast<size_t>(m * 16));
  std::normal_distribution<float> normal(0, 1);
  for (float& v : table) v = normal(rng);
  std::vector<uint8_t> lut(static_cast<size_t>(fastscan::LutBytes(m)));
  float bias = 0, inv_scale = 0;
  fastscan::QuantizeLut(table.data(), nullptr, m, 0.0f, lut.data(), &bias, &inv_scale);
  for (fastscan::Kernel k :
       {fastscan::Kernel::kAvx512, fastscan::Kernel::kAvx2, fastscan::Kernel::kScalar}) {
    if (!fastscan::KernelSupported(k)) continue;
    double best = std::numeric_limits<double>::infinity();
    for (int pass = 0; pass < 5; ++pass) {
      TopK top(10, n);
      const auto start = Clock::now();
      fastscan::ScanWith(k, blocks.data(), n, m, lut.data(), bias, inv_scale, ids.data(), top);
      best = std::min(best, SecondsSince(start));
    }
    std::printf("kernel only  M%lld x 4 bit, %lld codes in one list, k 10: %-10s %.3f ns/code\n",
                static_cast<long long>(m), static_cast<long long>(n), fastscan::KernelName(k),
                best * 1e9 / static_cast<double>(n));
  }
  std::fflush(stdout);
}

// Fast-scan comparison (--fastscan); the models are trained once, searched with each thread
// count.
void RunFastScan(const Dataset& data, const std::vector<int>& thread_counts) {
  const int64_t n = data.base.rows;
  const int64_t d = data.base.dim;
  const int64_t nq = data.queries.rows;
  const int64_t m = d / 4;
  const int max_threads = *std::max_element(thread_counts.begin(), thread_counts.end());
  std::vector<uint64_t> ids(static_cast<size_t>(n));
  std::iota(ids.begin(), ids.end(), 0);

  IvfPqOptions options;
  options.nlist = data.nlist;
  options.m = m;
  options.nbits = 4;
  options.pq_training_rows = 4096;  // FAISS: 256 rows per centroid
  options.seed = kSeed;
  options.num_threads = max_threads;
  options.fast_scan = true;
  std::fprintf(stderr, "  %s fast-scan: quantd training ...\n", data.name.c_str());
  auto start = Clock::now();
  auto trained = IvfPqIndex::Train(data.base.values.data(), n, d, options);
  if (!trained.ok()) Die(trained.status().ToString());
  const double train_s = SecondsSince(start);
  IvfPqIndex fast = std::move(*trained);
  start = Clock::now();
  if (auto st = fast.Add(ids, data.base.values); !st.ok()) Die(st.ToString());
  const double add_s = SecondsSince(start);
  options.fast_scan = false;  // same training (fast_scan only changes the lists' layout)
  auto plain_trained = IvfPqIndex::Train(data.base.values.data(), n, d, options);
  if (!plain_trained.ok()) Die(plain_trained.status().ToString());
  IvfPqIndex plain = std::move(*plain_trained);
  if (auto st = plain.Add(ids, data.base.values); !st.ok()) Die(st.ToString());

  // FAISS on quantd's coarse centroids: a trained quantizer holding nlist vectors is not
  // re-trained, so both systems probe the same lists.
  std::fprintf(stderr, "  %s fast-scan: FAISS ...\n", data.name.c_str());
  omp_set_num_threads(max_threads);
  faiss::IndexFlatL2 quantizer(d);
  quantizer.add(data.nlist, fast.coarse_centroids().data());
  faiss::IndexIVFPQFastScan peer_res(&quantizer, d, data.nlist, m, 4);
  faiss::IndexIVFPQFastScan peer_raw(&quantizer, d, data.nlist, m, 4);
  peer_res.by_residual = true;
  peer_raw.by_residual = false;
  double peer_train_s = 0;
  for (faiss::IndexIVFPQFastScan* peer : {&peer_res, &peer_raw}) {
    peer->pq.cp.seed = static_cast<int>(kSeed) + 1;
    peer->verbose = false;
    start = Clock::now();
    peer->train(n, data.base.values.data());
    peer_train_s = SecondsSince(start);
    peer->add(n, data.base.values.data());
  }
  const IvfPqStats stats = fast.Stats();
  std::printf(
      "%-8s fast-scan  n %lld d %lld nlist %lld M%lld x 4 bit  train s %.2f (FAISS %.2f) add s "
      "%.2f  bytes/vec %lld (codes %.1f MB)  imbalance %.3f\n",
      data.name.c_str(), static_cast<long long>(n), static_cast<long long>(d),
      static_cast<long long>(data.nlist), static_cast<long long>(m), train_s, peer_train_s, add_s,
      static_cast<long long>(stats.bytes_per_vector), stats.list_code_bytes / 1e6,
      stats.imbalance_factor);

  // Codes FAISS scans per query at nprobe: the sizes of the lists its quantizer probes.
  auto faiss_codes = [&](const faiss::IndexIVFPQFastScan& peer, int64_t nprobe) {
    std::vector<faiss::Index::idx_t> lists(static_cast<size_t>(nq * nprobe));
    std::vector<float> dist(lists.size());
    quantizer.search(nq, data.queries.values.data(), nprobe, dist.data(), lists.data());
    int64_t codes = 0;
    for (faiss::Index::idx_t l : lists) {
      if (l >= 0) codes += static_cast<int64_t>(peer.invlists->list_size(l));
    }
    return codes;
  };
  std::vector<fastscan::Kernel> kernels;
  for (fastscan::Kernel k :
       {fastscan::Kernel::kAvx512, fastscan::Kernel::kAvx2, fastscan::Kernel::kScalar}) {
    if (fastscan::KernelSupported(k)) kernels.push_back(k);
  }
  const fastscan::Kernel best = fastscan::ActiveKernel();
  std::vector<faiss::Index::idx_t> peer_labels(static_cast<size_t>(nq * kK));
  std::vector<float> peer_distances(static_cast<size_t>(nq * kK));
  std::vector<int64_t> labels(static_cast<size_t>(nq * kK));
  for (int threads : thread_counts) {
    omp_set_num_threads(threads);
    for (int64_t nprobe : kNprobes) {
      struct Row {
        std::string system;
        Recall recall;
        double qps;
        int64_t codes;  // per pass
      };
      std::vector<Row> rows;
      for (faiss::IndexIVFPQFastScan* peer : {&peer_res, &peer_raw}) {
        peer->nprobe = static_cast<size_t>(nprobe);
        const double qps = QueriesPerSecond(nq, [&] {
          peer->search(nq, data.queries.values.data(), kK, peer_distances.data(),
                       peer_labels.data());
        });
        const std::vector<int64_t> got(peer_labels.begin(), peer_labels.end());
        rows.push_back(
            {peer->by_residual ? "FAISS IVFPQFastScan by_residual" : "FAISS IVFPQFastScan raw",
             Measure(data, got), qps, faiss_codes(*peer, nprobe)});
      }
      // batch 1: one Search call per query (the serving case) instead of one for the batch.
      auto ours = [&](const IvfPqIndex& index, const std::string& name, bool batch1 = false) {
        IvfPqSearchParams params;
        params.k = kK;
        params.nprobe = nprobe;
        params.num_threads = threads;
        std::atomic<int64_t> scanned{0};
        std::vector<std::vector<IvfPqNeighbor>> results(static_cast<size_t>(nq));
        auto search = [&] {
          const int64_t step = batch1 ? 1 : nq;
          for (int64_t q = 0; q < nq; q += step) {
            auto r = index.Search(absl::MakeConstSpan(data.queries.values).subspan(q * d, step * d),
                                  params);
            if (!r.ok()) Die(r.status().ToString());
            std::move(r->begin(), r->end(), results.begin() + q);
          }
        };
        const double qps = QueriesPerSecond(nq, search);
        params.codes_scanned = &scanned;
        search();
        std::fill(labels.begin(), labels.end(), -1);
        for (int64_t q = 0; q < nq; ++q) {
          for (size_t i = 0; i < results[q].size(); ++i) {
            labels[q * kK + static_cast<int64_t>(i)] = static_cast<int64_t>(results[q][i].id);
          }
        }
        rows.push_back({name, Measure(data, labels), qps, scanned.load()});
      };
      for (fastscan::Kernel k : kernels) {
        if (k == fastscan::Kernel::kScalar && nprobe > 16) continue;  // slow, and only a check
        fastscan::SetKernel(k);
        ours(fast, absl::StrCat("quantd fast-scan ", fastscan::KernelName(k),
                                k == best ? " (chosen)" : ""));
      }
      fastscan::SetKernel(best);
      if (threads == 1) {
        ours(fast, absl::StrCat("quantd fast-scan ", fastscan::KernelName(best), " batch 1"), true);
      }
      if (nprobe <= 16) ours(plain, "quantd plain 4-bit scan");
      const double faiss_qps = rows[0].qps;
      for (const Row& r : rows) {
        const double codes_per_query = static_cast<double>(r.codes) / static_cast<double>(nq);
        std::printf(
            "%-8s thr %d nprobe %2lld  %-42s R@1 %.4f R@10 %.4f  q/s %8.0f  codes/q %7.0f  "
            "ns/code %6.3f  q/s vs FAISS by_residual %5.2f\n",
            data.name.c_str(), threads, static_cast<long long>(nprobe), r.system.c_str(),
            r.recall.at1, r.recall.at10, r.qps, codes_per_query, 1e9 / (r.qps * codes_per_query),
            r.qps / faiss_qps);
      }
      std::fflush(stdout);
    }
  }

  // Churn: delete 20% of the vectors (every fifth id), add them back under new ids, and compare
  // the lists' code bytes (whole blocks of 32) and their vectors' capacity with before.
  const IvfPqStats before = fast.Stats();
  std::vector<uint64_t> gone, again;
  std::vector<float> again_vectors;
  for (int64_t i = 0; i < n; i += 5) {
    gone.push_back(static_cast<uint64_t>(i));
    again.push_back(static_cast<uint64_t>(n + i));
    again_vectors.insert(again_vectors.end(), data.base.values.begin() + i * d,
                         data.base.values.begin() + (i + 1) * d);
  }
  start = Clock::now();
  const int64_t removed = fast.Remove(gone);
  const double remove_s = SecondsSince(start);
  if (auto st = fast.Add(again, again_vectors); !st.ok()) Die(st.ToString());
  const IvfPqStats after = fast.Stats();
  std::printf(
      "%-8s fast-scan churn: removed %lld (%.3f s) and re-added them under new ids: list codes "
      "%.2f MB -> %.2f MB (capacity %.2f -> %.2f MB; dense minimum %.2f MB), index memory %.1f "
      "-> %.1f MB\n",
      data.name.c_str(), static_cast<long long>(removed), remove_s, before.list_code_bytes / 1e6,
      after.list_code_bytes / 1e6, before.list_code_capacity_bytes / 1e6,
      after.list_code_capacity_bytes / 1e6,
      static_cast<double>(n * (after.bytes_per_vector - 8)) / 1e6, before.memory_bytes / 1e6,
      after.memory_bytes / 1e6);
}

}  // namespace
}  // namespace quantd

int main(int argc, char** argv) {
  using namespace quantd;
  bool quick = false;
  bool fast_scan = false;
  std::vector<int> thread_counts = {1, 2};
  std::set<std::string> only;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--quick") {
      quick = true;
    } else if (arg == "--fastscan") {
      fast_scan = true;
    } else if (arg.rfind("--threads=", 0) == 0) {
      thread_counts.clear();
      for (absl::string_view part : absl::StrSplit(arg.substr(10), ',')) {
        int t = 0;
        if (!absl::SimpleAtoi(part, &t) || t < 1) Die("bad --threads value " + arg);
        thread_counts.push_back(t);
      }
    } else if (arg.rfind("--seed=", 0) == 0) {
      if (!absl::SimpleAtoi(arg.substr(7), &kSeed)) Die("bad --seed value " + arg);
    } else if (arg.rfind("--only=", 0) == 0) {
      for (absl::string_view part : absl::StrSplit(arg.substr(7), ',')) only.emplace(part);
    } else {
      std::fprintf(stderr,
                   "usage: %s [--quick] [--threads=1,2] [--seed=42] "
                   "[--only=sift5k,movielens,fmnist,synth1m] [--fastscan]\n",
                   argv[0]);
      return 2;
    }
  }
  auto run = [&](const std::string& name) { return only.empty() || only.contains(name); };
  // FAISS at its best on this machine: libgomp's spinning workers compete with our threads on a
  // small machine (read when the library loads, hence the re-exec).
  if (std::getenv("OMP_WAIT_POLICY") == nullptr) {
    setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    execv("/proc/self/exe", argv);
    std::perror("execv /proc/self/exe");
  }
  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  std::printf(
      "quantd ivfpq_bench: %u hardware threads; FAISS %d.%d.%d, OPENBLAS_CORETYPE=%s, "
      "OMP_WAIT_POLICY=%s\n",
      std::thread::hardware_concurrency(), FAISS_VERSION_MAJOR, FAISS_VERSION_MINOR,
      FAISS_VERSION_PATCH, coretype ? coretype : "(unset)", std::getenv("OMP_WAIT_POLICY"));
  std::printf(
      "k %lld, seed %llu; recall@1 = first result is the true NN, recall@10 = |top10 ∩ "
      "true top10| / 10; q/s of the fastest of >= 3 passes over the whole query batch\n\n",
      static_cast<long long>(kK), static_cast<unsigned long long>(kSeed));
  std::printf(
      "CPU: %s; fast-scan kernel chosen at run time: %s (hand-written, target attributes)\n\n",
      bench::CpuModel().c_str(), fastscan::KernelName(fastscan::ActiveKernel()));
  std::fflush(stdout);

  const int max_threads = *std::max_element(thread_counts.begin(), thread_counts.end());
  std::vector<Dataset> sets;
  const std::string dir = DataDir();
  if (run("sift5k")) {
    Dataset s{"sift5k",
              Load(dir + "/sift5k/sift5k_base.fvecs"),
              Load(dir + "/sift5k/sift5k_query.fvecs"),
              LoadTruth(dir + "/sift5k/sift5k_groundtruth.ivecs"),
              64,
              16,
              8};
    sets.push_back(std::move(s));
  }
  if (run("movielens")) {
    Dataset s{"movielens",
              Load(dir + "/movielens/ml-10m_base.fvecs"),
              Load(dir + "/movielens/ml-10m_query.fvecs"),
              LoadTruth(dir + "/movielens/ml-10m_groundtruth_l2.ivecs"),
              64,
              16,
              8};
    sets.push_back(std::move(s));
  }
  if (run("fmnist")) {
    Dataset s{"fmnist",
              Load(std::string(QUANTD_FASHION_MNIST_DIR) + "/train-images-idx3-ubyte.gz"),
              Load(std::string(QUANTD_FASHION_MNIST_DIR) + "/t10k-images-idx3-ubyte.gz"),
              {},
              256,
              28,
              8};
    std::fprintf(stderr, "fmnist: exact ground truth ...\n");
    s.truth = bench::ExactNeighbors(s.base, s.queries, kK, max_threads);
    sets.push_back(std::move(s));
  }
  if (!quick && run("synth1m")) {
    Dataset s{"synth1m",
              GaussianMixture(1000000, 128, 1000, kSeed, kSeed + 1),
              GaussianMixture(1000, 128, 1000, kSeed, kSeed + 2),
              {},
              1024,
              16,
              8};
    std::fprintf(stderr, "synth1m: exact ground truth ...\n");
    s.truth = bench::ExactNeighbors(s.base, s.queries, kK, max_threads);
    sets.push_back(std::move(s));
  }
  if (fast_scan) KernelOnly(32);
  for (const Dataset& data : sets) {
    if (fast_scan) {
      RunFastScan(data, thread_counts);
      std::printf("\n");
      continue;
    }
    for (int threads : thread_counts) RunDataset(data, threads);
    std::printf("\n");
  }
  return 0;
}
