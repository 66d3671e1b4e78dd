// IVF-PQ benchmark: quantd's core IvfPqIndex against faiss::IndexIVFPQ (IndexFlatL2 coarse
// quantizer, by residual, precomputed tables as FAISS decides) at the same nlist / M / nbits,
// with the same training budget (coarse k-means: 10 iterations on at most 256 rows per
// centroid; PQ k-means: 25 iterations on the residuals of at most 65536 rows; random init), on
// the same data in the same run.
//
//   env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE build/bench/ivfpq_bench [--quick]
//       [--threads=1,2] [--only=sift5k,movielens,fmnist,synth1m] [--fastscan | --frontier]
//
// Every mode first prints the CPU model, its SIMD features (/proc/cpuinfo), FAISS's compile
// options (Debian's libfaiss is a generic x86-64 build: its fast-scan runs FAISS's emulated
// 256-bit SIMD), the fast-scan kernel quantd chose, and the streaming read bandwidth per thread
// count (ReadBandwidth: one or two threads summing a 1 GiB buffer, best of 5).
//
// Each measured configuration prints R@1, R@10, q/s (fastest of >= 3 passes over the whole
// query batch), codes scanned per query (quantd: IvfPqSearchParams::codes_scanned; FAISS: the
// sizes of the lists its quantizer probes, checked against indexIVF_stats.ndis where FAISS
// keeps it), ns per code (time per query / codes per query, refine included in refine rows),
// the memory floor (bytes of codes read per query / the measured bandwidth at that thread
// count; ids and refine reads not counted) with the ratio of the time per query to it, and the
// q/s ratio to the FAISS peer of the block.
//
// Default: per data set and thread count: train and add seconds, bytes per vector, then per
// nprobe in {1, 4, 16, 64}: quantd 8-bit, quantd 8-bit with exact refine (4 x k candidates
// re-ranked with the rows of the in-memory base array), FAISS IndexIVFPQ (its own coarse
// quantizer: this mode also compares training) and IndexRefineFlat around it (k_factor 4).
//
// --fastscan: instead, 4-bit fast-scan at M = d / 4 (M32 x 4 bit for 128 dimensions): quantd's
// fast-scan lists with every kernel this CPU runs, with refine 4, quantd's plain 4-bit scan,
// FAISS's IndexIVFPQFastScan (by residual and not) and IndexRefineFlat around each, all on the
// same coarse centroids (quantd's, given to FAISS's IndexFlatL2 quantizer, so the lists are the
// same and so are the codes scanned), with the PQ trained on 4096 rows (FAISS's 256 x 16).
// Ratios are q/s against FAISS's by-residual fast-scan in the same run.
//
// --frontier: per data set, the systems of kFrontier (quantd 8-bit and fast-scan, each with and
// without refine; FAISS IVFPQ and IVFPQFastScan by residual and raw, each with and without
// IndexRefineFlat, and IVFPQ and by-residual fast-scan with IndexRefine over an 8-bit
// IndexScalarQuantizer, the peer of quantd's SQ8 refine codes; all on quantd's coarse centroids)
// swept over nprobe 1, 2, 4, ... (and refine 2, 4, ..., 64), then per recall level R@10 >= 0.8,
// 0.9, 0.95 the best q/s of each system reaching it, the configuration, and quantd's ratio to the
// best FAISS system. Use
// --threads=1 (each thread count given is swept) and --only= to pick data sets (sift5k, fmnist,
// synth1m). A sweep over nprobe stops at R@10 >= 0.95 or when doubling nprobe gains < 0.002.
// --queries=N: the first N Fashion-MNIST test images only (the frontier's slow configurations scan
// up to 60000 codes of 98 bytes a query).
//
// Ground truth: the shipped .ivecs for sift5k and movielens; exact brute force (our GEMM
// distances) for Fashion-MNIST and the synthetic set. --quick skips the 1M x 128 synthetic
// Gaussian mixture. Data: QUANTD_TEST_DATA_DIR or the checkout's ../shared/data, and Debian's
// dataset-fashion-mnist.
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <numbers>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/types/span.h"
#include "bench/bench_util.h"
#include "core/fastscan.h"
#include "core/ivf_pq.h"
#include "core/kmeans.h"
#include "core/pq8_scan.h"
#include "core/top_k.h"
#include "faiss/IndexFlat.h"
#include "faiss/IndexIVF.h"
#include "faiss/IndexIVFPQ.h"
#include "faiss/IndexIVFPQFastScan.h"
#include "faiss/IndexRefine.h"
#include "faiss/IndexScalarQuantizer.h"
#include "faiss/utils/utils.h"
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
constexpr int64_t kRefine = 4;  // refine factor of the refine rows: 4 x k candidates re-ranked

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

// Runs `search` (one pass over all queries) at least 3 times (fewer once 2 s have passed) and
// for at least min_seconds; returns queries/s of the fastest pass (the least disturbed by other
// load on the machine).
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
  } while ((passes < 3 && SecondsSince(start) < 2.0) || SecondsSince(start) < min_seconds);
  return static_cast<double>(nq) / best;
}

// Streaming read bandwidth in bytes/s: `threads` threads each sum their share of a 1 GiB
// buffer of uint64 (far beyond any LLC; the compiler vectorises the loop), best of 5 passes.
// The memory floor of a query is the bytes of codes it reads divided by this.
double ReadBandwidth(int threads) {
  const size_t words = (size_t{1} << 30) / sizeof(uint64_t);
  std::vector<uint64_t> buffer(words, 1);  // touched, so the pages exist
  std::vector<uint64_t> sums(static_cast<size_t>(threads));
  double best = std::numeric_limits<double>::infinity();
  for (int pass = 0; pass < 5; ++pass) {
    const auto start = Clock::now();
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        const size_t begin = words * static_cast<size_t>(t) / static_cast<size_t>(threads);
        const size_t end = words * static_cast<size_t>(t + 1) / static_cast<size_t>(threads);
        uint64_t sum = 0;
        for (size_t i = begin; i < end; ++i) sum += buffer[i];
        sums[static_cast<size_t>(t)] = sum;
      });
    }
    for (std::thread& w : workers) w.join();
    best = std::min(best, SecondsSince(start));
  }
  if (std::accumulate(sums.begin(), sums.end(), uint64_t{0}) != words) Die("bandwidth sum");
  return static_cast<double>(words * sizeof(uint64_t)) / best;
}

// Measured bandwidth per thread count (filled in main).
std::map<int, double> bandwidth;

// One measured configuration: recall, q/s (fastest pass), the stored codes scanned per query
// and their size in bytes.
struct Row {
  std::string system;
  Recall recall;
  double qps = 0;
  double codes_per_query = 0;
  double code_bytes = 0;
  // quantd 8-bit: share of the scanned codes whose float distance was computed (the rest the
  // SIMD lower bound rejected); < 0: not measured.
  double summed_share = -1;
};

// "R@1 .. R@10 .. q/s .. codes/q .. ns/code .. floor": ns per code = wall time per query /
// codes scanned per query (refine included where the row refines); floor = bytes of codes read
// per query / streaming read bandwidth at this thread count; x floor = time per query / floor.
void PrintRow(const std::string& head, const Row& r, double peer_qps, int threads) {
  const double floor_s = r.codes_per_query * r.code_bytes / bandwidth.at(threads);
  std::printf(
      "%s  %-44s R@1 %.4f R@10 %.4f  q/s %8.0f  codes/q %7.0f  ns/code %6.3f  floor us %7.2f "
      "x floor %5.2f  ratio %5.2f\n",
      head.c_str(), r.system.c_str(), r.recall.at1, r.recall.at10, r.qps, r.codes_per_query,
      1e9 / (r.qps * r.codes_per_query), floor_s * 1e6, 1.0 / (r.qps * floor_s), r.qps / peer_qps);
  if (r.summed_share >= 0) {
    std::printf("%s  %-44s float sums %.2f%% of the codes scanned\n", head.c_str(), "",
                100.0 * r.summed_share);
  }
}

std::vector<int64_t> Labels(const std::vector<std::vector<IvfPqNeighbor>>& results) {
  std::vector<int64_t> labels(results.size() * kK, -1);
  for (size_t q = 0; q < results.size(); ++q) {
    for (size_t i = 0; i < results[q].size() && i < static_cast<size_t>(kK); ++i) {
      labels[q * kK + i] = static_cast<int64_t>(results[q][i].id);
    }
  }
  return labels;
}

// quantd at nprobe with `threads`; refine > 1 re-ranks refine x k candidates by exact distances
// to the rows of data.base (the in-memory base array).
// batch1: one Search call per query (the serving case) instead of one for the whole batch.
// refine > 1 re-ranks from the index's refine codes when it keeps them (unless exact), else
// exactly from the in-memory base rows.
Row RunQuantd(const Dataset& data, const IvfPqIndex& index, const std::string& name, int64_t nprobe,
              int64_t refine, int threads, double min_seconds = 0.5, bool batch1 = false,
              bool exact = false) {
  const int64_t d = data.base.dim;
  IvfPqSearchParams params;
  params.k = kK;
  params.nprobe = nprobe;
  params.num_threads = threads;
  if (refine > 1) params.refine = refine;
  if (refine > 1 && (exact || index.refine_codes() == RefineCodes::kNone)) {
    params.fetch = [&data, d](uint64_t id, float* out) {
      if (id >= static_cast<uint64_t>(data.base.rows)) return false;
      std::copy_n(data.base.values.data() + static_cast<int64_t>(id) * d, d, out);
      return true;
    };
  }
  std::atomic<int64_t> scanned{0}, summed{0};
  params.codes_scanned = &scanned;
  params.codes_summed = &summed;
  int64_t passes = 0;
  std::vector<std::vector<IvfPqNeighbor>> results;
  const double qps = QueriesPerSecond(
      data.queries.rows,
      [&] {
        if (batch1) {
          results.resize(static_cast<size_t>(data.queries.rows));
          for (int64_t q = 0; q < data.queries.rows; ++q) {
            auto r = index.Search(
                absl::MakeConstSpan(data.queries.values).subspan(q * d, static_cast<size_t>(d)),
                params);
            if (!r.ok()) Die(r.status().ToString());
            results[q] = std::move((*r)[0]);
          }
        } else {
          auto r = index.Search(data.queries.values, params);
          if (!r.ok()) Die(r.status().ToString());
          results = std::move(*r);
        }
        ++passes;
      },
      min_seconds);
  const IvfPqStats stats = index.Stats();
  return {name,
          Measure(data, Labels(results)),
          qps,
          static_cast<double>(scanned.load()) / static_cast<double>(passes * data.queries.rows),
          static_cast<double>(stats.bytes_per_vector - static_cast<int64_t>(sizeof(uint64_t)) -
                              stats.refine_code_size),
          !index.fast_scan() && stats.nbits == 8 && scanned.load() > 0
              ? static_cast<double>(summed.load()) / static_cast<double>(scanned.load())
              : -1.0};
}

// Codes FAISS scans per query at nprobe: the sizes of the lists its quantizer probes.
double FaissCodesPerQuery(const Dataset& data, const faiss::IndexIVF& ivf, int64_t nprobe) {
  const int64_t nq = data.queries.rows;
  std::vector<faiss::Index::idx_t> lists(static_cast<size_t>(nq * nprobe));
  std::vector<float> dist(lists.size());
  ivf.quantizer->search(nq, data.queries.values.data(), nprobe, dist.data(), lists.data());
  int64_t codes = 0;
  for (faiss::Index::idx_t l : lists) {
    if (l >= 0) codes += static_cast<int64_t>(ivf.invlists->list_size(l));
  }
  return static_cast<double>(codes) / static_cast<double>(nq);
}

// FAISS at nprobe with `threads`; with refine > 1, `refined` (an IndexRefineFlat around ivf)
// searches with k_factor refine.
Row RunFaiss(const Dataset& data, faiss::IndexIVF& ivf, faiss::IndexRefine* refined,
             const std::string& name, int64_t nprobe, int64_t refine, int threads,
             double min_seconds = 0.5) {
  const int64_t nq = data.queries.rows;
  omp_set_num_threads(threads);
  ivf.nprobe = static_cast<size_t>(nprobe);
  faiss::Index* index = &ivf;
  if (refine > 1) {
    refined->k_factor = static_cast<float>(refine);
    index = refined;
  }
  std::vector<faiss::Index::idx_t> labels(static_cast<size_t>(nq * kK));
  std::vector<float> distances(labels.size());
  const double qps = QueriesPerSecond(
      nq,
      [&] { index->search(nq, data.queries.values.data(), kK, distances.data(), labels.data()); },
      min_seconds);
  const Recall recall = Measure(data, std::vector<int64_t>(labels.begin(), labels.end()));
  const double codes = FaissCodesPerQuery(data, ivf, nprobe);
  // Cross-check with FAISS's own count where it keeps one (IndexIVFPQ; fast-scan leaves it 0).
  faiss::indexIVF_stats.reset();
  ivf.search(nq, data.queries.values.data(), kK, distances.data(), labels.data());
  const double ndis = static_cast<double>(faiss::indexIVF_stats.ndis) / static_cast<double>(nq);
  if (ndis > 0 && std::abs(ndis - codes) > 1e-3 * codes) {
    std::printf("  (%s: indexIVF_stats.ndis %.1f codes/q, list sizes %.1f)\n", name.c_str(), ndis,
                codes);
  }
  return {name, recall, qps, codes, static_cast<double>(ivf.code_size)};
}

void RunDataset(const Dataset& data, int threads) {
  const int64_t n = data.base.rows;
  const int64_t d = data.base.dim;
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

  faiss::IndexRefineFlat peer_refined(&peer, data.base.values.data());
  for (int64_t nprobe : kNprobes) {
    const std::string head = absl::StrFormat("%-12s thr %d nprobe %2d", data.name, threads, nprobe);
    const Row faiss_row = RunFaiss(data, peer, nullptr, "FAISS IVFPQ", nprobe, 1, threads);
    // The 8-bit scan with each kernel this CPU runs (the best first), then refine with the best.
    std::vector<Row> rows;
    const pq8::Kernel best = pq8::ActiveKernel();
    for (pq8::Kernel k : {pq8::Kernel::kAvx512Vbmi, pq8::Kernel::kScalar}) {
      if (!pq8::SetKernel(k)) continue;
      rows.push_back(RunQuantd(data, ours, absl::StrCat("quantd 8-bit ", pq8::KernelName(k)),
                               nprobe, 1, threads));
    }
    pq8::SetKernel(best);
    rows.push_back(RunQuantd(data, ours, absl::StrCat("quantd 8-bit refine ", kRefine), nprobe,
                             kRefine, threads));
    rows.push_back(faiss_row);
    rows.push_back(RunFaiss(data, peer, &peer_refined,
                            absl::StrCat("FAISS IVFPQ + RefineFlat ", kRefine), nprobe, kRefine,
                            threads));
    for (const Row& r : rows) PrintRow(head, r, faiss_row.qps, threads);
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
  for (fastscan::Kernel k : {fastscan::Kernel::kAvx512, fastscan::Kernel::kAvx2,
                             fastscan::Kernel::kHighway, fastscan::Kernel::kScalar}) {
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

// The 8-bit scan kernels alone, at M 8-bit sub-quantizers (M bytes a code): k = 10 over
// 2^20 codes in lists of 1024 (16 MB at M 16: the lists stream from memory as in an index), and
// over one list of 4096 codes scanned 256 times (in cache: the kernel's own speed). The codes are
// uniform and the tables squares of normals (L2-like), so the 10-best threshold leaves a thin
// tail: the share of float sums says how many codes the SIMD bound let through. Best of 5.
void Kernel8Only(int64_t m) {
  std::mt19937_64 rng(kSeed);
  std::vector<float> table(static_cast<size_t>(m * 256));
  std::normal_distribution<float> normal(0, 1);
  for (float& v : table) {
    const float x = normal(rng);
    v = x * x;
  }
  struct Shape {
    const char* name;
    int64_t list;    // codes a list
    int64_t lists;   // distinct lists
    int64_t passes;  // scans of each list
  };
  for (const Shape& shape :
       {Shape{"from memory", 1024, 1024, 1}, Shape{"in cache", 4096, 1, 256}}) {
    const int64_t n = shape.list * shape.lists;
    std::vector<uint8_t> codes(static_cast<size_t>(n * m));
    for (uint8_t& b : codes) b = static_cast<uint8_t>(rng());
    std::vector<uint64_t> ids(static_cast<size_t>(n));
    std::iota(ids.begin(), ids.end(), 0);
    for (pq8::Kernel k : {pq8::Kernel::kAvx512Vbmi, pq8::Kernel::kScalar}) {
      if (!pq8::KernelSupported(k)) continue;
      double best = std::numeric_limits<double>::infinity();
      pq8::ScanCounts counts;
      pq8::Scratch scratch;
      for (int pass = 0; pass < 5; ++pass) {
        counts = {};
        TopK top(10, n);
        const auto start = Clock::now();
        for (int64_t p = 0; p < shape.passes; ++p) {
          for (int64_t l = 0; l < shape.lists; ++l) {
            const int64_t first = l * shape.list;
            pq8::ScanWith(k, codes.data() + first * m, ids.data() + first, shape.list, m,
                          table.data(), 0.0f, top, scratch, &counts);
          }
        }
        best = std::min(best, SecondsSince(start));
      }
      const double scanned = static_cast<double>(n * shape.passes);
      std::printf(
          "kernel only  M%lld x 8 bit, %lld lists of %lld codes %s, k 10: %-12s %.3f ns/code, "
          "float sums %.2f%%\n",
          static_cast<long long>(m), static_cast<long long>(shape.lists),
          static_cast<long long>(shape.list), shape.name, pq8::KernelName(k), best * 1e9 / scanned,
          100.0 * (scanned - static_cast<double>(counts.filtered - counts.rescored)) / scanned);
    }
  }
  std::fflush(stdout);
}

// Fast-scan comparison (--fastscan); the models are trained once, searched with each thread
// count.
void RunFastScan(const Dataset& data, const std::vector<int>& thread_counts) {
  const int64_t n = data.base.rows;
  const int64_t d = data.base.dim;
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
  options.refine_codes = RefineCodes::kSq8;  // used by the SQ8 refine rows only
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
  options.refine_codes = RefineCodes::kNone;
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

  faiss::IndexRefineFlat refined_res(&peer_res, data.base.values.data());
  faiss::IndexRefineFlat refined_raw(&peer_raw, data.base.values.data());
  std::vector<fastscan::Kernel> kernels;
  for (fastscan::Kernel k : {fastscan::Kernel::kAvx512, fastscan::Kernel::kAvx2,
                             fastscan::Kernel::kHighway, fastscan::Kernel::kScalar}) {
    if (fastscan::KernelSupported(k)) kernels.push_back(k);
  }
  const fastscan::Kernel best = fastscan::ActiveKernel();
  for (int threads : thread_counts) {
    for (int64_t nprobe : kNprobes) {
      const std::string head =
          absl::StrFormat("%-8s thr %d nprobe %2d", data.name, threads, nprobe);
      std::vector<Row> rows;
      rows.push_back(
          RunFaiss(data, peer_res, nullptr, "FAISS IVFPQFastScan by_residual", nprobe, 1, threads));
      rows.push_back(
          RunFaiss(data, peer_raw, nullptr, "FAISS IVFPQFastScan raw", nprobe, 1, threads));
      rows.push_back(RunFaiss(data, peer_res, &refined_res,
                              absl::StrCat("FAISS IVFPQFastScan by_res + RefineFlat ", kRefine),
                              nprobe, kRefine, threads));
      rows.push_back(RunFaiss(data, peer_raw, &refined_raw,
                              absl::StrCat("FAISS IVFPQFastScan raw + RefineFlat ", kRefine),
                              nprobe, kRefine, threads));
      for (fastscan::Kernel k : kernels) {
        if (k == fastscan::Kernel::kScalar && nprobe > 16) continue;  // slow, and only a check
        fastscan::SetKernel(k);
        rows.push_back(RunQuantd(data, fast,
                                 absl::StrCat("quantd fast-scan ", fastscan::KernelName(k),
                                              k == best ? " (chosen)" : ""),
                                 nprobe, 1, threads));
      }
      fastscan::SetKernel(best);
      rows.push_back(RunQuantd(data, fast, absl::StrCat("quantd fast-scan refine ", kRefine),
                               nprobe, kRefine, threads, 0.5, false, /*exact=*/true));
      rows.push_back(RunQuantd(data, fast, absl::StrCat("quantd fast-scan SQ8 refine ", kRefine),
                               nprobe, kRefine, threads));
      if (threads == 1) {  // one Search call per query: the serving case
        rows.push_back(RunQuantd(
            data, fast, absl::StrCat("quantd fast-scan ", fastscan::KernelName(best), " batch 1"),
            nprobe, 1, threads, 0.5, /*batch1=*/true));
      }
      if (nprobe <= 16) {
        rows.push_back(RunQuantd(data, plain, "quantd plain 4-bit scan", nprobe, 1, threads));
      }
      // Same lists: FAISS's codes per query (list sizes) must be quantd's codes_scanned.
      if (std::abs(rows[0].codes_per_query - rows[4].codes_per_query) > 0.5) {
        std::printf("  (codes/q differ: FAISS %.1f, quantd %.1f)\n", rows[0].codes_per_query,
                    rows[4].codes_per_query);
      }
      for (const Row& r : rows) PrintRow(head, r, rows[0].qps, threads);
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
      static_cast<double>(n * (after.bytes_per_vector - 8 - after.refine_code_size)) / 1e6,
      before.memory_bytes / 1e6, after.memory_bytes / 1e6);
}

// --frontier: the systems swept, one line each. quantd lines with the same nbits and `tune`
// share one trained index, FAISS lines of the same kind one FAISS index; every FAISS index
// uses quantd's coarse centroids (its IndexFlatL2 quantizer holds them, so it is not
// re-trained), so all systems probe the same lists. nbits 8: the data set's M; nbits 4: the
// fast-scan layout at M = d / 4 (quantd's PQ on 4096 training rows, as FAISS's 256 x 16).
// refine: sweep refine factors kFrontierRefine (quantd: its SQ8 refine codes when the
// configuration keeps them, else exact distances to the in-memory base rows; FAISS:
// IndexRefineFlat's k_factor), else no refine. A new quantd configuration is one
// more line with its own `tune` (a function setting IvfPqOptions fields).
enum class Lib { kQuantd, kFaissIvfPq, kFaissFastScan };
struct FrontierConfig {
  const char* name;
  Lib lib;
  int nbits;
  bool refine;
  bool by_residual;             // FAISS fast-scan only
  void (*tune)(IvfPqOptions*);  // quantd only; null: none
  // FAISS only, with refine: IndexRefine over an 8-bit IndexScalarQuantizer (d bytes a
  // vector, as quantd's SQ8 refine codes) instead of IndexRefineFlat (the float vectors).
  bool sq8 = false;
};
void FastScanLayout(IvfPqOptions* options) { options->fast_scan = true; }
void FastScanSq8(IvfPqOptions* options) {
  options->fast_scan = true;
  options->refine_codes = RefineCodes::kSq8;
}
constexpr FrontierConfig kFrontier[] = {
    {"quantd 8-bit", Lib::kQuantd, 8, false, true, nullptr},
    {"quantd 8-bit + refine", Lib::kQuantd, 8, true, true, nullptr},
    {"quantd fast-scan", Lib::kQuantd, 4, false, true, FastScanLayout},
    {"quantd fast-scan + refine", Lib::kQuantd, 4, true, true, FastScanLayout},
    {"quantd fast-scan + SQ8 refine", Lib::kQuantd, 4, true, true, FastScanSq8},
    {"FAISS IVFPQ", Lib::kFaissIvfPq, 8, false, true, nullptr},
    {"FAISS IVFPQ + RefineFlat", Lib::kFaissIvfPq, 8, true, true, nullptr},
    {"FAISS IVFPQ + Refine SQ8", Lib::kFaissIvfPq, 8, true, true, nullptr, true},
    {"FAISS IVFPQFastScan by_res", Lib::kFaissFastScan, 4, false, true, nullptr},
    {"FAISS IVFPQFastScan by_res + RefineFlat", Lib::kFaissFastScan, 4, true, true, nullptr},
    {"FAISS IVFPQFastScan by_res + Refine SQ8", Lib::kFaissFastScan, 4, true, true, nullptr, true},
    {"FAISS IVFPQFastScan raw", Lib::kFaissFastScan, 4, false, false, nullptr},
    {"FAISS IVFPQFastScan raw + RefineFlat", Lib::kFaissFastScan, 4, true, false, nullptr},
};
constexpr int64_t kFrontierNprobes[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
constexpr int64_t kFrontierRefine[] = {2, 4, 8, 16, 32, 64};
constexpr double kLevels[] = {0.8, 0.9, 0.95};

// Per system, nprobe in kFrontierNprobes (up to nlist) and refine factor: R@10 and q/s (one
// line each, with ns/code and the memory floor); a sweep over nprobe stops at the first nprobe
// reaching R@10 >= 0.95 (a larger one scans more and is slower). Then per recall level the
// best q/s of each system reaching it, its configuration, and quantd's ratio to the best FAISS
// system at that level.
void RunFrontier(const Dataset& data, int threads) {
  const int64_t n = data.base.rows;
  const int64_t d = data.base.dim;
  std::vector<uint64_t> ids(static_cast<size_t>(n));
  std::iota(ids.begin(), ids.end(), 0);
  const auto start = Clock::now();
  const double cpu_start = bench::ProcessCpuSeconds();

  std::map<std::pair<int, void (*)(IvfPqOptions*)>, std::unique_ptr<IvfPqIndex>> ours;
  std::unique_ptr<faiss::IndexFlatL2> quantizer;
  std::map<std::pair<Lib, bool>, std::unique_ptr<faiss::IndexIVF>> peers;
  // FAISS refine indexes by (lib, by_residual, sq8).
  std::map<std::tuple<Lib, bool, bool>, std::unique_ptr<faiss::IndexRefine>> refined;
  std::unique_ptr<faiss::IndexScalarQuantizer> sq8;  // the SQ8 refine peers' codes
  omp_set_num_threads(2);
  for (const FrontierConfig& c : kFrontier) {
    if (c.lib != Lib::kQuantd || ours.contains({c.nbits, c.tune})) continue;
    IvfPqOptions options;
    options.nlist = data.nlist;
    options.m = c.nbits == 4 ? d / 4 : data.m;
    options.nbits = c.nbits;
    if (c.nbits == 4) options.pq_training_rows = 4096;
    options.seed = kSeed;
    options.num_threads = 2;
    if (c.tune != nullptr) c.tune(&options);
    std::fprintf(stderr, "  %s frontier: training %s ...\n", data.name.c_str(), c.name);
    auto trained = IvfPqIndex::Train(data.base.values.data(), n, d, options);
    if (!trained.ok()) Die(trained.status().ToString());
    auto index = std::make_unique<IvfPqIndex>(std::move(*trained));
    if (auto st = index->Add(ids, data.base.values); !st.ok()) Die(st.ToString());
    if (quantizer == nullptr) {
      quantizer = std::make_unique<faiss::IndexFlatL2>(d);
      quantizer->add(data.nlist, index->coarse_centroids().data());
    }
    ours[{c.nbits, c.tune}] = std::move(index);
  }
  if (quantizer == nullptr) Die("the frontier needs a quantd line (its coarse centroids)");
  for (const FrontierConfig& c : kFrontier) {
    if (c.lib == Lib::kQuantd || peers.contains({c.lib, c.by_residual})) continue;
    std::fprintf(stderr, "  %s frontier: training %s ...\n", data.name.c_str(), c.name);
    std::unique_ptr<faiss::IndexIVF> peer;
    if (c.lib == Lib::kFaissIvfPq) {
      auto pq = std::make_unique<faiss::IndexIVFPQ>(quantizer.get(), d, data.nlist, data.m, 8);
      pq->pq.cp.seed = static_cast<int>(kSeed) + 1;
      peer = std::move(pq);
    } else {
      auto fs =
          std::make_unique<faiss::IndexIVFPQFastScan>(quantizer.get(), d, data.nlist, d / 4, 4);
      fs->by_residual = c.by_residual;
      fs->pq.cp.seed = static_cast<int>(kSeed) + 1;
      peer = std::move(fs);
    }
    peer->verbose = false;
    peer->train(n, data.base.values.data());
    peer->add(n, data.base.values.data());
    refined[{c.lib, c.by_residual, false}] =
        std::make_unique<faiss::IndexRefineFlat>(peer.get(), data.base.values.data());
    peers[{c.lib, c.by_residual}] = std::move(peer);
  }
  for (const FrontierConfig& c : kFrontier) {
    if (!c.sq8) continue;
    if (sq8 == nullptr) {
      sq8 = std::make_unique<faiss::IndexScalarQuantizer>(d, faiss::ScalarQuantizer::QT_8bit);
      sq8->train(n, data.base.values.data());
      sq8->add(n, data.base.values.data());
    }
    refined[{c.lib, c.by_residual, true}] =
        std::make_unique<faiss::IndexRefine>(peers.at({c.lib, c.by_residual}).get(), sq8.get());
  }
  std::printf("%s frontier, %d thread(s): built in %.0f s; sweeping nprobe %s refine {1 or %s}\n",
              data.name.c_str(), threads, SecondsSince(start), "{1, 2, 4, ..., nlist}",
              "2, 4, ..., 64");

  struct Best {
    double qps = 0;
    std::string config;
  };
  std::vector<std::array<Best, std::size(kLevels)>> best(std::size(kFrontier));
  const auto sweep_start = Clock::now();
  for (size_t s = 0; s < std::size(kFrontier); ++s) {
    const FrontierConfig& c = kFrontier[s];
    std::vector<int64_t> factors = {1};
    if (c.refine) factors.assign(std::begin(kFrontierRefine), std::end(kFrontierRefine));
    for (int64_t refine : factors) {
      double last = -1;
      for (int64_t nprobe : kFrontierNprobes) {
        if (nprobe > data.nlist) break;
        const std::string head =
            absl::StrFormat("%-8s thr %d nprobe %3d refine %d", data.name, threads, nprobe, refine);
        const Row r =
            c.lib == Lib::kQuantd
                ? RunQuantd(data, *ours.at({c.nbits, c.tune}), c.name, nprobe, refine, threads, 0.3)
                : RunFaiss(data, *peers.at({c.lib, c.by_residual}),
                           refined.at({c.lib, c.by_residual, c.sq8}).get(), c.name, nprobe, refine,
                           threads, 0.3);
        PrintRow(head, r, r.qps, threads);
        std::fflush(stdout);
        for (size_t l = 0; l < std::size(kLevels); ++l) {
          if (r.recall.at10 >= kLevels[l] && r.qps > best[s][l].qps) {
            best[s][l] = {r.qps, absl::StrFormat("nprobe %d refine %d R@10 %.3f", nprobe, refine,
                                                 r.recall.at10)};
          }
        }
        // Past the top level, or saturated (doubling nprobe gained < 0.002), a larger nprobe
        // only scans more.
        if (r.recall.at10 >= kLevels[std::size(kLevels) - 1] || r.recall.at10 < last + 0.002) {
          break;
        }
        last = r.recall.at10;
      }
    }
  }
  std::printf("%s frontier, %d thread(s): swept in %.0f s (process CPU %.0f s since the build)\n",
              data.name.c_str(), threads, SecondsSince(sweep_start),
              bench::ProcessCpuSeconds() - cpu_start);
  for (size_t l = 0; l < std::size(kLevels); ++l) {
    double faiss_best = 0;
    std::string faiss_name = "none";
    for (size_t s = 0; s < std::size(kFrontier); ++s) {
      if (kFrontier[s].lib != Lib::kQuantd && best[s][l].qps > faiss_best) {
        faiss_best = best[s][l].qps;
        faiss_name = kFrontier[s].name;
      }
    }
    std::printf("%s thr %d R@10 >= %.2f (best FAISS: %s, %.0f q/s)\n", data.name.c_str(), threads,
                kLevels[l], faiss_name.c_str(), faiss_best);
    for (size_t s = 0; s < std::size(kFrontier); ++s) {
      const Best& b = best[s][l];
      if (b.qps == 0) {
        std::printf("  %-42s not reached\n", kFrontier[s].name);
      } else if (kFrontier[s].lib == Lib::kQuantd && faiss_best > 0) {
        std::printf("  %-42s q/s %8.0f  %-34s vs best FAISS %5.2f\n", kFrontier[s].name, b.qps,
                    b.config.c_str(), b.qps / faiss_best);
      } else {
        std::printf("  %-42s q/s %8.0f  %s\n", kFrontier[s].name, b.qps, b.config.c_str());
      }
    }
  }
  std::fflush(stdout);
}

}  // namespace
}  // namespace quantd

int main(int argc, char** argv) {
  using namespace quantd;
  bool quick = false;
  bool fast_scan = false;
  bool frontier = false;
  int64_t max_queries = -1;  // --queries: the first N queries of Fashion-MNIST (-1: all 10000)
  std::vector<int> thread_counts = {1, 2};
  std::set<std::string> only;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--quick") {
      quick = true;
    } else if (arg == "--fastscan") {
      fast_scan = true;
    } else if (arg == "--frontier") {
      frontier = true;
    } else if (arg.rfind("--queries=", 0) == 0) {
      if (!absl::SimpleAtoi(arg.substr(10), &max_queries) || max_queries < 1) {
        Die("bad --queries value " + arg);
      }
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
      std::fprintf(
          stderr,
          "usage: %s [--quick] [--threads=1,2] [--seed=42] "
          "[--only=sift5k,movielens,fmnist,synth1m] [--fastscan | --frontier] [--queries=N]\n",
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
      "true top10| / 10; q/s of the fastest of 3 passes (fewer past 2 s) over the whole query "
      "batch\n\n",
      static_cast<long long>(kK), static_cast<unsigned long long>(kSeed));
  std::printf(
      "CPU: %s; kernels chosen at run time: fast-scan %s, 8-bit scan %s (hand-written, target "
      "attributes)\n\n",
      bench::CpuModel().c_str(), fastscan::KernelName(fastscan::ActiveKernel()),
      pq8::KernelName(pq8::ActiveKernel()));
  std::printf("CPU features (/proc/cpuinfo): %s; FAISS compiled with: %s\n",
              bench::CpuSimdFeatures().c_str(), faiss::get_compile_options().c_str());
  std::fflush(stdout);
  for (int threads : thread_counts) bandwidth[threads] = ReadBandwidth(threads);
  std::printf("streaming read bandwidth (sum of a 1 GiB uint64 buffer, best of 5):");
  for (const auto& [threads, bytes_per_s] : bandwidth) {
    std::printf(" %d thread(s) %.1f GB/s", threads, bytes_per_s / 1e9);
  }
  std::printf("\n\n");
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
    Dataset s{
        "fmnist",
        Load(std::string(QUANTD_FASHION_MNIST_DIR) + "/train-images-idx3-ubyte.gz"),
        bench::LoadMatrix(std::string(QUANTD_FASHION_MNIST_DIR) + "/t10k-images-idx3-ubyte.gz",
                          max_queries),
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
  if (fast_scan) {
    KernelOnly(32);
    Kernel8Only(16);  // the same 16 bytes a code as M32 x 4 bit
    Kernel8Only(32);
  }
  for (const Dataset& data : sets) {
    if (frontier) {
      for (int threads : thread_counts) RunFrontier(data, threads);
      std::printf("\n");
      continue;
    }
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
