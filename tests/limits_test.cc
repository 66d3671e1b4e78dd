// Limits and overload: the bounded serving queue, the collection limit, the message limit, the
// plaintext health port and its states, and refused limit settings.
#include <chrono>
#include <future>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "quantd/v1/quantd.grpc.pb.h"
#include "server/server.h"
#include "server/work_queue.h"
#include "tests/grpc_raw.h"
#include "tests/test_support.h"

namespace quantd {
namespace {

using ::quantd::testing::TempDir;

TEST(WorkQueueTest, RunsOnTheCallingThreadWhenASlotIsFree) {
  WorkQueue queue(/*threads=*/1, /*capacity=*/0);
  std::thread::id ran_on;
  EXPECT_TRUE(queue.TrySubmit([&] { ran_on = std::this_thread::get_id(); }));
  EXPECT_EQ(ran_on, std::this_thread::get_id());  // already ran, no hand-off
  EXPECT_EQ(queue.running(), 0);
}

TEST(WorkQueueTest, QueuesBeyondTheSlotsAndRefusesBeyondCapacity) {
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> ran = 0;
  std::atomic<bool> queued_ran_elsewhere = false;
  {
    WorkQueue queue(/*threads=*/1, /*capacity=*/1);
    // The only slot: taken inline by another thread, which blocks in it.
    std::thread holder([&] {
      EXPECT_TRUE(queue.TrySubmit([&] {
        released.wait();
        ++ran;
      }));
    });
    for (int i = 0; i < 500 && queue.running() == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    ASSERT_EQ(queue.running(), 1);
    const std::thread::id caller = std::this_thread::get_id();
    EXPECT_TRUE(queue.TrySubmit([&] {  // waits: the capacity
      queued_ran_elsewhere = std::this_thread::get_id() != caller;
      ++ran;
    }));
    EXPECT_EQ(queue.waiting(), 1);
    EXPECT_FALSE(queue.TrySubmit([&] { ++ran; }));  // refused: slot busy, queue full
    EXPECT_EQ(queue.running(), 1);  // the queued task does not run beside the busy slot
    release.set_value();
    holder.join();
  }  // the destructor runs what was queued
  EXPECT_EQ(ran, 2);
  EXPECT_TRUE(queued_ran_elsewhere);  // on a worker
}

TEST(WorkQueueTest, NeverRunsMoreThanItsSlots) {
  std::atomic<int> now = 0, most = 0, done = 0;
  {
    WorkQueue queue(/*threads=*/2, /*capacity=*/1000);
    std::vector<std::thread> callers;
    for (int t = 0; t < 6; ++t) {
      callers.emplace_back([&] {
        for (int i = 0; i < 50; ++i) {
          EXPECT_TRUE(queue.TrySubmit([&] {
            const int running = ++now;
            int seen = most.load();
            while (running > seen && !most.compare_exchange_weak(seen, running)) {
            }
            std::this_thread::sleep_for(std::chrono::microseconds(200));
            --now;
            ++done;
          }));
        }
      });
    }
    for (std::thread& c : callers) c.join();
  }
  EXPECT_EQ(done, 300);
  EXPECT_LE(most, 2);
  EXPECT_GE(most, 1);
}

class LimitsTest : public ::testing::Test {
 protected:
  std::unique_ptr<QuantdServer> StartServer(ServerOptions options) {
    auto server = QuantdServer::Start(options);
    EXPECT_TRUE(server.ok()) << server.status();
    return server.ok() ? std::move(*server) : nullptr;
  }
  ServerOptions Options() { return ServerOptions::Embedded(dir_.path() + "/data", false); }
  TempDir dir_;
};

TEST_F(LimitsTest, CollectionLimitRefusesAndChangesNothing) {
  ServerOptions options = Options();
  options.max_collections = 2;
  auto server = StartServer(options);
  ASSERT_NE(server, nullptr);
  auto channel = grpc::CreateChannel(server->address(), grpc::InsecureChannelCredentials());
  auto stub = v1::Quantd::NewStub(channel);
  for (const char* name : {"a", "b", "c"}) {
    grpc::ClientContext context;
    v1::CreateCollectionRequest request;
    request.set_name(name);
    request.set_dimension(4);
    request.set_metric(v1::METRIC_L2);
    v1::CreateCollectionResponse response;
    const grpc::Status status = stub->CreateCollection(&context, request, &response);
    if (std::string(name) != "c") {
      EXPECT_TRUE(status.ok()) << status.error_message();
    } else {
      EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
      EXPECT_NE(status.error_message().find("--max_collections"), std::string::npos)
          << status.error_message();
      EXPECT_NE(status.error_message().find("'c'"), std::string::npos) << status.error_message();
    }
  }
  grpc::ClientContext context;
  v1::ListCollectionsResponse list;
  ASSERT_TRUE(stub->ListCollections(&context, v1::ListCollectionsRequest(), &list).ok());
  EXPECT_EQ(list.collections_size(), 2);
}

TEST_F(LimitsTest, MessageLimitRefusesLargerRequests) {
  ServerOptions options = Options();
  options.max_message_bytes = 1 << 20;
  auto server = StartServer(options);
  ASSERT_NE(server, nullptr);
  auto channel = grpc::CreateChannel(server->address(), grpc::InsecureChannelCredentials());
  auto stub = v1::Quantd::NewStub(channel);
  grpc::ClientContext context;
  v1::EncodeRequest request;
  request.set_collection("none");
  request.mutable_vectors()->Resize(300000, 0.5f);  // 1.2 MB
  v1::EncodeResponse response;
  const grpc::Status status = stub->Encode(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  // A request under the limit is served (NOT_FOUND: the collection does not exist).
  grpc::ClientContext small_context;
  request.mutable_vectors()->Resize(1000, 0.5f);
  EXPECT_EQ(stub->Encode(&small_context, request, &response).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(LimitsTest, HealthPortServesOnlyHealthAndFollowsTheServer) {
  ServerOptions options = Options();
  options.health_listen_address = "127.0.0.1:0";
  auto server = StartServer(options);
  ASSERT_NE(server, nullptr);
  ASSERT_GT(server->health_port(), 0);
  auto health = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server->health_port()),
                                    grpc::InsecureChannelCredentials());
  auto main = grpc::CreateChannel(server->address(), grpc::InsecureChannelCredentials());
  constexpr int kServing = 1;
  EXPECT_EQ(quantd::testing::HealthStatus(health.get(), ""), kServing);
  EXPECT_EQ(quantd::testing::HealthStatus(health.get(), "quantd.v1.Quantd"), kServing);
  EXPECT_EQ(quantd::testing::HealthStatus(main.get(), "quantd.v1.Quantd"), kServing);
  EXPECT_EQ(quantd::testing::HealthStatus(main.get(), "no.such.Service"),
            -static_cast<int>(grpc::StatusCode::NOT_FOUND));
  // The quantd API is not on the health port.
  auto stub = v1::Quantd::NewStub(health);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::ListCollectionsResponse list;
  EXPECT_EQ(stub->ListCollections(&context, v1::ListCollectionsRequest(), &list).error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
  server->Shutdown(std::chrono::milliseconds(100));
  EXPECT_LT(quantd::testing::HealthStatus(health.get(), ""), 0);  // gone after shutdown
}

TEST_F(LimitsTest, BadLimitsAreRefusedAtStart) {
  const auto refused = [&](ServerOptions options, const std::string& field) {
    auto server = QuantdServer::Start(options);
    ASSERT_FALSE(server.ok()) << field;
    EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(server.status().message().find(field), std::string::npos) << server.status();
  };
  ServerOptions options = Options();
  options.max_message_bytes = 1000;
  refused(options, "max_message_bytes");
  options = Options();
  options.search_queue = -1;
  refused(options, "search_queue -1");
  options = Options();
  options.max_collections = 0;
  refused(options, "max_collections 0");
  options = Options();
  options.default_deadline = std::chrono::milliseconds(5000);
  options.max_deadline = std::chrono::milliseconds(1000);
  refused(options, "default_deadline 5000 ms");
  options = Options();
  options.health_listen_address = "256.0.0.1:-4";
  auto server = QuantdServer::Start(options);
  ASSERT_FALSE(server.ok());
  EXPECT_NE(server.status().message().find("health_listen"), std::string::npos);
}

}  // namespace
}  // namespace quantd
