// End-to-end Search: queries/s and p50 / p99 latency of the Search RPC through gRPC on loopback
// (one client, sequential requests, batch 1 and batch 100, k 10, nprobe 16), against an
// in-process QuantdServer whose index was trained by a TrainIndex job with the service's
// defaults. The peer, measured in the same run, is the core index in-process (IvfPqIndex::Search
// on one thread, same parameters and seed, same queries and batches): the ratio gRPC / in-process
// is the cost of the service around the index. Recall@10 of both against exact search is printed
// so that the two are seen to answer alike.
//
//   build/bench/search_bench [--quick]
//
// Data: Fashion-MNIST (60000 x 784 base, its 10000 test images as queries); --quick uses sift5k
// (5000 x 128, 100 queries) from QUANTD_TEST_DATA_DIR or ../shared/data.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <numeric>
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
  double p50_ms = 0, p99_ms = 0;
};

// Runs `call(batch number)` (one request of `batch` queries) for at least two seconds and times
// each call.
template <typename Call>
Timing Time(int64_t batch, const Call& call) {
  std::vector<double> latencies;
  const double rate = bench::Throughput(batch, 2.0, [&](int64_t i) {
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
  return {rate, pct(0.5) * 1e3, pct(0.99) * 1e3};
}

void Run(const std::string& name, const Matrix& base, const Matrix& queries) {
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

  // The peer: the same index shape trained in-process with the same seed.
  IvfPqOptions options;
  options.nlist = stats.nlist();
  options.m = stats.m();
  options.nbits = static_cast<int>(stats.nbits());
  options.seed = kSeed;
  auto index = IvfPqIndex::Train(base.values.data(), base.rows, d, options);
  if (!index.ok()) Die(index.status().ToString());
  std::vector<uint64_t> ids(static_cast<size_t>(base.rows));
  std::iota(ids.begin(), ids.end(), 0);
  if (auto s = index->Add(ids, base.values); !s.ok()) Die(s.ToString());

  std::printf("%-10s %6s | %12s %9s %9s %9s | %12s %9s %9s %9s | %10s\n", "data", "batch",
              "gRPC q/s", "p50 ms", "p99 ms", "R@10", "core q/s", "p50 ms", "p99 ms", "R@10",
              "gRPC/core");
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
    const Timing remote = Time(batch, [&](int64_t i) {
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
    });
    // In-process core index, one thread.
    std::vector<std::vector<uint64_t>> core_found(static_cast<size_t>(batches * batch));
    std::vector<char> core_answered(core_found.size(), 0);
    IvfPqSearchParams params;
    params.k = kK;
    params.nprobe = kNprobe;
    params.num_threads = 1;
    const Timing local = Time(batch, [&](int64_t i) {
      const int64_t b = i % batches;
      auto result = index->Search(
          absl::MakeConstSpan(queries.values.data() + b * batch * d, batch * d), params);
      if (!result.ok()) Die(result.status().ToString());
      for (int64_t q = 0; q < batch; ++q) {
        core_found[b * batch + q].clear();
        for (const IvfPqNeighbor& nb : (*result)[q]) core_found[b * batch + q].push_back(nb.id);
        core_answered[b * batch + q] = 1;
      }
    });
    const std::vector<int64_t> used_truth(truth.begin(), truth.begin() + batches * batch * kK);
    std::printf("%-10s %6lld | %12.0f %9.3f %9.3f %9.4f | %12.0f %9.3f %9.3f %9.4f | %9.2fx\n",
                name.c_str(), static_cast<long long>(batch), remote.queries_per_second,
                remote.p50_ms, remote.p99_ms, Recall(grpc_found, grpc_answered, used_truth),
                local.queries_per_second, local.p50_ms, local.p99_ms,
                Recall(core_found, core_answered, used_truth),
                remote.queries_per_second / local.queries_per_second);
    std::fflush(stdout);
  }
  (*server)->Shutdown(std::chrono::milliseconds(1000));
  std::filesystem::remove_all(data_dir);
}

}  // namespace
}  // namespace quantd

int main(int argc, char** argv) {
  using namespace quantd;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--quick") {
      quick = true;
    } else {
      std::fprintf(stderr, "usage: %s [--quick]\n", argv[0]);
      return 2;
    }
  }
  KeepFreedHeapForReuse();  // as the quantd server does
  std::printf("quantd search_bench: %u hardware threads; one client, sequential requests\n",
              std::thread::hardware_concurrency());
  if (quick) {
    const std::string dir = bench::DataDir();
    Run("sift5k", bench::LoadMatrix(dir + "/sift5k/sift5k_base.fvecs"),
        bench::LoadMatrix(dir + "/sift5k/sift5k_query.fvecs"));
  } else {
    const std::string dir = QUANTD_FASHION_MNIST_DIR;
    Run("fmnist", bench::LoadMatrix(dir + "/train-images-idx3-ubyte.gz"),
        bench::LoadMatrix(dir + "/t10k-images-idx3-ubyte.gz"));
  }
  return 0;
}
