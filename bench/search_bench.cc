// End-to-end Search: queries/s and p50 / p99 / p99.9 latency of the Search RPC through gRPC on
// loopback (one client, sequential requests, batch 1 and batch 100, k 10, nprobe 16), against
// an in-process QuantdServer whose index was trained by a TrainIndex job (the service's
// defaults, or the options given). The peer, measured in the same run, is the core index
// in-process (IvfPqIndex::Search on one thread, same parameters and seed, same queries and
// batches): the ratio gRPC / in-process is the cost of the service around the index. Recall@10
// of both against exact search is printed so that the two are seen to answer alike. Then
// filtered Search over gRPC at batch 1 (RunFiltered): allow 10% / 0.1% and deny 10% as packed
// ids and as bitmaps, next to the unfiltered request and to same-shaped requests whose deny-list
// holds only ids that are not stored (the cost of carrying and parsing the list alone).
//
//   build/bench/search_bench [--quick | --data=fmnist|sift5k|synth1m] [--rows=N] [--seconds=5]
//       [--nlist=N] [--m=N] [--nbits=4|8] [--sample=N]
//
// Data: Fashion-MNIST (60000 x 784 base, its 10000 test images as queries); --quick (or
// --data=sift5k) uses sift5k (5000 x 128, 100 queries) from QUANTD_TEST_DATA_DIR or
// ../shared/data; synth1m is ivfpq_bench's 1M x 128 Gaussian mixture (nlist 1024 unless
// given). --seconds: how long each batch-1 row runs (p99.9 needs thousands of calls).
// --nlist, --m, --nbits, --sample: TrainIndexRequest fields (0: the service's default).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/bench_util.h"
#include "client/client.h"
#include "core/ivf_pq.h"
#include "core/kmeans.h"
#include "grpcpp/grpcpp.h"
#include "io/vector_file.h"
#include "server/heap.h"
#include "server/server.h"

namespace quantd {
namespace {

using bench::Clock;
using bench::Die;
using bench::SecondsSince;

constexpr int64_t kK = 10;
constexpr int64_t kNprobe = 16;
constexpr uint64_t kSeed = 42;

void CheckRpc(const grpc::Status& status, const std::string& what) {
  if (!status.ok()) Die(absl::StrCat(what, ": ", status.error_message()));
}

// |found top kK ∩ true top kK| / kK, averaged over the queries that were answered (a timed run
// may not reach every query); found is nq x (<= kK) ids, answered[q] set for those.
double Recall(const std::vector<std::vector<uint64_t>>& found, const std::vector<char>& answered,
              const std::vector<int64_t>& truth) {
  double hits = 0;
  int64_t queries = 0;
  for (size_t q = 0; q < found.size(); ++q) {
    if (!answered[q]) continue;
    ++queries;
    const int64_t* t = truth.data() + q * kK;
    for (uint64_t id : found[q]) hits += std::find(t, t + kK, static_cast<int64_t>(id)) != t + kK;
  }
  return queries == 0 ? 0 : hits / (static_cast<double>(queries) * kK);
}

struct Timing {
  double queries_per_second = 0;
  double p50_ms = 0, p99_ms = 0, p999_ms = 0;
  int64_t calls = 0;
};

// Runs `call(batch number)` (one request of `batch` queries) for at least `seconds` and times
// each call.
template <typename Call>
Timing Time(int64_t batch, const Call& call, double seconds = 2.0) {
  std::vector<double> latencies;
  const double rate = bench::Throughput(batch, seconds, [&](int64_t i) {
    const auto start = Clock::now();
    call(i);
    latencies.push_back(SecondsSince(start));
  });
  latencies.erase(latencies.begin());  // the warm-up call
  std::sort(latencies.begin(), latencies.end());
  const auto pct = [&](double p) {
    return latencies[std::min(latencies.size() - 1,
                              static_cast<size_t>(p * static_cast<double>(latencies.size())))];
  };
  return {rate, pct(0.5) * 1e3, pct(0.99) * 1e3, pct(0.999) * 1e3,
          static_cast<int64_t>(latencies.size())};
}

// The index the TrainIndex job builds (0: the service's default) and the in-process peer copies.
// Fast-scan serving, when the service has it, is one more field here and in the request.
struct IndexChoice {
  uint32_t nlist = 0;
  uint32_t m = 0;
  uint32_t nbits = 0;
  uint64_t sample_size = 0;
};

// Batch-1 Search requests of one shape, each with the same filter: allow- or deny-list as
// packed ids or as a bitmap.
struct FilterCase {
  std::string name;
  bool deny = false;
  bool bitmap = false;
  std::vector<uint64_t> ids;  // ascending
  uint64_t base = 0;          // bitmap: its first id
};

void SetIdList(const FilterCase& f, v1::IdList* list) {
  list->Clear();
  if (!f.bitmap) {
    list->mutable_ids()->Add(f.ids.begin(), f.ids.end());
    return;
  }
  list->set_bitmap_base(f.base);
  std::string bits(f.ids.empty() ? 0 : (f.ids.back() - f.base) / 8 + 1, '\0');
  for (uint64_t id : f.ids) bits[(id - f.base) / 8] |= static_cast<char>(1 << ((id - f.base) % 8));
  list->set_bitmap(std::move(bits));
}

// Filtered Search through gRPC at batch 1, nprobe kNprobe: allow 10% and 0.1% and deny 10% as
// packed ids and as bitmaps, beside the unfiltered request and requests of the same shape whose
// filter restricts nothing (denying ids that are not stored: the same count of ids, or the same
// bitmap bytes, shifted past the stored ones), so the cost of sending and parsing the list is
// the difference to the unfiltered row and the cost of filtering the rest.
void RunFiltered(v1::Quantd::Stub& stub, const std::string& name, const Matrix& queries, int64_t n,
                 double seconds) {
  const int64_t d = queries.dim;
  std::mt19937_64 rng(kSeed);
  auto sample = [&](double fraction, uint64_t offset) {
    std::vector<uint64_t> ids;
    std::uniform_real_distribution<double> uniform(0, 1);
    for (int64_t i = 0; i < n; ++i) {
      if (uniform(rng) < fraction) ids.push_back(static_cast<uint64_t>(i) + offset);
    }
    return ids;
  };
  const uint64_t past = static_cast<uint64_t>(n);  // ids from here on are not stored
  const std::vector<uint64_t> ten = sample(0.1, 0), tenth = sample(0.001, 0);
  const std::vector<uint64_t> deny_ten = sample(0.1, 0);
  std::vector<uint64_t> ten_past;
  for (uint64_t id : ten) ten_past.push_back(id + past);
  std::vector<FilterCase> cases = {{"none", false, false, {}, 0}};
  for (bool bitmap : {false, true}) {
    const char* form = bitmap ? "bitmap" : "ids";
    cases.push_back({absl::StrCat("allow 10% ", form), false, bitmap, ten, 0});
    cases.push_back({absl::StrCat("allow 0.1% ", form), false, bitmap, tenth, 0});
    cases.push_back({absl::StrCat("deny 10% ", form), true, bitmap, deny_ten, 0});
    cases.push_back({absl::StrCat("deny 10% unstored ", form), true, bitmap, ten_past, past});
  }
  std::printf("\nfiltered Search over gRPC, batch 1, k %lld, nprobe %lld (%lld items):\n",
              static_cast<long long>(kK), static_cast<long long>(kNprobe),
              static_cast<long long>(n));
  std::printf("%-24s %10s %10s %9s %9s %9s %9s %12s\n", "filter", "ids", "req bytes", "q/s",
              "p50 ms", "p99 ms", "p99.9 ms", "p50-none ms");
  double none_p50 = 0;
  for (const FilterCase& f : cases) {
    v1::SearchRequest request;
    request.set_collection(name);
    request.set_k(kK);
    request.set_nprobe(kNprobe);
    if (f.name != "none") SetIdList(f, f.deny ? request.mutable_deny() : request.mutable_allow());
    v1::SearchResponse response;
    const Timing t = Time(
        1,
        [&](int64_t i) {
          const float* row = queries.values.data() + (i % queries.rows) * d;
          request.clear_queries();
          request.mutable_queries()->Add(row, row + d);
          grpc::ClientContext context;
          CheckRpc(stub.Search(&context, request, &response), "filtered Search");
          if (response.results_size() != 1) Die("filtered Search: wrong number of results");
        },
        seconds);
    if (f.name == "none") none_p50 = t.p50_ms;
    std::printf("%-24s %10zu %10zu %9.0f %9.3f %9.3f %9.3f %12.3f\n", f.name.c_str(), f.ids.size(),
                request.ByteSizeLong(), t.queries_per_second, t.p50_ms, t.p99_ms, t.p999_ms,
                t.p50_ms - none_p50);
    std::fflush(stdout);
  }
}

void Run(const std::string& name, const Matrix& base, const Matrix& queries,
         const IndexChoice& choice, double seconds) {
  const int64_t d = base.dim;
  std::fprintf(stderr, "  %s: exact ground truth ...\n", name.c_str());
  const std::vector<int64_t> truth = bench::ExactNeighbors(base, queries, kK);

  const std::string data_dir = bench::FreshDir("search");
  auto server = QuantdServer::Start(ServerOptions::Embedded(data_dir, /*sync=*/false));
  if (!server.ok()) Die(server.status().ToString());
  auto stub = v1::Quantd::NewStub(Connect((*server)->address()));
  {
    grpc::ClientContext context;
    v1::CreateCollectionRequest request;
    request.set_name(name);
    request.set_dimension(static_cast<uint32_t>(d));
    request.set_metric(v1::METRIC_L2);
    v1::CreateCollectionResponse response;
    CheckRpc(stub->CreateCollection(&context, request, &response), "CreateCollection");
  }
  std::fprintf(stderr, "  %s: uploading %lld rows ...\n", name.c_str(),
               static_cast<long long>(base.rows));
  const std::string npy = (std::filesystem::path(data_dir) / "base.npy").string();
  if (auto s = WriteNpy(npy, base.values.data(), base.rows, d); !s.ok()) Die(s.ToString());
  auto reader = VectorReader::Open(npy);
  if (!reader.ok()) Die(reader.status().ToString());
  if (auto uploaded = UploadVectors(*stub, name, **reader, {}); !uploaded.ok()) {
    Die(uploaded.status().ToString());
  }

  std::fprintf(stderr, "  %s: TrainIndex job (service defaults, seed %llu) ...\n", name.c_str(),
               static_cast<unsigned long long>(kSeed));
  v1::Job job;
  {
    grpc::ClientContext context;
    v1::TrainIndexRequest request;
    request.set_collection(name);
    request.set_seed(kSeed);
    request.set_nlist(choice.nlist);
    request.set_m(choice.m);
    request.set_nbits(choice.nbits);
    request.set_sample_size(choice.sample_size);
    CheckRpc(stub->TrainIndex(&context, request, &job), "TrainIndex");
  }
  const auto train_start = Clock::now();
  while (job.state() != v1::JOB_STATE_SUCCEEDED) {
    if (job.state() == v1::JOB_STATE_FAILED || job.state() == v1::JOB_STATE_CANCELLED) {
      Die(absl::StrCat("TrainIndex job ", job.id(), ": ", job.error()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    grpc::ClientContext context;
    v1::GetJobRequest request;
    request.set_id(job.id());
    CheckRpc(stub->GetJob(&context, request, &job), "GetJob");
  }
  const double train_seconds = SecondsSince(train_start);
  v1::IndexStats stats;
  {
    grpc::ClientContext context;
    v1::GetStatsRequest request;
    request.set_collection(name);
    v1::GetStatsResponse response;
    CheckRpc(stub->GetStats(&context, request, &response), "GetStats");
    stats = response.index();
  }
  std::printf(
      "%s: %lld x %lld, index nlist %llu M %u nbits %u trained by the job in %.1f s; "
      "k %lld, nprobe %lld\n",
      name.c_str(), static_cast<long long>(base.rows), static_cast<long long>(d),
      static_cast<unsigned long long>(stats.nlist()), stats.m(), stats.nbits(), train_seconds,
      static_cast<long long>(kK), static_cast<long long>(kNprobe));

  // The peer: the same index shape and layout trained in-process with the same seed.
  IvfPqOptions options;
  options.nlist = stats.nlist();
  options.m = stats.m();
  options.nbits = static_cast<int>(stats.nbits());
  // The layout and refine codes too: a plain 4-bit peer of a fast-scan index scans several
  // times slower and made the service look faster than its own index.
  options.fast_scan = stats.layout() == v1::INDEX_LAYOUT_FAST_SCAN;
  options.refine_codes =
      stats.refine_codes() == v1::REFINE_CODES_SQ8 ? RefineCodes::kSq8 : RefineCodes::kNone;
  options.seed = kSeed;
  auto index = IvfPqIndex::Train(base.values.data(), base.rows, d, options);
  if (!index.ok()) Die(index.status().ToString());
  std::vector<uint64_t> ids(static_cast<size_t>(base.rows));
  std::iota(ids.begin(), ids.end(), 0);
  if (auto s = index->Add(ids, base.values); !s.ok()) Die(s.ToString());

  std::printf("%-10s %6s | %10s %8s %8s %8s %7s | %10s %8s %8s %8s %7s | %9s\n", "data", "batch",
              "gRPC q/s", "p50 ms", "p99 ms", "p99.9 ms", "R@10", "core q/s", "p50 ms", "p99 ms",
              "p99.9 ms", "R@10", "gRPC/core");
  for (int64_t batch : {int64_t{1}, int64_t{100}}) {
    const int64_t batches = std::max<int64_t>(1, queries.rows / batch);
    // gRPC.
    std::vector<std::vector<uint64_t>> grpc_found(static_cast<size_t>(batches * batch));
    std::vector<char> grpc_answered(grpc_found.size(), 0);
    v1::SearchRequest request;
    request.set_collection(name);
    request.set_k(kK);
    request.set_nprobe(kNprobe);
    v1::SearchResponse response;
    const Timing remote = Time(
        batch,
        [&](int64_t i) {
          const int64_t b = i % batches;
          request.clear_queries();
          const float* rows = queries.values.data() + b * batch * d;
          request.mutable_queries()->Add(rows, rows + batch * d);
          grpc::ClientContext context;
          CheckRpc(stub->Search(&context, request, &response), "Search");
          if (response.results_size() != batch) Die("Search returned the wrong number of results");
          for (int64_t q = 0; q < batch; ++q) {
            const auto& r = response.results(static_cast<int>(q)).ids();
            grpc_found[b * batch + q].assign(r.begin(), r.end());
            grpc_answered[b * batch + q] = 1;
          }
        },
        batch == 1 ? seconds : 2.0);
    // In-process core index, one thread.
    std::vector<std::vector<uint64_t>> core_found(static_cast<size_t>(batches * batch));
    std::vector<char> core_answered(core_found.size(), 0);
    IvfPqSearchParams params;
    params.k = kK;
    params.nprobe = kNprobe;
    params.num_threads = 1;
    const Timing local = Time(
        batch,
        [&](int64_t i) {
          const int64_t b = i % batches;
          auto result = index->Search(
              absl::MakeConstSpan(queries.values.data() + b * batch * d, batch * d), params);
          if (!result.ok()) Die(result.status().ToString());
          for (int64_t q = 0; q < batch; ++q) {
            core_found[b * batch + q].clear();
            for (const IvfPqNeighbor& nb : (*result)[q]) core_found[b * batch + q].push_back(nb.id);
            core_answered[b * batch + q] = 1;
          }
        },
        batch == 1 ? seconds : 2.0);
    const std::vector<int64_t> used_truth(truth.begin(), truth.begin() + batches * batch * kK);
    std::printf(
        "%-10s %6lld | %10.0f %8.3f %8.3f %8.3f %7.4f | %10.0f %8.3f %8.3f %8.3f %7.4f | %8.2fx"
        "  (%lld and %lld calls)\n",
        name.c_str(), static_cast<long long>(batch), remote.queries_per_second, remote.p50_ms,
        remote.p99_ms, remote.p999_ms, Recall(grpc_found, grpc_answered, used_truth),
        local.queries_per_second, local.p50_ms, local.p99_ms, local.p999_ms,
        Recall(core_found, core_answered, used_truth),
        remote.queries_per_second / local.queries_per_second, static_cast<long long>(remote.calls),
        static_cast<long long>(local.calls));
    std::fflush(stdout);
  }
  RunFiltered(*stub, name, queries, base.rows, seconds);
  (*server)->Shutdown(std::chrono::milliseconds(1000));
  std::filesystem::remove_all(data_dir);
}

}  // namespace
}  // namespace quantd

int main(int argc, char** argv) {
  using namespace quantd;
  std::string data = "fmnist";
  int64_t rows = -1;
  double seconds = 5.0;
  IndexChoice choice;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto value = [&arg] {
      return std::strtoull(arg.c_str() + arg.find('=') + 1, nullptr, 10);
    };
    if (arg == "--quick") {
      data = "sift5k";
    } else if (arg.rfind("--data=", 0) == 0) {
      data = arg.substr(7);
    } else if (arg.rfind("--rows=", 0) == 0) {
      rows = static_cast<int64_t>(value());
    } else if (arg.rfind("--seconds=", 0) == 0) {
      seconds = std::strtod(arg.c_str() + 10, nullptr);
    } else if (arg.rfind("--nlist=", 0) == 0) {
      choice.nlist = static_cast<uint32_t>(value());
    } else if (arg.rfind("--m=", 0) == 0) {
      choice.m = static_cast<uint32_t>(value());
    } else if (arg.rfind("--nbits=", 0) == 0) {
      choice.nbits = static_cast<uint32_t>(value());
    } else if (arg.rfind("--sample=", 0) == 0) {
      choice.sample_size = value();
    } else {
      std::fprintf(stderr,
                   "usage: %s [--quick | --data=fmnist|sift5k|synth1m] [--rows=N] [--seconds=5] "
                   "[--nlist=N] [--m=N] [--nbits=4|8] [--sample=N]\n",
                   argv[0]);
      return 2;
    }
  }
  KeepFreedHeapForReuse();  // as the quantd server does
  std::printf(
      "quantd search_bench: %u hardware threads; one client, sequential requests; CPU %s (%s)\n",
      std::thread::hardware_concurrency(), bench::CpuModel().c_str(),
      bench::CpuSimdFeatures().c_str());
  if (data == "sift5k") {
    const std::string dir = bench::DataDir();
    Run(data, bench::LoadMatrix(dir + "/sift5k/sift5k_base.fvecs", rows),
        bench::LoadMatrix(dir + "/sift5k/sift5k_query.fvecs"), choice, seconds);
  } else if (data == "fmnist") {
    const std::string dir = QUANTD_FASHION_MNIST_DIR;
    Run(data, bench::LoadMatrix(dir + "/train-images-idx3-ubyte.gz", rows),
        bench::LoadMatrix(dir + "/t10k-images-idx3-ubyte.gz"), choice, seconds);
  } else if (data == "synth1m") {
    // ivfpq_bench's 1M x 128 mixture (same seeds), 1000 queries from the same centres; nlist
    // 1024 unless given (the default 4 sqrt(n) = 4000 trains for minutes on this machine).
    if (choice.nlist == 0) choice.nlist = 1024;
    Run(data, bench::GaussianMixture(rows < 0 ? 1000000 : rows, 128, 1000, kSeed, kSeed + 1),
        bench::GaussianMixture(1000, 128, 1000, kSeed, kSeed + 2), choice, seconds);
  } else {
    std::fprintf(stderr, "unknown --data=%s\n", data.c_str());
    return 2;
  }
  return 0;
}
