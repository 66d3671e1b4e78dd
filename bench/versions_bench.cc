// Tokenizer versions (issue #12) on a large collection, driven through Storage in-process (the
// server's own code path below gRPC), with the database fsyncing every write as the server does:
//
//   1. commit: two tokenizer versions made as the train_tokenizer job makes them (BeginVersion,
//      snapshot, RQ-KMeans 3 x 256 trained on a sample, every item encoded, suffixes carried
//      over, WriteVersionRows, CommitVersion; the second warm-started from the first) while a
//      writer thread upserts 16 changed items per batch at a set rate (or without pause): how
//      long each phase takes and the writer's batch latency (p50 / p99 / max) per phase: what
//      "a commit holds writes back" means for a client.
//   2. bytes: bytes at rest per item per kept version (the SID families after a compaction).
//   3. nextcodes: NextCodes latency by prefix length in-process (SidService) and over gRPC on
//      loopback (a server started on the same database), 20000 random prefixes of stored SIDs.
//
//   env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE build/bench/versions_bench [--items=N]
//       [--keep_db=DIR]     (leave the database in DIR, e.g. for quantctl export-trie)
//       [--writer_rate=R]   (changed items per second, default 2000; 0: back to back)
//
// Data: the 1M x 128 Gaussian mixture of ivfpq_bench (1000 centres, seed 42).
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "bench/bench_util.h"
#include "client/client.h"
#include "core/gemm.h"
#include "core/residual_quantizer.h"
#include "core/semantic_id.h"
#include "server/server.h"
#include "server/sid_service.h"
#include "server/storage.h"
#include "server/tokenizer.h"

namespace quantd {
namespace {

using bench::Clock;
using bench::Die;
using bench::SecondsSince;

constexpr uint64_t kSeed = 42;
constexpr int64_t kDim = 128;
constexpr int64_t kSample = 100000;
constexpr int64_t kWriterBatch = 16;

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[static_cast<size_t>(p * static_cast<double>(values.size() - 1))];
}

// A writer upserting kWriterBatch changed items per batch, back to back, recording each
// batch's latency with the time it ended.
class Writer {
 public:
  // rate: changed items per second, 0 for batches back to back.
  Writer(Storage* storage, const Matrix& data, double rate)
      : storage_(storage), data_(data), rate_(rate) {
    thread_ = std::thread([this] { Run(); });
  }
  ~Writer() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  // Latencies (seconds) of the batches that ended within [begin, end).
  std::vector<double> Between(Clock::time_point begin, Clock::time_point end) {
    std::lock_guard lock(mu_);
    std::vector<double> out;
    for (const auto& [when, latency] : samples_) {
      if (when >= begin && when < end) out.push_back(latency);
    }
    return out;
  }

 private:
  void Run() {
    std::mt19937_64 rng(kSeed + 7);
    const auto n = static_cast<uint64_t>(data_.rows);
    std::vector<uint64_t> ids(kWriterBatch);
    std::vector<float> vectors(static_cast<size_t>(kWriterBatch * kDim));
    std::normal_distribution<float> noise(0.0f, 0.1f);
    const auto begin = Clock::now();
    int64_t batches = 0;
    while (!stop_) {
      if (rate_ > 0) {
        const auto due =
            begin + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(
                        static_cast<double>(batches * kWriterBatch) / rate_));
        std::this_thread::sleep_until(due);
      }
      ++batches;
      for (int64_t i = 0; i < kWriterBatch; ++i) {
        ids[i] = rng() % n;
        for (int64_t j = 0; j < kDim; ++j) {
          vectors[i * kDim + j] = data_.values[ids[i] * kDim + j] + noise(rng);
        }
      }
      const auto start = Clock::now();
      auto written = storage_->items().Upsert("c", ids, vectors);
      if (!written.ok()) Die("writer: " + written.status().ToString());
      const auto end = Clock::now();
      std::lock_guard lock(mu_);
      samples_.emplace_back(end, std::chrono::duration<double>(end - start).count());
    }
  }

  Storage* storage_;
  const Matrix& data_;
  const double rate_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::vector<std::pair<Clock::time_point, double>> samples_;
  std::thread thread_;
};

void PrintPhase(const char* phase, double seconds, const std::vector<double>& latencies) {
  std::printf(
      "  %-34s %8.2f s   writer batches %6zu  p50 %7.2f ms  p99 %7.2f ms  max %7.2f ms\n", phase,
      seconds, latencies.size(), Percentile(latencies, 0.5) * 1e3,
      Percentile(latencies, 0.99) * 1e3,
      latencies.empty() ? 0.0 : *std::max_element(latencies.begin(), latencies.end()) * 1e3);
  std::fflush(stdout);
}

// One version made as the train_tokenizer job makes it, phases timed against the writer.
// `warm`: k-means starts from the parent version's codebooks (TrainTokenizer's warm_start).
void MakeVersion(Storage& storage, Writer& writer, uint64_t seed, bool warm) {
  const auto time = [&](const char* phase, auto&& body) {
    const auto start = Clock::now();
    body();
    PrintPhase(phase, SecondsSince(start), writer.Between(start, Clock::now()));
  };
  std::unique_ptr<Tokenizers::PendingVersion> pending;
  ItemSet items;
  RqTrainResult trained;
  std::vector<int32_t> codes;
  std::vector<uint32_t> suffixes;
  time("begin (write lock)", [&] {
    auto begun = storage.tokenizers().BeginVersion("c", 0, /*activates=*/true);
    if (!begun.ok()) Die(begun.status().ToString());
    pending = std::move(*begun);
  });
  time("load snapshot", [&] {
    auto loaded = storage.items().LoadItems("c");
    if (!loaded.ok()) Die(loaded.status().ToString());
    items = std::move(*loaded);
  });
  const int64_t n = static_cast<int64_t>(items.ids.size());
  time(warm ? "train 3x256 on 100k sample, warm" : "train 3x256 on 100k sample", [&] {
    RqOptions options;
    options.levels.resize(3);
    for (RqLevelOptions& level : options.levels) level.k = 256;
    options.kmeans.max_iterations = 10;
    options.kmeans.seed = seed;
    if (warm) {
      auto parent = storage.tokenizers().GetTokenizer("c", pending->parent_version());
      if (!parent.ok()) Die(parent.status().ToString());
      for (size_t l = 0; l < 3; ++l) {
        options.levels[l].initial_centroids =
            (*parent)->quantizer().codebook(static_cast<int64_t>(l));
      }
    }
    auto result = TrainResidualQuantizer(items.vectors.data(), std::min(n, kSample), kDim, options);
    if (!result.ok()) Die(result.status().ToString());
    trained = std::move(*result);
  });
  time("encode every item", [&] {
    codes.resize(static_cast<size_t>(n * 3));
    trained.quantizer.Encode(items.vectors.data(), n, codes.data());
  });
  time("suffixes (carry-over from parent)", [&] {
    std::vector<int64_t> preferred(static_cast<size_t>(n), -1);
    if (pending->parent_version() > 0) {
      auto parent = storage.tokenizers().GetTokenizer("c", pending->parent_version());
      if (!parent.ok()) Die(parent.status().ToString());
      auto sids = storage.tokenizers().ExportSids("c", **parent);
      if (!sids.ok()) Die(sids.status().ToString());
      for (size_t i = 0, j = 0; i < items.ids.size(); ++i) {
        while (j < sids->ids.size() && sids->ids[j] < items.ids[i]) ++j;
        if (j < sids->ids.size() && sids->ids[j] == items.ids[i] &&
            std::equal(codes.begin() + static_cast<int64_t>(i) * 3,
                       codes.begin() + static_cast<int64_t>(i + 1) * 3,
                       sids->codes.begin() + static_cast<int64_t>(j) * 3)) {
          preferred[i] = sids->suffixes[j];
        }
      }
    }
    int64_t carried = 0;
    suffixes = AssignSuffixes(codes.data(), n, 3, preferred, &carried);
    std::printf("  (%lld of %lld suffixes carried over)\n", static_cast<long long>(carried),
                static_cast<long long>(n));
  });
  time("write SIDs (5k-item batches)", [&] {
    auto status =
        storage.tokenizers().WriteVersionRows(*pending, 3, items.ids, codes, suffixes, {});
    if (!status.ok()) Die(status.ToString());
  });
  time("commit (write lock)", [&] {
    storage::TokenizerRecord record;
    record.set_dimension(kDim);
    for (int l = 0; l < 3; ++l) record.add_codebook_sizes(256);
    record.set_job_id(absl::StrCat("bench-", seed));
    Tokenizers::Activation activation;
    activation.decision = "activated (bench)";
    auto committed = storage.tokenizers().CommitVersion(
        *pending, std::move(record), TokenizerModel{std::move(trained.quantizer), nullptr}, items,
        codes, activation);
    if (!committed.ok()) Die(committed.status().ToString());
  });
}

// Bytes at rest of the SID families (codes and sids), after a full compaction of each.
double SidBytes(Storage& storage) {
  double bytes = 0;
  for (ColumnFamily family : {ColumnFamily::kCodes, ColumnFamily::kSids}) {
    if (auto status = storage.db().CompactFamily(family); !status.ok()) Die(status.ToString());
    bytes += static_cast<double>(storage.db().SstBytes(family));
  }
  return bytes;
}

}  // namespace
}  // namespace quantd

int main(int argc, char** argv) {
  using namespace quantd;
  int64_t items = 1000000;
  double rate = 2000;
  std::string keep_db;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--keep_db=", 0) == 0 && arg.size() > 10) {
      keep_db = arg.substr(10);
      continue;
    }
    if (arg.rfind("--items=", 0) == 0 && absl::SimpleAtoi(arg.substr(8), &items) && items > 0) {
      continue;
    }
    if (arg.rfind("--writer_rate=", 0) == 0 && absl::SimpleAtod(arg.substr(14), &rate) &&
        rate >= 0) {
      continue;
    }
    Die("unknown argument " + arg +
        " (usage: versions_bench [--items=N] [--writer_rate=R] [--keep_db=DIR])");
  }
  const auto start = Clock::now();
  std::printf("quantd versions_bench\nmachine: %u hardware threads, %s; GEMM kernel %s\n",
              std::thread::hardware_concurrency(), bench::CpuModel().c_str(),
              std::string(GemmKernelName(BestGemmKernel())).c_str());
  const Matrix data = bench::GaussianMixture(items, kDim, 1000, kSeed, kSeed + 1);
  // --keep_db: the database stays in DIR (a quantd --data_dir=DIR serves collection "c").
  const std::string dir = keep_db.empty() ? bench::FreshDir("versions") : keep_db;
  if (!keep_db.empty() && std::filesystem::exists(dir)) Die(dir + " exists");
  {
    auto storage = Storage::Open({.path = dir, .sync = true});
    if (!storage.ok()) Die(storage.status().ToString());
    if (auto created = (*storage)->collections().Create("c", kDim, Metric::kL2); !created.ok()) {
      Die(created.status().ToString());
    }
    const auto load = Clock::now();
    for (int64_t first = 0; first < items; first += 10000) {
      const int64_t rows = std::min<int64_t>(10000, items - first);
      std::vector<uint64_t> ids(static_cast<size_t>(rows));
      std::iota(ids.begin(), ids.end(), static_cast<uint64_t>(first));
      auto written = (*storage)->items().Upsert(
          "c", ids,
          absl::MakeConstSpan(data.values.data() + first * kDim, static_cast<size_t>(rows * kDim)));
      if (!written.ok()) Die(written.status().ToString());
    }
    std::printf("loaded %lld x %lld in %.1f s (fsync on)\n\n", static_cast<long long>(items),
                static_cast<long long>(kDim), SecondsSince(load));
    const double bytes_none = SidBytes(**storage);

    std::printf(
        "== 1. Making a version while a writer upserts %lld changed items per batch, %s ==\n",
        static_cast<long long>(kWriterBatch),
        rate > 0 ? absl::StrCat(rate, " items/s").c_str() : "back to back");
    Writer writer(storage->get(), data, rate);
    std::this_thread::sleep_for(std::chrono::seconds(2));
    const auto idle = Clock::now();
    std::this_thread::sleep_for(std::chrono::seconds(3));
    PrintPhase("writer alone, no tokenizer", 3, writer.Between(idle, Clock::now()));
    std::printf("version 1 (no version before):\n");
    MakeVersion(**storage, writer, kSeed, /*warm=*/false);
    const auto one = Clock::now();
    std::this_thread::sleep_for(std::chrono::seconds(3));
    PrintPhase("writer alone, 1 version kept", 3, writer.Between(one, Clock::now()));
    const double bytes_one = SidBytes(**storage);
    std::printf("version 2 (warm start from version 1's codebooks):\n");
    MakeVersion(**storage, writer, kSeed + 1, /*warm=*/true);
    const auto two = Clock::now();
    std::this_thread::sleep_for(std::chrono::seconds(3));
    PrintPhase("writer alone, 2 versions kept", 3, writer.Between(two, Clock::now()));
    writer.Stop();
    const double bytes_two = SidBytes(**storage);
    std::printf(
        "\n== 2. Bytes at rest of the SID families (codes, sids; SST after a full compaction) "
        "==\n  no tokenizer %.1f MB, 1 version %.1f MB, 2 versions %.1f MB: %.1f / %.1f bytes "
        "per item for versions 1 / 2 (rows before compression: codes 16 + 20, sids 24 + 8 = 68 "
        "bytes)\n",
        bytes_none / 1e6, bytes_one / 1e6, bytes_two / 1e6,
        (bytes_one - bytes_none) / static_cast<double>(items),
        (bytes_two - bytes_one) / static_cast<double>(items));

    auto kept = (*storage)->tokenizers().GetVersions("c");
    if (!kept.ok() || *kept == nullptr) Die("no versions");
    for (const auto& [version, tokenizer] : (*kept)->versions) {
      const SidLedger::Reader ledger(tokenizer->ledger());
      std::printf(
          "  in memory, version %u: ledger (counts per code, prefix and tuple) %.1f MB, "
          "%.1f bytes per item; codebooks and assignment tables %.1f MB\n",
          version, static_cast<double>(ledger.occupancy().memory_bytes()) / 1e6,
          static_cast<double>(ledger.occupancy().memory_bytes()) / static_cast<double>(items),
          static_cast<double>(tokenizer->assigner_bytes()) / 1e6);
    }

    std::printf("\n== 3. NextCodes, 20000 random prefixes of stored SIDs per length ==\n");
    SidService sids(storage->get());
    auto active = (*storage)->tokenizers().GetTokenizer("c");
    if (!active.ok()) Die(active.status().ToString());
    auto all = (*storage)->tokenizers().ExportSids("c", **active);
    if (!all.ok()) Die(all.status().ToString());
    std::mt19937_64 rng(kSeed);
    std::vector<std::vector<uint32_t>> prefixes[4];
    for (int length = 0; length <= 3; ++length) {
      for (int q = 0; q < 20000; ++q) {
        const size_t row = rng() % all->ids.size();
        prefixes[length].emplace_back(all->codes.begin() + static_cast<int64_t>(row) * 3,
                                      all->codes.begin() + static_cast<int64_t>(row) * 3 + length);
      }
      std::vector<double> latencies;
      int64_t answers = 0;
      for (const std::vector<uint32_t>& prefix : prefixes[length]) {
        const auto call = Clock::now();
        auto next = sids.NextCodes("c", prefix, "");
        latencies.push_back(SecondsSince(call));
        if (!next.ok()) Die(next.status().ToString());
        answers += static_cast<int64_t>(next->codes.size());
      }
      std::printf(
          "  in-process  prefix %d codes: p50 %7.1f us  p99 %7.1f us  (%.1f next tokens "
          "on average)\n",
          length, Percentile(latencies, 0.5) * 1e6, Percentile(latencies, 0.99) * 1e6,
          static_cast<double>(answers) / 20000.0);
    }
    storage->reset();
    auto server = QuantdServer::Start(ServerOptions::Embedded(dir, /*sync=*/true));
    if (!server.ok()) Die(server.status().ToString());
    auto stub = v1::Quantd::NewStub(Connect((*server)->address()));
    for (int length = 0; length <= 3; ++length) {
      std::vector<double> latencies;
      for (const std::vector<uint32_t>& prefix : prefixes[length]) {
        grpc::ClientContext context;
        v1::NextCodesRequest request;
        request.set_collection("c");
        request.mutable_prefix()->Add(prefix.begin(), prefix.end());
        v1::NextCodesResponse response;
        const auto call = Clock::now();
        const grpc::Status status = stub->NextCodes(&context, request, &response);
        latencies.push_back(SecondsSince(call));
        if (!status.ok()) Die(status.error_message());
      }
      std::printf("  gRPC        prefix %d codes: p50 %7.1f us  p99 %7.1f us\n", length,
                  Percentile(latencies, 0.5) * 1e6, Percentile(latencies, 0.99) * 1e6);
    }
    (*server)->Shutdown(std::chrono::seconds(5));
  }
  if (keep_db.empty()) std::filesystem::remove_all(dir);
  std::printf("\ntotal %.0f s\n", SecondsSince(start));
  return 0;
}
