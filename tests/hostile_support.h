// Shared by the hostile-request tests: an in-process server holding a "sentinel" collection
// (synthetic items, a trained tokenizer and IVF-PQ index) whose observable state is captured
// before and compared after a run of bad requests; and one deadline-bounded call per RPC.
#ifndef QUANTD_TESTS_HOSTILE_SUPPORT_H_
#define QUANTD_TESTS_HOSTILE_SUPPORT_H_

#include <chrono>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "quantd/v1/quantd.grpc.pb.h"
#include "tests/grpc_raw.h"
#include "tests/server_fixture.h"

namespace quantd::testing {

inline constexpr char kSentinel[] = "sentinel";
inline constexpr int kSentinelDim = 8;
inline constexpr int kSentinelItems = 300;
inline constexpr auto kCallDeadline = std::chrono::seconds(20);

// Every RPC of quantd.v1.Quantd, as "/quantd.v1.Quantd/<name>".
inline const std::vector<std::string>& QuantdMethods() {
  static const std::vector<std::string> kMethods = {
      "CreateCollection", "ListCollections", "DescribeCollection", "DropCollection",
      "Upsert",           "DeleteItems",     "GetItems",           "TrainTokenizer",
      "Encode",           "Lookup",          "ExportSids",         "TrainIndex",
      "Search",           "GetJob",          "ListJobs",           "CancelJob",
      "GetStats",         "Backup"};
  return kMethods;
}
inline bool IsStreamingMethod(const std::string& method) {
  return method == "Upsert" || method == "ExportSids";
}

// Row i of the sentinel's synthetic data: smooth, distinct, finite.
inline std::vector<float> SentinelRow(int i) {
  std::vector<float> row(kSentinelDim);
  for (int j = 0; j < kSentinelDim; ++j) {
    row[j] = static_cast<float>(std::sin(0.37 * i + 1.3 * j) + 0.25 * ((i * 7 + j) % 5));
  }
  return row;
}

// What a client can see of the sentinel collection.
struct SentinelSnapshot {
  std::string describe;  // DescribeCollectionResponse, serialized
  std::string items;     // GetItemsResponse for a sample of ids
  std::string encoded;   // EncodeResponse for the same ids and a few vectors
  std::string search;    // SearchResponse for a few queries
  std::string exported;  // the ExportSids stream, concatenated
  std::string lookup;    // LookupResponse of a first-level prefix
};

inline std::unique_ptr<grpc::ClientContext> DeadlineContext() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + kCallDeadline);
  return context;
}

class HostileRequestTest : public InProcessServerTest {
 protected:
  void SetUp() override {
    InProcessServerTest::SetUp();
    ASSERT_NO_FATAL_FAILURE(CreateSentinel());
    ASSERT_NO_FATAL_FAILURE(sentinel_before_ = Snapshot());
  }

  // Checks that the server still answers and that the sentinel is exactly as it was.
  void ExpectSentinelUnchanged() {
    EXPECT_TRUE(HealthServing(stub_channel().get())) << "the server stopped answering";
    const SentinelSnapshot after = Snapshot();
    EXPECT_EQ(after.describe, sentinel_before_.describe) << "DescribeCollection changed";
    EXPECT_EQ(after.items, sentinel_before_.items) << "GetItems changed";
    EXPECT_EQ(after.encoded, sentinel_before_.encoded) << "Encode changed";
    EXPECT_EQ(after.search, sentinel_before_.search) << "Search changed";
    EXPECT_EQ(after.exported, sentinel_before_.exported) << "ExportSids changed";
    EXPECT_EQ(after.lookup, sentinel_before_.lookup) << "Lookup changed";
  }

  std::shared_ptr<grpc::Channel> stub_channel() {
    if (channel_ == nullptr) channel_ = Connect(server_->address());
    return channel_;
  }

  // -- One call per RPC, each with a deadline. -----------------------------------------------

  grpc::Status Call(const v1::CreateCollectionRequest& r) {
    v1::CreateCollectionResponse out;
    return stub_->CreateCollection(DeadlineContext().get(), r, &out);
  }
  grpc::Status Call(const v1::ListCollectionsRequest& r) {
    v1::ListCollectionsResponse out;
    return stub_->ListCollections(DeadlineContext().get(), r, &out);
  }
  grpc::Status Call(const v1::DescribeCollectionRequest& r) {
    v1::DescribeCollectionResponse out;
    return stub_->DescribeCollection(DeadlineContext().get(), r, &out);
  }
  grpc::Status Call(const v1::DropCollectionRequest& r) {
    v1::DropCollectionResponse out;
    return stub_->DropCollection(DeadlineContext().get(), r, &out);
  }
  grpc::Status Call(const v1::DeleteItemsRequest& r) {
    v1::DeleteItemsResponse out;
    return stub_->DeleteItems(DeadlineContext().get(), r, &out);
  }
  grpc::Status Call(const v1::GetItemsRequest& r, v1::GetItemsResponse* out = nullptr) {
    v1::GetItemsResponse local;
    return stub_->GetItems(DeadlineContext().get(), r, out != nullptr ? out : &local);
  }
  grpc::Status Call(const v1::TrainTokenizerRequest& r, v1::Job* out = nullptr) {
    v1::Job local;
    return stub_->TrainTokenizer(DeadlineContext().get(), r, out != nullptr ? out : &local);
  }
  grpc::Status Call(const v1::EncodeRequest& r, v1::EncodeResponse* out = nullptr) {
    v1::EncodeResponse local;
    return stub_->Encode(DeadlineContext().get(), r, out != nullptr ? out : &local);
  }
  grpc::Status Call(const v1::LookupRequest& r, v1::LookupResponse* out = nullptr) {
    v1::LookupResponse local;
    return stub_->Lookup(DeadlineContext().get(), r, out != nullptr ? out : &local);
  }
  grpc::Status Call(const v1::TrainIndexRequest& r, v1::Job* out = nullptr) {
    v1::Job local;
    return stub_->TrainIndex(DeadlineContext().get(), r, out != nullptr ? out : &local);
  }
  grpc::Status Call(const v1::SearchRequest& r, v1::SearchResponse* out = nullptr) {
    v1::SearchResponse local;
    return stub_->Search(DeadlineContext().get(), r, out != nullptr ? out : &local);
  }
  grpc::Status Call(const v1::GetJobRequest& r) {
    v1::Job out;
    return stub_->GetJob(DeadlineContext().get(), r, &out);
  }
  grpc::Status Call(const v1::ListJobsRequest& r) {
    v1::ListJobsResponse out;
    return stub_->ListJobs(DeadlineContext().get(), r, &out);
  }
  grpc::Status Call(const v1::CancelJobRequest& r) {
    v1::Job out;
    return stub_->CancelJob(DeadlineContext().get(), r, &out);
  }
  grpc::Status Call(const v1::BackupRequest& r) {
    v1::BackupResponse out;
    return stub_->Backup(DeadlineContext().get(), r, &out);
  }
  grpc::Status Call(const v1::GetStatsRequest& r) {
    v1::GetStatsResponse out;
    return stub_->GetStats(DeadlineContext().get(), r, &out);
  }
  // The whole ExportSids stream; *out gets every message serialized, concatenated.
  grpc::Status Call(const v1::ExportSidsRequest& r, std::string* out = nullptr) {
    auto context = DeadlineContext();
    auto reader = stub_->ExportSids(context.get(), r);
    v1::ExportSidsResponse message;
    while (reader->Read(&message)) {
      if (out != nullptr) out->append(message.SerializeAsString());
    }
    return reader->Finish();
  }
  // One Upsert stream of `batches`; the stream's final status.
  grpc::Status Call(const std::vector<v1::UpsertRequest>& batches) {
    auto context = DeadlineContext();
    auto stream = stub_->Upsert(context.get());
    for (const v1::UpsertRequest& batch : batches) {
      if (!stream->Write(batch)) break;  // the server ended the stream
    }
    stream->WritesDone();
    v1::UpsertResponse ack;
    while (stream->Read(&ack)) {
    }
    return stream->Finish();
  }

  // Raw bytes as the serialized request of `method` (a name from QuantdMethods() or any other).
  // The first response message, serialized, in *response.
  grpc::Status RawRequest(const std::string& method, const std::string& bytes,
                          std::string* response = nullptr) {
    std::string local;
    return RawCall(stub_channel().get(), "/quantd.v1.Quantd/" + method, bytes,
                   response != nullptr ? response : &local, IsStreamingMethod(method));
  }

  SentinelSnapshot sentinel_before_;

 private:
  void CreateSentinel() {
    v1::CreateCollectionRequest create;
    create.set_name(kSentinel);
    create.set_dimension(kSentinelDim);
    create.set_metric(v1::METRIC_L2);
    ASSERT_TRUE(Call(create).ok());
    std::vector<uint64_t> ids;
    std::vector<float> vectors;
    for (int i = 0; i < kSentinelItems; ++i) {
      ids.push_back(static_cast<uint64_t>(i) * 3 + 1);
      const std::vector<float> row = SentinelRow(i);
      vectors.insert(vectors.end(), row.begin(), row.end());
    }
    const grpc::Status upserted = Upsert(kSentinel, ids, vectors);
    ASSERT_TRUE(upserted.ok()) << upserted.error_message();

    v1::TrainTokenizerRequest tokenizer;
    tokenizer.set_collection(kSentinel);
    tokenizer.add_codebook_sizes(8);
    tokenizer.add_codebook_sizes(8);
    tokenizer.set_seed(3);
    v1::Job job;
    grpc::Status status = Call(tokenizer, &job);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(WaitJob(job.id()).state(), v1::JOB_STATE_SUCCEEDED);

    v1::TrainIndexRequest index;
    index.set_collection(kSentinel);
    index.set_nlist(8);
    index.set_m(4);
    index.set_nbits(4);
    index.set_seed(5);
    status = Call(index, &job);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(WaitJob(job.id()).state(), v1::JOB_STATE_SUCCEEDED);
  }

  SentinelSnapshot Snapshot() {
    SentinelSnapshot s;
    {
      v1::DescribeCollectionRequest r;
      r.set_name(kSentinel);
      v1::DescribeCollectionResponse out;
      const grpc::Status status = stub_->DescribeCollection(DeadlineContext().get(), r, &out);
      EXPECT_TRUE(status.ok()) << status.error_message();
      out.mutable_collection()->clear_create_time_ms();
      s.describe = out.SerializeAsString();
      EXPECT_EQ(out.collection().item_count(), static_cast<uint64_t>(kSentinelItems));
    }
    std::vector<uint64_t> sample;
    for (int i = 0; i < kSentinelItems; i += 7) sample.push_back(static_cast<uint64_t>(i) * 3 + 1);
    {
      v1::GetItemsRequest r;
      r.set_collection(kSentinel);
      r.mutable_ids()->Add(sample.begin(), sample.end());
      v1::GetItemsResponse out;
      const grpc::Status status = Call(r, &out);
      EXPECT_TRUE(status.ok()) << status.error_message();
      EXPECT_EQ(out.ids_size(), static_cast<int>(sample.size()));
      s.items = out.SerializeAsString();
    }
    std::vector<float> queries;
    for (int q = 0; q < 5; ++q) {
      const std::vector<float> row = SentinelRow(q * 41 + 2);
      for (float v : row) queries.push_back(v + 0.01f * static_cast<float>(q));
    }
    {
      v1::EncodeRequest r;
      r.set_collection(kSentinel);
      r.mutable_ids()->Add(sample.begin(), sample.end());
      r.mutable_vectors()->Add(queries.begin(), queries.end());
      v1::EncodeResponse out;
      const grpc::Status status = Call(r, &out);
      EXPECT_TRUE(status.ok()) << status.error_message();
      EXPECT_EQ(out.sids_size(), static_cast<int>(sample.size()));
      s.encoded = out.SerializeAsString();
    }
    {
      v1::SearchRequest r;
      r.set_collection(kSentinel);
      r.mutable_queries()->Add(queries.begin(), queries.end());
      r.set_k(10);
      r.set_nprobe(3);
      r.set_refine(2);
      v1::SearchResponse out;
      const grpc::Status status = Call(r, &out);
      EXPECT_TRUE(status.ok()) << status.error_message();
      EXPECT_EQ(out.results_size(), 5);
      s.search = out.SerializeAsString();
    }
    {
      v1::ExportSidsRequest r;
      r.set_collection(kSentinel);
      const grpc::Status status = Call(r, &s.exported);
      EXPECT_TRUE(status.ok()) << status.error_message();
    }
    {
      v1::LookupRequest r;
      r.set_collection(kSentinel);
      r.add_codes(1);
      v1::LookupResponse out;
      const grpc::Status status = Call(r, &out);
      EXPECT_TRUE(status.ok()) << status.error_message();
      s.lookup = out.SerializeAsString();
    }
    return s;
  }

  std::shared_ptr<grpc::Channel> channel_;
};

}  // namespace quantd::testing

#endif  // QUANTD_TESTS_HOSTILE_SUPPORT_H_
