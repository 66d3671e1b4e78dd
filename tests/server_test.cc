// The whole server in-process, over real gRPC on a loopback port: every RPC and every bad input.
#include "server/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "client/client.h"
#include "gtest/gtest.h"
#include "server/service.h"
#include "tests/grpc_raw.h"
#include "tests/test_support.h"

namespace quantd {
namespace {

using ::quantd::testing::TempDir;

// Plain HTTP GET of `path` from host:port; returns the body ("" on failure).
class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(); }

  void Start() {
    ServerOptions options = ServerOptions::Embedded(dir_.path() + "/data", /*sync=*/false);
    // Only the metrics test serves /metrics: stopping civetweb costs a second or two.
    if (with_metrics_) options.metrics_address = "127.0.0.1:0";
    auto server = QuantdServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    channel_ = Connect(server_->address());
    stub_ = v1::Quantd::NewStub(channel_);
  }

  void Restart() {
    stub_.reset();
    channel_.reset();
    server_->Shutdown(std::chrono::seconds(5));
    server_.reset();
    Start();
  }

  grpc::Status Create(const std::string& name, uint32_t dim, v1::Metric metric = v1::METRIC_L2) {
    grpc::ClientContext context;
    v1::CreateCollectionRequest request;
    request.set_name(name);
    request.set_dimension(dim);
    request.set_metric(metric);
    v1::CreateCollectionResponse response;
    return stub_->CreateCollection(&context, request, &response);
  }

  v1::Collection Describe(const std::string& name) {
    grpc::ClientContext context;
    v1::DescribeCollectionRequest request;
    request.set_name(name);
    v1::DescribeCollectionResponse response;
    EXPECT_TRUE(stub_->DescribeCollection(&context, request, &response).ok());
    return response.collection();
  }

  // Sends `batches` on one Upsert stream, one at a time, and returns the final status; the
  // acknowledgements received are appended to *acks.
  grpc::Status UpsertBatches(const std::vector<v1::UpsertRequest>& batches,
                             std::vector<v1::UpsertResponse>* acks) {
    grpc::ClientContext context;
    auto stream = stub_->Upsert(&context);
    for (const auto& batch : batches) {
      if (!stream->Write(batch)) break;
      v1::UpsertResponse ack;
      if (!stream->Read(&ack)) break;
      acks->push_back(ack);
    }
    stream->WritesDone();
    v1::UpsertResponse extra;
    while (stream->Read(&extra)) acks->push_back(extra);
    return stream->Finish();
  }

  static v1::UpsertRequest Batch(const std::string& collection, std::vector<uint64_t> ids, int dim,
                                 float base) {
    v1::UpsertRequest request;
    request.set_collection(collection);
    for (uint64_t id : ids) {
      request.add_ids(id);
      for (int j = 0; j < dim; ++j) request.add_vectors(base + static_cast<float>(id * dim + j));
    }
    return request;
  }

  grpc::Status GetItems(const std::string& collection, const std::vector<uint64_t>& ids,
                        v1::GetItemsResponse* response) {
    grpc::ClientContext context;
    v1::GetItemsRequest request;
    request.set_collection(collection);
    request.mutable_ids()->Add(ids.begin(), ids.end());
    return stub_->GetItems(&context, request, response);
  }

  bool with_metrics_ = false;
  TempDir dir_;
  std::unique_ptr<QuantdServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Quantd::Stub> stub_;
};

TEST_F(ServerTest, CollectionLifecycle) {
  ASSERT_TRUE(Create("items", 4, v1::METRIC_COSINE).ok());
  ASSERT_TRUE(Create("other", 2).ok());
  {
    grpc::ClientContext context;
    v1::ListCollectionsResponse response;
    ASSERT_TRUE(stub_->ListCollections(&context, {}, &response).ok());
    ASSERT_EQ(response.collections_size(), 2);
    EXPECT_EQ(response.collections(0).name(), "items");
    EXPECT_EQ(response.collections(0).metric(), v1::METRIC_COSINE);
    EXPECT_EQ(response.collections(0).dimension(), 4u);
  }
  std::vector<v1::UpsertResponse> acks;
  ASSERT_TRUE(UpsertBatches({Batch("items", {1, 2, 3}, 4, 1)}, &acks).ok());
  EXPECT_EQ(Describe("items").item_count(), 3u);
  {
    grpc::ClientContext context;
    v1::DropCollectionRequest request;
    request.set_name("items");
    v1::DropCollectionResponse response;
    ASSERT_TRUE(stub_->DropCollection(&context, request, &response).ok());
    EXPECT_EQ(response.items_deleted(), 3u);
  }
  grpc::ClientContext context;
  v1::ListCollectionsResponse response;
  ASSERT_TRUE(stub_->ListCollections(&context, {}, &response).ok());
  ASSERT_EQ(response.collections_size(), 1);
}

TEST_F(ServerTest, UpsertGetDeleteRoundTrip) {
  ASSERT_TRUE(Create("c", 3).ok());
  std::vector<v1::UpsertResponse> acks;
  const grpc::Status status = UpsertBatches(
      {Batch("c", {1, 2}, 3, 0.25f), Batch("", {3, 2}, 3, 7.5f), Batch("c", {4}, 3, 0)}, &acks);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(acks.size(), 3u);
  EXPECT_EQ(acks[1].batch_index(), 1u);
  EXPECT_EQ(acks[1].rows(), 2u);
  EXPECT_EQ(acks[1].inserted(), 1u);
  EXPECT_EQ(acks[2].total_rows(), 5u);
  EXPECT_EQ(acks[2].item_count(), 4u);

  v1::GetItemsResponse got;
  ASSERT_TRUE(GetItems("c", {2, 9, 1}, &got).ok());
  EXPECT_EQ(got.dimension(), 3u);
  ASSERT_EQ(got.ids_size(), 2);
  EXPECT_EQ(got.ids(0), 2u);
  EXPECT_EQ(got.ids(1), 1u);
  ASSERT_EQ(got.missing_ids_size(), 1);
  EXPECT_EQ(got.missing_ids(0), 9u);
  // Item 2 was replaced by the second batch (base 7.5).
  EXPECT_EQ(got.vectors(0), 7.5f + 6);
  EXPECT_EQ(got.vectors(3), 0.25f + 3);

  grpc::ClientContext context;
  v1::DeleteItemsRequest request;
  request.set_collection("c");
  request.add_ids(1);
  request.add_ids(42);
  v1::DeleteItemsResponse deleted;
  ASSERT_TRUE(stub_->DeleteItems(&context, request, &deleted).ok());
  EXPECT_EQ(deleted.deleted(), 1u);
  EXPECT_EQ(deleted.missing(), 1u);
  EXPECT_EQ(deleted.item_count(), 3u);
}

TEST_F(ServerTest, BadCollectionRequests) {
  ASSERT_TRUE(Create("c", 3).ok());
  const auto code = [&](const std::string& name, uint32_t dim, int metric) {
    grpc::ClientContext context;
    v1::CreateCollectionRequest request;
    request.set_name(name);
    request.set_dimension(dim);
    request.set_metric(static_cast<v1::Metric>(metric));
    v1::CreateCollectionResponse response;
    const grpc::Status status = stub_->CreateCollection(&context, request, &response);
    EXPECT_FALSE(status.error_message().empty() && !status.ok());
    return status.error_code();
  };
  EXPECT_EQ(code("c", 3, 1), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(code("", 3, 1), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(code("bad name", 3, 1), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(code("d0", 0, 1), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(code("huge", 1u << 20, 1), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(code("unspecified", 3, 0), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(code("unknown_metric", 3, 7), grpc::StatusCode::INVALID_ARGUMENT);
  {
    grpc::ClientContext context;
    v1::CreateCollectionRequest request;
    request.set_name("m");
    request.set_dimension(3);
    request.set_metric(static_cast<v1::Metric>(7));
    v1::CreateCollectionResponse response;
    const grpc::Status status = stub_->CreateCollection(&context, request, &response);
    EXPECT_NE(status.error_message().find("metric 7"), std::string::npos) << status.error_message();
  }
  for (const std::string& name : {std::string("missing"), std::string("")}) {
    grpc::ClientContext c1, c2;
    v1::DescribeCollectionRequest describe;
    describe.set_name(name);
    v1::DescribeCollectionResponse r1;
    const auto expected =
        name.empty() ? grpc::StatusCode::INVALID_ARGUMENT : grpc::StatusCode::NOT_FOUND;
    EXPECT_EQ(stub_->DescribeCollection(&c1, describe, &r1).error_code(), expected);
    v1::DropCollectionRequest drop;
    drop.set_name(name);
    v1::DropCollectionResponse r2;
    EXPECT_EQ(stub_->DropCollection(&c2, drop, &r2).error_code(), expected);
  }
  grpc::ClientContext context;
  v1::ListCollectionsResponse response;
  ASSERT_TRUE(stub_->ListCollections(&context, {}, &response).ok());
  EXPECT_EQ(response.collections_size(), 1);  // nothing above created anything
}

TEST_F(ServerTest, BadBatchEndsStreamKeepingEarlierBatches) {
  ASSERT_TRUE(Create("c", 2).ok());
  ASSERT_TRUE(Create("cos", 2, v1::METRIC_COSINE).ok());
  struct Case {
    std::string name;
    v1::UpsertRequest bad;
    std::string message_part;
  };
  std::vector<Case> cases;
  {
    auto wrong_dim = Batch("c", {10}, 2, 0);
    wrong_dim.add_vectors(1);
    cases.push_back({"wrong dimension", wrong_dim, "dimension 2"});
    auto nan = Batch("c", {10, 11}, 2, 0);
    nan.set_vectors(3, std::numeric_limits<float>::quiet_NaN());
    cases.push_back({"nan", nan, "row 1, component 1"});
    auto inf = Batch("c", {10}, 2, 0);
    inf.set_vectors(0, -std::numeric_limits<float>::infinity());
    cases.push_back({"inf", inf, "row 0, component 0"});
    cases.push_back({"empty", Batch("c", {}, 2, 0), "ids is empty"});
    cases.push_back({"other collection", Batch("cos", {10}, 2, 1), "differs"});
    cases.push_back({"unknown collection", Batch("nope", {10}, 2, 1), "differs"});
  }
  uint64_t next_id = 100;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const uint64_t good_a = next_id++, good_b = next_id++;
    std::vector<v1::UpsertResponse> acks;
    const grpc::Status status = UpsertBatches(
        {Batch("c", {good_a}, 2, 1), Batch("", {good_b}, 2, 1), c.bad, Batch("", {999}, 2, 1)},
        &acks);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(status.error_message().find("batch 2"), std::string::npos) << status.error_message();
    EXPECT_NE(status.error_message().find(c.message_part), std::string::npos)
        << status.error_message();
    EXPECT_EQ(acks.size(), 2u);
    v1::GetItemsResponse got;
    ASSERT_TRUE(GetItems("c", {good_a, good_b, 10, 11, 999}, &got).ok());
    ASSERT_EQ(got.ids_size(), 2);
    EXPECT_EQ(got.ids(0), good_a);
    EXPECT_EQ(got.ids(1), good_b);
  }
  EXPECT_EQ(Describe("c").item_count(), 2 * cases.size());
  EXPECT_EQ(Describe("cos").item_count(), 0u);

  // Zero vector under cosine; unknown collection in the first message; no collection at all.
  std::vector<v1::UpsertResponse> acks;
  auto zero = Batch("cos", {1}, 2, 0);
  zero.set_vectors(0, 0);
  zero.set_vectors(1, 0);
  EXPECT_EQ(UpsertBatches({zero}, &acks).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(UpsertBatches({Batch("nope", {1}, 2, 0)}, &acks).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(UpsertBatches({Batch("", {1}, 2, 0)}, &acks).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(acks.empty());
}

TEST_F(ServerTest, ClientCancelKeepsAcknowledgedBatches) {
  ASSERT_TRUE(Create("c", 8).ok());
  grpc::ClientContext context;
  auto stream = stub_->Upsert(&context);
  for (uint64_t b = 0; b < 3; ++b) {
    ASSERT_TRUE(stream->Write(Batch("c", {b * 2, b * 2 + 1}, 8, 0)));
    v1::UpsertResponse ack;
    ASSERT_TRUE(stream->Read(&ack));
  }
  context.TryCancel();
  stream->Write(Batch("c", {1000}, 8, 0));  // may or may not reach the server: not acknowledged
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // An unacknowledged batch is either fully applied or absent, never half: count is 6 or 7.
  const uint64_t count = Describe("c").item_count();
  EXPECT_TRUE(count == 6 || count == 7) << count;
  v1::GetItemsResponse got;
  ASSERT_TRUE(GetItems("c", {0, 1, 2, 3, 4, 5}, &got).ok());
  EXPECT_EQ(got.ids_size(), 6);
}

TEST_F(ServerTest, BadItemRequests) {
  ASSERT_TRUE(Create("c", 2).ok());
  v1::GetItemsResponse got;
  EXPECT_EQ(GetItems("nope", {1}, &got).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(GetItems("c", {}, &got).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(GetItems("", {1}, &got).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  {
    grpc::ClientContext context;
    v1::DeleteItemsRequest request;
    request.set_collection("c");
    v1::DeleteItemsResponse response;
    EXPECT_EQ(stub_->DeleteItems(&context, request, &response).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    grpc::ClientContext context;
    v1::DeleteItemsRequest request;
    request.set_collection("nope");
    request.add_ids(1);
    v1::DeleteItemsResponse response;
    EXPECT_EQ(stub_->DeleteItems(&context, request, &response).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  // An answer that would not fit a message is refused up front, naming the limit.
  ASSERT_TRUE(Create("wide", 65536).ok());
  std::vector<uint64_t> many(kMaxResponsePayloadBytes / (4 * 65536) + 1);
  std::iota(many.begin(), many.end(), 0);
  const grpc::Status status = GetItems("wide", many, &got);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("at most 192 ids"), std::string::npos)
      << status.error_message();
}

TEST_F(ServerTest, RestartServesTheSameData) {
  ASSERT_TRUE(Create("c", 16, v1::METRIC_INNER_PRODUCT).ok());
  std::vector<v1::UpsertResponse> acks;
  std::vector<uint64_t> ids(300);
  std::iota(ids.begin(), ids.end(), 1000);
  ASSERT_TRUE(UpsertBatches({Batch("c", ids, 16, -2.5f)}, &acks).ok());
  v1::GetItemsResponse before;
  ASSERT_TRUE(GetItems("c", ids, &before).ok());
  Restart();
  v1::GetItemsResponse after;
  ASSERT_TRUE(GetItems("c", ids, &after).ok());
  EXPECT_EQ(before.SerializeAsString(), after.SerializeAsString());
  EXPECT_EQ(Describe("c").metric(), v1::METRIC_INNER_PRODUCT);
  EXPECT_EQ(Describe("c").item_count(), 300u);
}

TEST_F(ServerTest, HealthReflectionAndMetrics) {
  with_metrics_ = true;
  Restart();
  EXPECT_TRUE(quantd::testing::HealthServing(channel_.get()));
  std::string response;
  // ServerReflectionRequest{list_services: ""} is field 7, length 0.
  const grpc::Status status = quantd::testing::RawCall(channel_.get(),
                                                       "/grpc.reflection.v1alpha.ServerReflection/"
                                                       "ServerReflectionInfo",
                                                       std::string("\x3a\x00", 2), &response,
                                                       /*streaming=*/true);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_NE(response.find("quantd.v1.Quantd"), std::string::npos);
  EXPECT_NE(response.find("grpc.health.v1.Health"), std::string::npos);

  ASSERT_TRUE(Create("m", 2).ok());
  const std::string metrics = testing::HttpGet(server_->metrics_address(), "/metrics");
  EXPECT_NE(metrics.find("quantd_requests_total{code=\"OK\",method=\"CreateCollection\"} 1"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("quantd_request_duration_seconds_bucket"), std::string::npos);
}

TEST(ServerStartTest, ClearErrorsForBadAddressesAndDirectories) {
  TempDir dir;
  ServerOptions options;
  options.data_dir = dir.path() + "/data";
  options.metrics_address = "";
  options.listen_address = "not-an-address:50051";
  auto bad_listen = QuantdServer::Start(options);
  EXPECT_EQ(bad_listen.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(bad_listen.status().message().find("not-an-address"), absl::string_view::npos);
  // A port above 65535 is a bad setting, refused before anything starts (gRPC would wrap it).
  options.listen_address = "127.0.0.1:99999";
  auto bad_port = QuantdServer::Start(options);
  EXPECT_EQ(bad_port.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad_port.status().message().find("--listen '127.0.0.1:99999'"), absl::string_view::npos)
      << bad_port.status();

  options.listen_address = "127.0.0.1:0";
  testing::WriteFile(dir.path() + "/file", "x");
  options.data_dir = dir.path() + "/file/data";
  auto bad_dir = QuantdServer::Start(options);
  EXPECT_FALSE(bad_dir.ok());
  EXPECT_NE(bad_dir.status().message().find("file/data"), absl::string_view::npos)
      << bad_dir.status();
}

}  // namespace
}  // namespace quantd
