// Upsert throughput through gRPC on loopback, Fashion-MNIST train images (60000 x 784 float32),
// with sync off and on. The peer, measured in the same run, is the storage floor: the same
// batches written by ItemService::Upsert in-process, no gRPC. Every line reports rows/s and MB/s;
// the summary prints gRPC / direct ratios, and the cost of re-upserting unchanged rows against the
// first upload.
//
//   build/bench/upsert_bench [--benchmark_filter=...]
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>

#include "benchmark/benchmark.h"
#include "client/client.h"
#include "grpcpp/grpcpp.h"
#include "io/vector_file.h"
#include "server/server.h"
#include "server/storage.h"

namespace quantd {
namespace {

struct Dataset {
  std::string npy_path;  // float32 copy, so the client side is a memcpy, not gzip
  Matrix matrix;
};

const Dataset& FashionMnist() {
  static const Dataset* dataset = [] {
    auto* d = new Dataset();
    const std::string source =
        std::string(QUANTD_FASHION_MNIST_DIR) + "/train-images-idx3-ubyte.gz";
    auto matrix = ReadMatrix(source);
    if (!matrix.ok()) {
      std::fprintf(stderr, "cannot read %s: %s\n", source.c_str(),
                   matrix.status().ToString().c_str());
      std::exit(1);
    }
    d->matrix = std::move(*matrix);
    d->npy_path = (std::filesystem::temp_directory_path() / "quantd-bench-fmnist.npy").string();
    if (auto s = WriteNpy(d->npy_path, d->matrix.values.data(), d->matrix.rows, d->matrix.dim);
        !s.ok()) {
      std::fprintf(stderr, "%s\n", s.ToString().c_str());
      std::exit(1);
    }
    return d;
  }();
  return *dataset;
}

std::string FreshDir(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / ("quantd-bench-" + name);
  std::filesystem::remove_all(dir);
  return dir.string();
}

// Mean seconds per full upload, by benchmark name, for the ratio summary.
std::map<std::string, double>& Seconds() {
  static auto* seconds = new std::map<std::string, double>();
  return *seconds;
}

void SetCounters(benchmark::State& state, int64_t rows, int64_t dim) {
  state.counters["rows_per_s"] = benchmark::Counter(static_cast<double>(rows * state.iterations()),
                                                    benchmark::Counter::kIsRate);
  state.counters["MB_per_s"] = benchmark::Counter(
      static_cast<double>(rows * state.iterations()) * dim * 4 / 1e6, benchmark::Counter::kIsRate);
}

void BM_UpsertGrpc(benchmark::State& state) {
  const Dataset& data = FashionMnist();
  const bool sync = state.range(0) != 0;
  auto server = QuantdServer::Start(ServerOptions::Embedded(FreshDir("grpc"), sync));
  if (!server.ok()) {
    state.SkipWithError(server.status().ToString().c_str());
    return;
  }
  auto stub = v1::Quantd::NewStub(Connect((*server)->address()));
  int iteration = 0;
  double total_seconds = 0;
  for (auto _ : state) {
    state.PauseTiming();
    const std::string name = "fmnist" + std::to_string(iteration++);
    {
      grpc::ClientContext context;
      v1::CreateCollectionRequest request;
      request.set_name(name);
      request.set_dimension(static_cast<uint32_t>(data.matrix.dim));
      request.set_metric(v1::METRIC_L2);
      v1::CreateCollectionResponse response;
      stub->CreateCollection(&context, request, &response);
    }
    auto reader = VectorReader::Open(data.npy_path);
    state.ResumeTiming();
    auto result = UploadVectors(*stub, name, **reader, {});
    if (!result.ok() || result->rows != data.matrix.rows) {
      state.SkipWithError(result.ok() ? "short upload" : result.status().ToString().c_str());
      return;
    }
    total_seconds += result->seconds;
  }
  SetCounters(state, data.matrix.rows, data.matrix.dim);
  Seconds()[sync ? "grpc_sync" : "grpc_nosync"] = total_seconds / iteration;
}

void BM_UpsertDirect(benchmark::State& state) {
  const Dataset& data = FashionMnist();
  const bool sync = state.range(0) != 0;
  auto storage = Storage::Open({.path = FreshDir("direct"), .sync = sync});
  if (!storage.ok()) {
    state.SkipWithError(storage.status().ToString().c_str());
    return;
  }
  const int64_t d = data.matrix.dim;
  const int64_t batch = BatchRowsFor(d);  // the batches quantctl sends
  std::vector<uint64_t> ids(static_cast<size_t>(batch));
  int iteration = 0;
  double total_seconds = 0;
  for (auto _ : state) {
    state.PauseTiming();
    const std::string name = "fmnist" + std::to_string(iteration++);
    (*storage)->collections().Create(name, d, Metric::kL2).IgnoreError();
    state.ResumeTiming();
    const auto start = std::chrono::steady_clock::now();
    for (int64_t row = 0; row < data.matrix.rows; row += batch) {
      const int64_t n = std::min(batch, data.matrix.rows - row);
      for (int64_t i = 0; i < n; ++i) ids[i] = static_cast<uint64_t>(row + i);
      auto result = (*storage)->items().Upsert(
          name, absl::MakeConstSpan(ids.data(), static_cast<size_t>(n)),
          absl::MakeConstSpan(data.matrix.values.data() + row * d, static_cast<size_t>(n * d)));
      if (!result.ok()) {
        state.SkipWithError(result.status().ToString().c_str());
        return;
      }
    }
    total_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  SetCounters(state, data.matrix.rows, d);
  Seconds()[sync ? "direct_sync" : "direct_nosync"] = total_seconds / iteration;
}

// Re-upserting every row unchanged (sync on): each batch is compared with the stored vectors and
// nothing is written (an unchanged item keeps its vector, SID and index entry). Timed against the
// first, writing upload of the same batches in the same run.
void BM_UpsertUnchanged(benchmark::State& state) {
  const Dataset& data = FashionMnist();
  auto storage = Storage::Open({.path = FreshDir("unchanged"), .sync = true});
  if (!storage.ok()) {
    state.SkipWithError(storage.status().ToString().c_str());
    return;
  }
  const int64_t d = data.matrix.dim;
  const int64_t batch = BatchRowsFor(d);
  std::vector<uint64_t> ids(static_cast<size_t>(batch));
  (*storage)->collections().Create("fmnist", d, Metric::kL2).IgnoreError();
  const auto upload = [&]() -> absl::StatusOr<uint64_t> {
    uint64_t inserted = 0;
    for (int64_t row = 0; row < data.matrix.rows; row += batch) {
      const int64_t n = std::min(batch, data.matrix.rows - row);
      for (int64_t i = 0; i < n; ++i) ids[i] = static_cast<uint64_t>(row + i);
      auto result = (*storage)->items().Upsert(
          "fmnist", absl::MakeConstSpan(ids.data(), static_cast<size_t>(n)),
          absl::MakeConstSpan(data.matrix.values.data() + row * d, static_cast<size_t>(n * d)));
      if (!result.ok()) return result.status();
      inserted += result->inserted;
    }
    return inserted;
  };
  const auto start = std::chrono::steady_clock::now();
  if (auto first = upload(); !first.ok() || *first != static_cast<uint64_t>(data.matrix.rows)) {
    state.SkipWithError("first upload failed");
    return;
  }
  Seconds()["unchanged_first"] =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  int iteration = 0;
  double total_seconds = 0;
  for (auto _ : state) {
    const auto again = std::chrono::steady_clock::now();
    auto inserted = upload();
    if (!inserted.ok() || *inserted != 0) {
      state.SkipWithError("re-upsert inserted rows");
      return;
    }
    total_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - again).count();
    ++iteration;
  }
  SetCounters(state, data.matrix.rows, d);
  Seconds()["unchanged_again"] = total_seconds / iteration;
}
BENCHMARK(BM_UpsertUnchanged)->Iterations(3)->UseRealTime()->Unit(benchmark::kMillisecond);

// Both variants: sync off and on, three whole uploads each, wall-clock time.
void SyncOffAndOn(benchmark::internal::Benchmark* b) {
  b->ArgName("sync")->Arg(0)->Arg(1)->Iterations(3)->UseRealTime()->Unit(benchmark::kMillisecond);
}
BENCHMARK(BM_UpsertDirect)->Apply(SyncOffAndOn);
BENCHMARK(BM_UpsertGrpc)->Apply(SyncOffAndOn);

}  // namespace
}  // namespace quantd

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  const auto& seconds = quantd::Seconds();
  const auto& data = quantd::FashionMnist();
  const double mb = static_cast<double>(data.matrix.rows) * data.matrix.dim * 4 / 1e6;
  std::printf("\nFashion-MNIST upsert, %lld x %lld float32 (%.1f MB), batches of %lld rows\n",
              static_cast<long long>(data.matrix.rows), static_cast<long long>(data.matrix.dim), mb,
              static_cast<long long>(quantd::BatchRowsFor(data.matrix.dim)));
  std::printf("%-6s %14s %10s %14s %10s %18s\n", "sync", "gRPC rows/s", "gRPC MB/s",
              "direct rows/s", "direct MB/s", "ratio gRPC/direct");
  for (const char* mode : {"nosync", "sync"}) {
    const std::string grpc_key = std::string("grpc_") + mode;
    const std::string direct_key = std::string("direct_") + mode;
    if (!seconds.contains(grpc_key) || !seconds.contains(direct_key)) continue;
    const double g = seconds.at(grpc_key), d = seconds.at(direct_key);
    std::printf("%-6s %14.0f %10.1f %14.0f %10.1f %18.2f\n",
                std::string(mode) == "sync" ? "on" : "off", data.matrix.rows / g, mb / g,
                data.matrix.rows / d, mb / d, d / g);
  }
  if (seconds.contains("unchanged_first") && seconds.contains("unchanged_again")) {
    const double first = seconds.at("unchanged_first"), again = seconds.at("unchanged_again");
    std::printf(
        "re-upsert of unchanged rows (sync on, in-process): %.0f rows/s vs %.0f rows/s for the "
        "first upload: %.2fx faster, nothing written\n",
        data.matrix.rows / again, data.matrix.rows / first, first / again);
  }
  std::filesystem::remove(data.npy_path);
  return 0;
}
