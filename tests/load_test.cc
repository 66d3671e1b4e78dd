// Load on the real binary over loopback: Search and Encode clients on several threads while a
// writer upserts and deletes and a training job runs, for a fixed number of requests. Only
// documented errors may occur (RESOURCE_EXHAUSTED when the serving queue is full, ABORTED when
// a retraining commits under an Encode by id), the results afterwards agree with the writes, and
// the server's memory stays bounded. Prints queries/s and p99 latency per RPC.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "gtest/gtest.h"
#include "io/vector_file.h"
#include "tests/process_support.h"
#include "tests/test_support.h"

namespace quantd {
namespace {

using ::quantd::testing::DataFile;
using ::quantd::testing::ServerProcess;
using ::quantd::testing::TempDir;
using Clock = std::chrono::steady_clock;

constexpr int64_t kInitialRows = 10000;  // ids 0 .. 9999 before the load
constexpr int64_t kDeleted = 2000;       // ids 0 .. 1999 deleted during the load
constexpr int kSearchThreads = 3;
constexpr int kEncodeThreads = 2;
constexpr int kRequestsPerThread = 1500;

// Resident and peak memory of a process, in bytes (from /proc/<pid>/status).
std::pair<double, double> Memory(pid_t pid) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  double rss = 0, hwm = 0;
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) rss = std::stod(line.substr(6)) * 1024;
    if (line.rfind("VmHWM:", 0) == 0) hwm = std::stod(line.substr(6)) * 1024;
  }
  return {rss, hwm};
}

// Latencies of one RPC kind and the codes seen.
struct Record {
  std::mutex mu;
  std::vector<double> seconds;
  std::map<int, int> codes;
  void Add(double s, grpc::StatusCode code) {
    std::lock_guard lock(mu);
    seconds.push_back(s);
    ++codes[static_cast<int>(code)];
  }
  double Percentile(double p) {
    std::lock_guard lock(mu);
    if (seconds.empty()) return 0;
    std::vector<double> sorted = seconds;
    std::sort(sorted.begin(), sorted.end());
    return sorted[std::min(sorted.size() - 1, static_cast<size_t>(p * sorted.size()))];
  }
};

v1::Job Wait(v1::Quantd::Stub& stub, const std::string& id) {
  v1::Job job;
  for (int i = 0; i < 1200; ++i) {
    job = testing::GetJob(stub, id);
    if (job.state() != v1::JOB_STATE_PENDING && job.state() != v1::JOB_STATE_RUNNING) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return job;
}

std::string StartTokenizerJob(v1::Quantd::Stub& stub, int iterations, uint64_t seed,
                              bool balanced) {
  grpc::ClientContext context;
  v1::TrainTokenizerRequest request;
  request.set_collection("load");
  for (int l = 0; l < 3; ++l) request.add_codebook_sizes(balanced ? 256 : 64);
  request.set_balanced(balanced);
  request.set_max_iterations(iterations);
  request.set_seed(seed);
  v1::Job job;
  const grpc::Status status = stub.TrainTokenizer(&context, request, &job);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return job.id();
}

// Creates collection `name` (L2) and uploads the first `rows` rows of the Beauty embeddings.
void CreateAndUpload(v1::Quantd::Stub& stub, const std::string& name, uint32_t dim, int64_t rows) {
  ASSERT_NO_FATAL_FAILURE(testing::CreateCollection(stub, name, dim));
  auto reader = VectorReader::Open(DataFile("sasrec/Beauty-32d-sasrec.npy"));
  ASSERT_TRUE(reader.ok()) << reader.status();
  UploadOptions upload;
  upload.max_rows = rows;
  ASSERT_TRUE(UploadVectors(stub, name, **reader, upload).ok());
}

// Trains the IVF-PQ index of `name` with defaults and waits for the job.
void TrainIndex(v1::Quantd::Stub& stub, const std::string& name) {
  grpc::ClientContext context;
  v1::TrainIndexRequest request;
  request.set_collection(name);
  v1::Job job;
  ASSERT_TRUE(stub.TrainIndex(&context, request, &job).ok());
  ASSERT_EQ(Wait(stub, job.id()).state(), v1::JOB_STATE_SUCCEEDED);
}

TEST(LoadTest, ServingUnderWritesAndTrainingStaysCorrectAndBounded) {
  auto data = ReadMatrix(DataFile("sasrec/Beauty-32d-sasrec.npy"));
  ASSERT_TRUE(data.ok()) << data.status();
  const int64_t d = data->dim;
  const int64_t total_rows = data->rows;  // 12101: ids kInitialRows.. arrive during the load
  ASSERT_GT(total_rows, kInitialRows + 1000);
  auto row = [&](int64_t i) { return data->values.data() + i * d; };

  TempDir dir;
  ServerProcess server(dir.path() + "/data", dir.path() + "/quantd.log",
                       {"--search_threads=2", "--search_queue=64", "--sync=true"});
  const std::string address = server.WaitReady();
  ASSERT_FALSE(address.empty());
  auto channel = Connect(address);
  auto stub = v1::Quantd::NewStub(channel);
  ASSERT_NO_FATAL_FAILURE(CreateAndUpload(*stub, "load", static_cast<uint32_t>(d), kInitialRows));
  ASSERT_EQ(Wait(*stub, StartTokenizerJob(*stub, 10, 1, false)).state(), v1::JOB_STATE_SUCCEEDED);
  ASSERT_NO_FATAL_FAILURE(TrainIndex(*stub, "load"));
  const auto [rss_before, hwm_before] = Memory(server.pid());

  // A retraining runs during the load (its commit swaps the tokenizer under the readers).
  const std::string retrain = StartTokenizerJob(*stub, 25, 2, /*balanced=*/true);
  const int64_t load_start_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                    std::chrono::system_clock::now().time_since_epoch())
                                    .count();

  Record search, encode_ids, encode_vectors, writes;
  std::atomic<int> unexpected = 0;
  std::mutex unexpected_mu;
  std::string first_unexpected;
  auto check = [&](const char* what, const grpc::Status& status, bool aborted_ok) {
    const grpc::StatusCode code = status.error_code();
    if (status.ok() || code == grpc::StatusCode::RESOURCE_EXHAUSTED ||
        (aborted_ok && code == grpc::StatusCode::ABORTED)) {
      return;
    }
    if (unexpected++ == 0) {
      std::lock_guard lock(unexpected_mu);
      first_unexpected = absl::StrCat(what, ": ", code, " ", status.error_message());
    }
  };

  const auto load_start = Clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < kSearchThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(100 + t);
      auto client = v1::Quantd::NewStub(channel);
      for (int i = 0; i < kRequestsPerThread; ++i) {
        const int64_t q = std::uniform_int_distribution<int64_t>(0, total_rows - 1)(rng);
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
        v1::SearchRequest request;
        request.set_collection("load");
        request.mutable_queries()->Add(row(q), row(q) + d);
        request.set_k(10);
        v1::SearchResponse response;
        const auto start = Clock::now();
        const grpc::Status status = client->Search(&context, request, &response);
        search.Add(std::chrono::duration<double>(Clock::now() - start).count(),
                   status.error_code());
        check("Search", status, false);
        if (status.ok() && response.results_size() != 1) ++unexpected;
      }
    });
  }
  for (int t = 0; t < kEncodeThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(200 + t);
      auto client = v1::Quantd::NewStub(channel);
      for (int i = 0; i < kRequestsPerThread; ++i) {
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
        v1::EncodeRequest request;
        request.set_collection("load");
        // Ids that stay stored throughout, or a vector.
        const int64_t r = std::uniform_int_distribution<int64_t>(kDeleted, kInitialRows - 1)(rng);
        const bool by_id = t == 0;
        if (by_id) {
          request.add_ids(static_cast<uint64_t>(r));
        } else {
          request.mutable_vectors()->Add(row(r), row(r) + d);
        }
        v1::EncodeResponse response;
        const auto start = Clock::now();
        const grpc::Status status = client->Encode(&context, request, &response);
        (by_id ? encode_ids : encode_vectors)
            .Add(std::chrono::duration<double>(Clock::now() - start).count(), status.error_code());
        check("Encode", status, by_id);
        if (status.ok() && (by_id ? response.sids_size() : response.encoded_size()) != 1) {
          ++unexpected;
        }
      }
    });
  }
  // The writer: the remaining rows in batches of 50, and deletes of ids 0 .. kDeleted - 1 in
  // batches of 25, interleaved.
  threads.emplace_back([&] {
    auto client = v1::Quantd::NewStub(channel);
    int64_t next_row = kInitialRows, next_delete = 0;
    while (next_row < total_rows || next_delete < kDeleted) {
      if (next_row < total_rows) {
        const int64_t end = std::min(total_rows, next_row + 50);
        grpc::ClientContext context;
        auto stream = client->Upsert(&context);
        v1::UpsertRequest request;
        request.set_collection("load");
        for (int64_t i = next_row; i < end; ++i) request.add_ids(static_cast<uint64_t>(i));
        request.mutable_vectors()->Add(row(next_row), row(end));
        const auto start = Clock::now();
        stream->Write(request);
        stream->WritesDone();
        v1::UpsertResponse ack;
        while (stream->Read(&ack)) {
        }
        const grpc::Status status = stream->Finish();
        writes.Add(std::chrono::duration<double>(Clock::now() - start).count(),
                   status.error_code());
        if (!status.ok()) check("Upsert", status, false);
        next_row = end;
      }
      if (next_delete < kDeleted) {
        grpc::ClientContext context;
        v1::DeleteItemsRequest request;
        request.set_collection("load");
        for (int64_t i = next_delete; i < std::min(kDeleted, next_delete + 25); ++i) {
          request.add_ids(static_cast<uint64_t>(i));
        }
        v1::DeleteItemsResponse response;
        const auto start = Clock::now();
        const grpc::Status status = client->DeleteItems(&context, request, &response);
        writes.Add(std::chrono::duration<double>(Clock::now() - start).count(),
                   status.error_code());
        if (!status.ok()) check("DeleteItems", status, false);
        next_delete = std::min(kDeleted, next_delete + 25);
      }
    }
  });
  for (std::thread& t : threads) t.join();
  const double load_seconds = std::chrono::duration<double>(Clock::now() - load_start).count();
  EXPECT_EQ(unexpected, 0) << first_unexpected;
  const v1::Job retrained = Wait(*stub, retrain);
  EXPECT_EQ(retrained.state(), v1::JOB_STATE_SUCCEEDED);
  // The retraining overlapped the load (else this test would not exercise it).
  EXPECT_LT(retrained.start_time_ms(), load_start_ms + static_cast<int64_t>(load_seconds * 1e3));
  EXPECT_GT(retrained.end_time_ms(), load_start_ms);
  std::printf("retraining ran %.2f s, from %+.2f s of the load\n", retrained.elapsed_seconds(),
              (retrained.start_time_ms() - load_start_ms) / 1e3);

  const auto [rss_after, hwm_after] = Memory(server.pid());
  std::printf("load: %.2f s; server RSS %.0f -> %.0f MiB (peak %.0f MiB)\n", load_seconds,
              rss_before / (1 << 20), rss_after / (1 << 20), hwm_after / (1 << 20));
  for (auto& [name, record] : std::map<std::string, Record*>{{"Search", &search},
                                                             {"Encode(id)", &encode_ids},
                                                             {"Encode(vector)", &encode_vectors},
                                                             {"Upsert/Delete", &writes}}) {
    std::printf("  %-15s %5zu calls  %7.0f calls/s  p50 %6.2f ms  p99 %6.2f ms  codes:",
                name.c_str(), record->seconds.size(), record->seconds.size() / load_seconds,
                record->Percentile(0.5) * 1e3, record->Percentile(0.99) * 1e3);
    for (const auto& [code, count] : record->codes) std::printf(" %d x%d", code, count);
    std::printf("\n");
  }
  // Memory: a load of a few thousand small calls must not grow the server by more than a
  // generous bound (the whole data set is 1.5 MB; a leak per call would show).
  EXPECT_LT(rss_after - rss_before, 256.0 * (1 << 20));

  // The writes are all there.
  {
    grpc::ClientContext context;
    v1::DescribeCollectionRequest request;
    request.set_name("load");
    v1::DescribeCollectionResponse response;
    ASSERT_TRUE(stub->DescribeCollection(&context, request, &response).ok());
    EXPECT_EQ(response.collection().item_count(), static_cast<uint64_t>(total_rows - kDeleted));
  }
  {
    grpc::ClientContext context;
    v1::GetItemsRequest request;
    request.set_collection("load");
    for (int64_t i = 0; i < kDeleted; i += 97) request.add_ids(static_cast<uint64_t>(i));
    for (int64_t i = kInitialRows; i < total_rows; i += 13)
      request.add_ids(static_cast<uint64_t>(i));
    v1::GetItemsResponse response;
    ASSERT_TRUE(stub->GetItems(&context, request, &response).ok());
    for (uint64_t id : response.missing_ids()) EXPECT_LT(id, static_cast<uint64_t>(kDeleted));
    for (int i = 0; i < response.ids_size(); ++i) {
      const uint64_t id = response.ids(i);
      ASSERT_GE(id, static_cast<uint64_t>(kInitialRows)) << "deleted id " << id << " present";
      EXPECT_TRUE(std::equal(row(id), row(id) + d, response.vectors().begin() + i * d)) << id;
    }
  }
  // Items written during the load have SIDs (same WriteBatch) and are found by Search.
  {
    grpc::ClientContext context;
    v1::EncodeRequest request;
    request.set_collection("load");
    for (int64_t i = kInitialRows; i < total_rows; i += 7)
      request.add_ids(static_cast<uint64_t>(i));
    v1::EncodeResponse response;
    ASSERT_TRUE(stub->Encode(&context, request, &response).ok());
    EXPECT_EQ(response.missing_ids_size(), 0);
    EXPECT_EQ(response.sids_size(), request.ids_size());
  }
  int found = 0, asked = 0;
  for (int64_t i = kInitialRows; i < total_rows; i += 21, ++asked) {
    grpc::ClientContext context;
    v1::SearchRequest request;
    request.set_collection("load");
    request.mutable_queries()->Add(row(i), row(i) + d);
    request.set_k(10);
    request.set_nprobe(1 << 20);  // clamped to nlist: every list
    request.set_refine(50);
    v1::SearchResponse response;
    ASSERT_TRUE(stub->Search(&context, request, &response).ok());
    const auto& ids = response.results(0).ids();
    found += std::find(ids.begin(), ids.end(), static_cast<uint64_t>(i)) != ids.end();
  }
  // Exact re-ranking of 500 candidates over every list: an item's own vector is at distance 0.
  EXPECT_GE(found, asked * 95 / 100) << found << " of " << asked;
}

// Overload: one worker and no queue, eight clients sending heavy searches at once. Some calls
// are refused at once with RESOURCE_EXHAUSTED naming the setting; the rest are served; nothing
// else happens and the server stays up.
TEST(LoadTest, FullServingQueueRefusesWithResourceExhausted) {
  auto data = ReadMatrix(DataFile("sasrec/Beauty-32d-sasrec.npy"));
  ASSERT_TRUE(data.ok()) << data.status();
  const int64_t d = data->dim;
  TempDir dir;
  ServerProcess server(dir.path() + "/data", dir.path() + "/quantd.log",
                       {"--search_threads=1", "--search_queue=0", "--sync=false"});
  const std::string address = server.WaitReady();
  ASSERT_FALSE(address.empty());
  auto channel = Connect(address);
  auto stub = v1::Quantd::NewStub(channel);
  ASSERT_NO_FATAL_FAILURE(CreateAndUpload(*stub, "busy", static_cast<uint32_t>(d), -1));
  ASSERT_NO_FATAL_FAILURE(TrainIndex(*stub, "busy"));
  std::atomic<int> ok = 0, refused = 0, other = 0;
  std::string refusal;
  std::mutex mu;
  std::vector<std::thread> clients;
  for (int t = 0; t < 8; ++t) {
    clients.emplace_back([&] {
      auto client = v1::Quantd::NewStub(channel);
      v1::SearchRequest request;
      request.set_collection("busy");
      request.mutable_queries()->Add(data->values.begin(), data->values.begin() + 500 * d);
      request.set_k(100);
      request.set_nprobe(64);
      for (int i = 0; i < 20; ++i) {
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
        v1::SearchResponse response;
        const grpc::Status status = client->Search(&context, request, &response);
        if (status.ok()) {
          ++ok;
        } else if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
          ++refused;
          std::lock_guard lock(mu);
          refusal = status.error_message();
        } else {
          ++other;
        }
      }
    });
  }
  for (std::thread& t : clients) t.join();
  std::printf("8 clients x 20 searches of 500 queries: %d served, %d refused\n", ok.load(),
              refused.load());
  EXPECT_GT(ok, 0);
  EXPECT_GT(refused, 0);
  EXPECT_EQ(other, 0);
  EXPECT_NE(refusal.find("--search_queue"), std::string::npos) << refusal;
  grpc::ClientContext context;
  v1::ListCollectionsResponse list;
  EXPECT_TRUE(stub->ListCollections(&context, v1::ListCollectionsRequest(), &list).ok());
}

}  // namespace
}  // namespace quantd
