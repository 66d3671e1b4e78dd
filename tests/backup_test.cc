// Backups through gRPC, in-process: a backup taken while another client keeps upserting holds
// every batch acknowledged before the call and each batch all or nothing; a server started on
// the backup serves the same tokenizer and index answers as the original; a training job that
// was running is reported FAILED there; bad and existing names change nothing.
#include <sys/types.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "client/client.h"
#include "gtest/gtest.h"
#include "io/vector_file.h"
#include "server/server.h"
#include "tests/server_fixture.h"
#include "tests/test_support.h"

namespace quantd {
namespace {

namespace fs = std::filesystem;
using ::quantd::testing::DataFile;
using ::quantd::testing::Entries;
using ::quantd::testing::FashionMnistFile;

class BackupTest : public ::quantd::testing::InProcessServerTest {
 protected:
  std::string BackupDir() const { return dir_.path() + "/backups"; }

  static grpc::Status Backup(v1::Quantd::Stub& stub, const std::string& name,
                             v1::BackupResponse* response) {
    grpc::ClientContext context;
    v1::BackupRequest request;
    request.set_name(name);
    return stub.Backup(&context, request, response);
  }

  static v1::Job StartTokenizer(v1::Quantd::Stub& stub, const std::string& collection,
                                std::vector<uint32_t> levels, bool balanced, uint32_t iterations) {
    grpc::ClientContext context;
    v1::TrainTokenizerRequest request;
    request.set_collection(collection);
    request.mutable_codebook_sizes()->Add(levels.begin(), levels.end());
    request.set_balanced(balanced);
    request.set_seed(7);
    request.set_max_iterations(iterations);
    v1::Job job;
    const grpc::Status status = stub.TrainTokenizer(&context, request, &job);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return job;
  }

  v1::Job TrainIndex(const std::string& collection) {
    grpc::ClientContext context;
    v1::TrainIndexRequest request;
    request.set_collection(collection);
    request.set_seed(7);
    v1::Job job;
    const grpc::Status status = stub_->TrainIndex(&context, request, &job);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return WaitJob(job.id());
  }

  static v1::EncodeResponse Encode(v1::Quantd::Stub& stub, const std::string& collection,
                                   const std::vector<uint64_t>& ids,
                                   const std::vector<float>& vectors) {
    grpc::ClientContext context;
    v1::EncodeRequest request;
    request.set_collection(collection);
    request.mutable_ids()->Add(ids.begin(), ids.end());
    request.mutable_vectors()->Add(vectors.begin(), vectors.end());
    v1::EncodeResponse response;
    const grpc::Status status = stub.Encode(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  static v1::SearchResponse Search(v1::Quantd::Stub& stub, const std::string& collection,
                                   const std::vector<float>& queries) {
    grpc::ClientContext context;
    v1::SearchRequest request;
    request.set_collection(collection);
    request.mutable_queries()->Add(queries.begin(), queries.end());
    request.set_k(10);
    request.set_nprobe(8);
    v1::SearchResponse response;
    const grpc::Status status = stub.Search(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }
};

constexpr int kLiveDim = 8;
constexpr int kLiveBatchRows = 10;

TEST_F(BackupTest, BackupWhileUpsertingRestoresAcknowledgedBatchesAndModels) {
  const std::string beauty = DataFile("sasrec/Beauty-32d-sasrec.npy");
  CreateAndUpload("beauty", beauty, 12101);
  const v1::Job tokenizer = WaitJob(StartTokenizer(*stub_, "beauty", {16, 16}, false, 10).id());
  ASSERT_EQ(tokenizer.state(), v1::JOB_STATE_SUCCEEDED) << tokenizer.error();
  const v1::Job index = TrainIndex("beauty");
  ASSERT_EQ(index.state(), v1::JOB_STATE_SUCCEEDED) << index.error();

  auto matrix = ReadMatrix(beauty);
  ASSERT_TRUE(matrix.ok()) << matrix.status();
  std::vector<uint64_t> ids;
  for (uint64_t id = 0; id < 200; ++id) ids.push_back(id * 50);
  const std::vector<float> queries(matrix->values.begin() + 100 * 32,
                                   matrix->values.begin() + 150 * 32);
  const v1::EncodeResponse encoded = Encode(*stub_, "beauty", ids, queries);
  const v1::SearchResponse searched = Search(*stub_, "beauty", queries);
  ASSERT_EQ(encoded.sids_size(), 200);
  ASSERT_EQ(searched.results_size(), 50);

  {
    grpc::ClientContext context;
    v1::CreateCollectionRequest request;
    request.set_name("live");
    request.set_dimension(kLiveDim);
    request.set_metric(v1::METRIC_L2);
    v1::CreateCollectionResponse response;
    ASSERT_TRUE(stub_->CreateCollection(&context, request, &response).ok());
  }
  // A writer on its own connection: batch b holds ids b*10 .. b*10+9, every value b.
  std::atomic<int> acknowledged{0};
  std::atomic<bool> stop{false};
  std::atomic<bool> writer_done{false};
  std::thread writer([&] {
    auto stub = v1::Quantd::NewStub(Connect(server_->address()));
    grpc::ClientContext context;
    auto stream = stub->Upsert(&context);
    for (int b = 0; !stop.load() && b < 100000; ++b) {
      v1::UpsertRequest request;
      if (b == 0) request.set_collection("live");
      for (int i = 0; i < kLiveBatchRows; ++i) request.add_ids(b * kLiveBatchRows + i);
      for (int i = 0; i < kLiveBatchRows * kLiveDim; ++i) request.add_vectors(b);
      v1::UpsertResponse ack;
      if (!stream->Write(request) || !stream->Read(&ack)) break;
      acknowledged = b + 1;
    }
    stream->WritesDone();
    EXPECT_TRUE(stream->Finish().ok());
    writer_done = true;
  });
  // Waits (at most 20 s) until the writer has `batches` acknowledged or has ended.
  const auto wait_for = [&](int batches) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (acknowledged.load() < batches && !writer_done.load() &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  };
  wait_for(50);
  const int acknowledged_before = acknowledged.load();
  if (acknowledged_before < 50) {
    stop = true;
    writer.join();
    FAIL() << "the writer stopped after " << acknowledged_before << " batches";
  }
  v1::BackupResponse backup;
  const grpc::Status status = Backup(*stub_, "snap", &backup);
  const int acknowledged_after = acknowledged.load();
  // Let the writer go on a little after the backup, then stop it.
  wait_for(acknowledged_after + 20);
  stop = true;
  writer.join();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(backup.path(), BackupDir() + "/snap");
  EXPECT_GT(backup.bytes(), 12101u * 32 * 4);
  EXPECT_GT(backup.files(), 3u);
  EXPECT_GT(backup.seconds(), 0);
  EXPECT_GT(backup.sequence(), 0u);
  EXPECT_EQ(Entries(BackupDir()), std::vector<std::string>{"snap"});
  std::printf("backup of %d live batches in flight: %llu bytes, %llu files, %.3f s\n",
              acknowledged_before, static_cast<unsigned long long>(backup.bytes()),
              static_cast<unsigned long long>(backup.files()), backup.seconds());

  // A second server on the backup, beside the first one, which keeps serving.
  auto restored = QuantdServer::Start(ServerOptions::Embedded(backup.path(), false));
  ASSERT_TRUE(restored.ok()) << restored.status();
  auto restored_stub = v1::Quantd::NewStub(Connect((*restored)->address()));

  const int written = acknowledged.load();
  grpc::ClientContext context;
  v1::GetItemsRequest request;
  request.set_collection("live");
  for (int id = 0; id < written * kLiveBatchRows; ++id) request.add_ids(id);
  v1::GetItemsResponse items;
  ASSERT_TRUE(restored_stub->GetItems(&context, request, &items).ok());
  std::map<int, int> rows_per_batch;
  for (int i = 0; i < items.ids_size(); ++i) {
    const int batch = static_cast<int>(items.ids(i)) / kLiveBatchRows;
    ++rows_per_batch[batch];
    EXPECT_EQ(items.vectors(i * kLiveDim), static_cast<float>(batch));
  }
  for (int b = 0; b < acknowledged_before; ++b) {
    EXPECT_EQ(rows_per_batch[b], kLiveBatchRows) << "batch " << b << " acknowledged before";
  }
  int batches_in_backup = 0;
  for (const auto& [batch, rows] : rows_per_batch) {
    EXPECT_EQ(rows, kLiveBatchRows) << "batch " << batch << " is partly in the backup";
    ++batches_in_backup;
  }
  // Batches are contiguous (the writer waits for each acknowledgement) and end before the ones
  // acknowledged after the call returned.
  EXPECT_EQ(rows_per_batch.rbegin()->first + 1, batches_in_backup);
  EXPECT_LE(batches_in_backup, acknowledged_after + 1);

  const v1::EncodeResponse restored_encoded = Encode(*restored_stub, "beauty", ids, queries);
  ASSERT_EQ(restored_encoded.sids_size(), encoded.sids_size());
  EXPECT_EQ(restored_encoded.tokenizer_version(), encoded.tokenizer_version());
  for (int i = 0; i < encoded.sids_size(); ++i) {
    EXPECT_EQ(restored_encoded.ids(i), encoded.ids(i));
    EXPECT_EQ(restored_encoded.sids(i).tokens(), encoded.sids(i).tokens()) << "item " << ids[i];
  }
  ASSERT_EQ(restored_encoded.encoded_size(), encoded.encoded_size());
  for (int i = 0; i < encoded.encoded_size(); ++i) {
    EXPECT_EQ(restored_encoded.encoded(i).tokens(), encoded.encoded(i).tokens());
    EXPECT_EQ(restored_encoded.encoded(i).items_with_codes(),
              encoded.encoded(i).items_with_codes());
  }
  const v1::SearchResponse restored_searched = Search(*restored_stub, "beauty", queries);
  EXPECT_EQ(restored_searched.index_version(), searched.index_version());
  ASSERT_EQ(restored_searched.results_size(), searched.results_size());
  for (int q = 0; q < searched.results_size(); ++q) {
    EXPECT_EQ(
        std::vector<uint64_t>(restored_searched.results(q).ids().begin(),
                              restored_searched.results(q).ids().end()),
        std::vector<uint64_t>(searched.results(q).ids().begin(), searched.results(q).ids().end()))
        << "query " << q;
    EXPECT_EQ(std::vector<float>(restored_searched.results(q).distances().begin(),
                                 restored_searched.results(q).distances().end()),
              std::vector<float>(searched.results(q).distances().begin(),
                                 searched.results(q).distances().end()));
  }
  restored_stub.reset();
  (*restored)->Shutdown(std::chrono::seconds(5));
}

TEST_F(BackupTest, RunningTrainingJobIsReportedFailedOnTheRestoredServer) {
  CreateAndUpload("fmnist", FashionMnistFile("train-images-idx3-ubyte.gz"), 20000);
  const v1::Job first = WaitJob(StartTokenizer(*stub_, "fmnist", {8}, false, 5).id());
  ASSERT_EQ(first.state(), v1::JOB_STATE_SUCCEEDED) << first.error();
  const std::vector<uint64_t> ids = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  const v1::EncodeResponse before = Encode(*stub_, "fmnist", ids, {});

  // Balanced 3 x 256 on 20000 x 784 runs for seconds: the backup catches it running.
  const v1::Job second = StartTokenizer(*stub_, "fmnist", {256, 256, 256}, true, 50);
  for (int i = 0; i < 1000 && GetJob(second.id()).state() != v1::JOB_STATE_RUNNING; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(GetJob(second.id()).state(), v1::JOB_STATE_RUNNING);
  v1::BackupResponse backup;
  const grpc::Status status = Backup(*stub_, "during-training", &backup);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(GetJob(second.id()).state(), v1::JOB_STATE_RUNNING)
      << "the job ended before the backup did: the test needs a longer job";
  {
    grpc::ClientContext context;
    v1::CancelJobRequest request;
    request.set_id(second.id());
    v1::Job cancelled;
    EXPECT_TRUE(stub_->CancelJob(&context, request, &cancelled).ok());
  }

  auto restored = QuantdServer::Start(ServerOptions::Embedded(backup.path(), false));
  ASSERT_TRUE(restored.ok()) << restored.status();
  auto restored_stub = v1::Quantd::NewStub(Connect((*restored)->address()));
  grpc::ClientContext context;
  v1::GetJobRequest request;
  request.set_id(second.id());
  v1::Job job;
  ASSERT_TRUE(restored_stub->GetJob(&context, request, &job).ok());
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_NE(job.error().find("interrupted"), std::string::npos) << job.error();
  const v1::EncodeResponse after = Encode(*restored_stub, "fmnist", ids, {});
  EXPECT_EQ(after.tokenizer_version(), before.tokenizer_version());
  ASSERT_EQ(after.sids_size(), before.sids_size());
  for (int i = 0; i < before.sids_size(); ++i) {
    EXPECT_EQ(after.sids(i).tokens(), before.sids(i).tokens());
  }
  restored_stub.reset();
  (*restored)->Shutdown(std::chrono::seconds(5));
}

TEST_F(BackupTest, BadNamesAreInvalidArgumentAndWriteNothing) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "name is empty"},
      {".", "name '.'"},
      {"..", "name '..'"},
      {"a/b", "name 'a/b' is invalid at position 1"},
      {"../escape", "name '../escape' is invalid at position 2"},
      {std::string(200, 'x'), "has 200 characters, at most 128"},
      {"a b", "name 'a b' is invalid at position 1"},
      {"x.partial-1", "contains '.partial-'"},
  };
  for (const auto& [name, message] : cases) {
    v1::BackupResponse response;
    const grpc::Status status = Backup(*stub_, name, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << name;
    EXPECT_NE(status.error_message().find(message), std::string::npos)
        << name << ": " << status.error_message();
  }
  EXPECT_TRUE(Entries(BackupDir()).empty());
  EXPECT_FALSE(fs::exists(dir_.path() + "/escape"));
}

TEST_F(BackupTest, ExistingNameIsAlreadyExistsAndStalePartialsAreRemoved) {
  CreateAndUpload("sift", DataFile("sift5k/sift5k_base.fvecs"), 1000);
  v1::BackupResponse first;
  ASSERT_TRUE(Backup(*stub_, "nightly", &first).ok());
  const auto first_files = Entries(first.path());

  v1::BackupResponse again;
  const grpc::Status status = Backup(*stub_, "nightly", &again);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_NE(status.error_message().find(BackupDir() + "/nightly"), std::string::npos)
      << status.error_message();
  EXPECT_EQ(Entries(first.path()), first_files);

  // What a crash in the middle of a backup leaves: a partial directory (and RocksDB's .tmp).
  fs::create_directories(BackupDir() + "/weekly.partial-0badf00d/sub");
  fs::create_directories(BackupDir() + "/weekly.partial-12345678.tmp");
  ::quantd::testing::WriteFile(BackupDir() + "/weekly.partial-0badf00d/CURRENT", "junk");
  v1::BackupResponse weekly;
  const grpc::Status made = Backup(*stub_, "weekly", &weekly);
  ASSERT_TRUE(made.ok()) << made.error_message();
  EXPECT_EQ(Entries(BackupDir()), (std::vector<std::string>{"nightly", "weekly"}));

  auto restored = QuantdServer::Start(ServerOptions::Embedded(weekly.path(), false));
  ASSERT_TRUE(restored.ok()) << restored.status();
  auto restored_stub = v1::Quantd::NewStub(Connect((*restored)->address()));
  grpc::ClientContext context;
  v1::DescribeCollectionRequest request;
  request.set_name("sift");
  v1::DescribeCollectionResponse response;
  ASSERT_TRUE(restored_stub->DescribeCollection(&context, request, &response).ok());
  EXPECT_EQ(response.collection().item_count(), 1000u);
  restored_stub.reset();
  (*restored)->Shutdown(std::chrono::seconds(5));
}

TEST_F(BackupTest, ConcurrentBackupsRunOneAtATime) {
  CreateAndUpload("beauty", DataFile("sasrec/Beauty-32d-sasrec.npy"), 12101);
  constexpr int kCalls = 4;
  std::vector<grpc::Status> statuses(kCalls);
  std::vector<std::thread> threads;
  for (int i = 0; i < kCalls; ++i) {
    threads.emplace_back([&, i] {
      auto stub = v1::Quantd::NewStub(Connect(server_->address()));
      v1::BackupResponse response;
      statuses[i] = Backup(*stub, "c" + std::to_string(i), &response);
    });
  }
  for (std::thread& thread : threads) thread.join();
  std::vector<std::string> made;
  for (int i = 0; i < kCalls; ++i) {
    if (statuses[i].ok()) {
      made.push_back("c" + std::to_string(i));
    } else {
      EXPECT_EQ(statuses[i].error_code(), grpc::StatusCode::ABORTED);
      EXPECT_NE(statuses[i].error_message().find("another backup is running"), std::string::npos)
          << statuses[i].error_message();
    }
  }
  EXPECT_FALSE(made.empty());
  EXPECT_EQ(Entries(BackupDir()), made);  // a refused backup writes nothing
}

}  // namespace
}  // namespace quantd
