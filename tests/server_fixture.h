// A test fixture running an in-process QuantdServer on a fresh embedded database, with a stub
// connected to it; Restart() reopens the same data directory.
#ifndef QUANTD_TESTS_SERVER_FIXTURE_H_
#define QUANTD_TESTS_SERVER_FIXTURE_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "client/client.h"
#include "gtest/gtest.h"
#include "io/vector_file.h"
#include "server/server.h"
#include "tests/test_support.h"

namespace quantd::testing {

class InProcessServerTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(); }

  // What Start() runs the server with; a test may change it before Start() or Restart().
  virtual ServerOptions Options() {
    return ServerOptions::Embedded(dir_.path() + "/data", /*sync=*/false);
  }

  void Start() {
    auto server = QuantdServer::Start(Options());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    stub_ = v1::Quantd::NewStub(Connect(server_->address()));
  }

  void Restart() {
    stub_.reset();
    server_->Shutdown(std::chrono::seconds(5));
    server_.reset();
    Start();
  }

  // Creates collection `name`; a failure fails the test.
  void CreateCollection(const std::string& name, uint32_t dimension,
                        v1::Metric metric = v1::METRIC_L2) {
    grpc::ClientContext context;
    v1::CreateCollectionRequest request;
    request.set_name(name);
    request.set_dimension(dimension);
    request.set_metric(metric);
    v1::CreateCollectionResponse response;
    const grpc::Status status = stub_->CreateCollection(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }

  // Creates `name` and uploads the first `rows` rows of `path` with ids row + offset.
  void CreateAndUpload(const std::string& name, const std::string& path, int64_t rows,
                       v1::Metric metric = v1::METRIC_L2, uint64_t offset = 0) {
    auto reader = VectorReader::Open(path);
    ASSERT_TRUE(reader.ok()) << reader.status();
    CreateCollection(name, static_cast<uint32_t>((*reader)->dim()), metric);
    UploadOptions options;
    options.max_rows = rows;
    options.id_offset = offset;
    auto uploaded = UploadVectors(*stub_, name, **reader, options);
    ASSERT_TRUE(uploaded.ok()) << uploaded.status();
  }

  v1::Job GetJob(const std::string& id) {
    grpc::ClientContext context;
    v1::GetJobRequest request;
    request.set_id(id);
    v1::Job job;
    EXPECT_TRUE(stub_->GetJob(&context, request, &job).ok());
    return job;
  }

  // Polls the job until it ends (bounded: 60 s), returning its last state.
  v1::Job WaitJob(const std::string& id) {
    v1::Job job;
    for (int i = 0; i < 6000; ++i) {
      job = GetJob(id);
      if (job.state() != v1::JOB_STATE_PENDING && job.state() != v1::JOB_STATE_RUNNING) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return job;
  }

  // One Upsert stream with one batch (attributes: none, or one per row); the stream's final
  // status.
  grpc::Status Upsert(const std::string& collection, const std::vector<uint64_t>& ids,
                      const std::vector<float>& vectors,
                      const std::vector<v1::Attributes>& attributes = {}) {
    grpc::ClientContext context;
    auto stream = stub_->Upsert(&context);
    v1::UpsertRequest request;
    request.set_collection(collection);
    request.mutable_ids()->Add(ids.begin(), ids.end());
    request.mutable_vectors()->Add(vectors.begin(), vectors.end());
    request.mutable_attributes()->Add(attributes.begin(), attributes.end());
    stream->Write(request);
    stream->WritesDone();
    v1::UpsertResponse ack;
    while (stream->Read(&ack)) {
    }
    return stream->Finish();
  }

  grpc::Status Search(const v1::SearchRequest& request, v1::SearchResponse* response) {
    grpc::ClientContext context;
    return stub_->Search(&context, request, response);
  }
  // A search that must succeed.
  v1::SearchResponse SearchOk(const v1::SearchRequest& request) {
    v1::SearchResponse response;
    const grpc::Status status = Search(request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  // The status of a search must be `code` with every one of `words` in its message.
  void ExpectSearchError(const v1::SearchRequest& request, grpc::StatusCode code,
                         const std::vector<std::string>& words) {
    v1::SearchResponse response;
    const grpc::Status status = Search(request, &response);
    EXPECT_EQ(status.error_code(), code) << status.error_message();
    for (const std::string& word : words) {
      EXPECT_NE(status.error_message().find(word), std::string::npos)
          << "'" << word << "' not in: " << status.error_message();
    }
  }

  grpc::Status StartTraining(const v1::TrainTokenizerRequest& request, v1::Job* job) {
    grpc::ClientContext context;
    return stub_->TrainTokenizer(&context, request, job);
  }
  // Starts a tokenizer job (a failure to start fails the test) and waits for its end.
  v1::Job TrainAndWait(const v1::TrainTokenizerRequest& request) {
    v1::Job job;
    const grpc::Status status = StartTraining(request, &job);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return WaitJob(job.id());
  }

  v1::GetStatsResponse Stats(const std::string& collection) {
    grpc::ClientContext context;
    v1::GetStatsRequest request;
    request.set_collection(collection);
    v1::GetStatsResponse response;
    const grpc::Status status = stub_->GetStats(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  // Every SID of the collection under tokenizer `version` (0: the active one) by item id,
  // through ExportSids: "c0,c1,...,#suffix". The stream's status goes to `status` when given,
  // else it must be OK.
  std::map<uint64_t, std::string> AllSids(const std::string& collection, uint32_t version = 0,
                                          grpc::Status* status = nullptr) {
    grpc::ClientContext context;
    v1::ExportSidsRequest request;
    request.set_collection(collection);
    request.set_tokenizer_version(version);
    auto reader = stub_->ExportSids(&context, request);
    v1::ExportSidsResponse batch;
    std::map<uint64_t, std::string> sids;
    while (reader->Read(&batch)) {
      for (int i = 0; i < batch.ids_size(); ++i) {
        std::string key;
        for (uint32_t l = 0; l < batch.levels(); ++l) {
          key += std::to_string(batch.codes(i * batch.levels() + l)) + ",";
        }
        sids[batch.ids(i)] = key + "#" + std::to_string(batch.suffixes(i));
      }
    }
    const grpc::Status finished = reader->Finish();
    if (status != nullptr) {
      *status = finished;
    } else {
      EXPECT_TRUE(finished.ok()) << finished.error_message();
    }
    return sids;
  }

  TempDir dir_;
  std::unique_ptr<QuantdServer> server_;
  std::unique_ptr<v1::Quantd::Stub> stub_;
};

}  // namespace quantd::testing

#endif  // QUANTD_TESTS_SERVER_FIXTURE_H_
