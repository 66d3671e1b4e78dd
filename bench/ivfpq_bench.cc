// IVF-PQ benchmark: quantd's core IvfPqIndex against faiss::IndexIVFPQ (IndexFlatL2 coarse
// quantizer, by residual, precomputed tables as FAISS decides) at the same nlist / M / nbits,
// with the same training budget (coarse k-means: 10 iterations on at most 256 rows per
// centroid; PQ k-means: 25 iterations on the residuals of at most 65536 rows; random init), on
// the same data in the same run.
//
//   env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE build/bench/ivfpq_bench [--quick]
//       [--threads=1,2] [--only=sift5k,movielens,fmnist,synth1m]
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
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numbers>
#include <numeric>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/bench_util.h"
#include "core/ivf_pq.h"
#include "core/kmeans.h"
#include "faiss/IndexFlat.h"
#include "faiss/IndexIVFPQ.h"
#include "io/vector_file.h"

namespace quantd {
namespace {

using bench::Clock;
using bench::Die;
using bench::GaussianMixture;
using bench::SecondsSince;

uint64_t kSeed = 42;  // --seed
constexpr int64_t kK = 10;
constexpr int64_t kNprobes[] = {1, 4, 16, 64};

std::string DataDir() {
  if (const char* dir = std::getenv("QUANTD_TEST_DATA_DIR"); dir != nullptr && *dir) return dir;
  return QUANTD_DATA_DIR;
}

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

}  // namespace
}  // namespace quantd

int main(int argc, char** argv) {
  using namespace quantd;
  bool quick = false;
  std::vector<int> thread_counts = {1, 2};
  std::set<std::string> only;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--quick") {
      quick = true;
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
                   "[--only=sift5k,movielens,fmnist,synth1m]\n",
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
  for (const Dataset& data : sets) {
    for (int threads : thread_counts) RunDataset(data, threads);
    std::printf("\n");
  }
  return 0;
}
