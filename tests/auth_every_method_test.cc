// Every method of quantd.v1.Quantd, found by walking the service descriptor (so a method added
// later is covered without editing this test), refuses a call without a valid token and a write
// method refuses a read token, before it changes anything. Calls go through a generic stub with
// a request that would succeed with the write token, so a method that skipped the check would
// visibly act (a backup directory, a collection, a job).
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "client/client.h"
#include "google/protobuf/descriptor.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "quantd/v1/quantd.grpc.pb.h"
#include "server/auth.h"
#include "server/server.h"
#include "tests/grpc_raw.h"
#include "tests/test_support.h"

namespace quantd {
namespace {

using ::quantd::testing::TempDir;
using ::quantd::testing::WriteFile;

constexpr char kReadToken[] = "read-token-0123456789abcdef";
constexpr char kWriteToken[] = "write-token-0123456789abcdef";
constexpr char kUnknownToken[] = "unknown-token-0123456789abcdef";
constexpr char kCollection[] = "kept";

// A request per method that the write token would see succeed (or at least act on): it names
// the existing collection, a new collection or a backup. Methods not listed get an empty
// request.
std::string RequestFor(const std::string& method) {
  if (method == "CreateCollection") {
    v1::CreateCollectionRequest request;
    request.set_name("created");
    request.set_dimension(4);
    request.set_metric(v1::METRIC_L2);
    return request.SerializeAsString();
  }
  if (method == "DropCollection") {
    v1::DropCollectionRequest request;
    request.set_name(kCollection);
    return request.SerializeAsString();
  }
  if (method == "Upsert") {
    v1::UpsertRequest request;
    request.set_collection(kCollection);
    request.add_ids(99);
    for (int j = 0; j < 4; ++j) request.add_vectors(1.0f);
    return request.SerializeAsString();
  }
  if (method == "DeleteItems") {
    v1::DeleteItemsRequest request;
    request.set_collection(kCollection);
    request.add_ids(0);
    return request.SerializeAsString();
  }
  if (method == "TrainTokenizer") {
    v1::TrainTokenizerRequest request;
    request.set_collection(kCollection);
    request.add_codebook_sizes(2);
    return request.SerializeAsString();
  }
  if (method == "TrainIndex") {
    v1::TrainIndexRequest request;
    request.set_collection(kCollection);
    request.set_nlist(2);
    return request.SerializeAsString();
  }
  if (method == "Backup") {
    v1::BackupRequest request;
    request.set_name("stolen");
    return request.SerializeAsString();
  }
  return "";
}

// One call of `method` ("/quantd.v1.Quantd/Backup") with the serialized `request`, sent with
// `authorization` metadata unless it is empty; `streaming` calls write the request and close.
grpc::Status CallRaw(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                     const std::string& request, const std::string& authorization, bool streaming) {
  std::string ignored;
  return testing::RawCall(channel.get(), method, request, &ignored, streaming, authorization);
}

// quantd.v1.Quantd as the generated descriptor pool has it.
const google::protobuf::ServiceDescriptor* ServiceDescriptor() {
  return google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
      v1::Quantd::service_full_name());
}

class AuthEveryMethodTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WriteFile(dir_.File("tokens"),
              absl::StrCat("read ", kReadToken, "\nwrite ", kWriteToken, "\n"));
    ServerOptions options = ServerOptions::Embedded(dir_.path() + "/data", /*sync=*/false);
    options.tokens_file = dir_.File("tokens");
    backup_dir_ = options.backup_dir;
    auto server = QuantdServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    channel_ = Connect(server_->address());
    // One collection of 8 items that the write methods would change, drop or train.
    v1::CreateCollectionRequest create;
    create.set_name(kCollection);
    create.set_dimension(4);
    create.set_metric(v1::METRIC_L2);
    ASSERT_TRUE(Call("CreateCollection", create.SerializeAsString(), kWriteToken).ok());
    v1::UpsertRequest upsert;
    upsert.set_collection(kCollection);
    for (int i = 0; i < 8; ++i) {
      upsert.add_ids(static_cast<uint64_t>(i));
      for (int j = 0; j < 4; ++j) upsert.add_vectors(static_cast<float>(i * 4 + j));
    }
    ASSERT_TRUE(Call("Upsert", upsert.SerializeAsString(), kWriteToken).ok());
  }

  static const google::protobuf::MethodDescriptor* Method(const std::string& name) {
    return ServiceDescriptor()->FindMethodByName(name);
  }

  grpc::Status Call(const std::string& name, const std::string& request, const std::string& token,
                    const std::string& scheme = "Bearer ") {
    const google::protobuf::MethodDescriptor* method = Method(name);
    EXPECT_NE(method, nullptr) << name;
    const bool streaming = method->client_streaming() || method->server_streaming();
    return CallRaw(channel_, absl::StrCat("/", v1::Quantd::service_full_name(), "/", name), request,
                   token.empty() ? "" : scheme + token, streaming);
  }

  // What a refused call must leave as it was.
  struct State {
    std::vector<std::string> collections;  // name:items
    int jobs = 0;
    bool backup_written = false;
    bool operator==(const State&) const = default;
  };
  State Observe() {
    State state;
    v1::ListCollectionsResponse list;
    std::string bytes;
    auto stub = v1::Quantd::NewStub(channel_);
    grpc::ClientContext list_context;
    list_context.AddMetadata("authorization", absl::StrCat("Bearer ", kWriteToken));
    EXPECT_TRUE(stub->ListCollections(&list_context, {}, &list).ok());
    for (const v1::Collection& c : list.collections()) {
      state.collections.push_back(absl::StrCat(c.name(), ":", c.item_count()));
    }
    grpc::ClientContext jobs_context;
    jobs_context.AddMetadata("authorization", absl::StrCat("Bearer ", kWriteToken));
    v1::ListJobsResponse jobs;
    EXPECT_TRUE(stub->ListJobs(&jobs_context, {}, &jobs).ok());
    state.jobs = jobs.jobs_size();
    state.backup_written = std::filesystem::exists(backup_dir_ + "/stolen");
    return state;
  }

  TempDir dir_;
  std::string backup_dir_;
  std::unique_ptr<QuantdServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(AuthEveryMethodTest, EveryMethodRefusesMissingAndUnknownTokens) {
  const google::protobuf::ServiceDescriptor* service = ServiceDescriptor();
  ASSERT_GE(service->method_count(), 18);
  const State before = Observe();
  for (int i = 0; i < service->method_count(); ++i) {
    const std::string name = service->method(i)->name();
    const std::string request = RequestFor(name);
    for (const auto& [token, scheme] : std::vector<std::pair<std::string, std::string>>{
             {"", ""}, {kUnknownToken, "Bearer "}, {kWriteToken, "Basic "}}) {
      const grpc::Status status = Call(name, request, token, scheme);
      EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
          << name << " with token '" << scheme << token << "': " << status.error_code() << " "
          << status.error_message();
    }
  }
  EXPECT_TRUE(Observe() == before) << "a refused call changed the server's state";
  EXPECT_FALSE(std::filesystem::exists(backup_dir_ + "/stolen"));
}

TEST_F(AuthEveryMethodTest, EveryWriteMethodRefusesTheReadToken) {
  const google::protobuf::ServiceDescriptor* service = ServiceDescriptor();
  const State before = Observe();
  int write_methods = 0;
  for (int i = 0; i < service->method_count(); ++i) {
    const std::string name = service->method(i)->name();
    if (RequiredRole(name) != Role::kWrite) continue;
    ++write_methods;
    const grpc::Status status = Call(name, RequestFor(name), kReadToken);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED)
        << name << ": " << status.error_code() << " " << status.error_message();
    EXPECT_EQ(status.error_message(),
              absl::StrCat(name, " needs the write role; this token has the read role"));
  }
  // Create/Drop, Upsert, DeleteItems, 2 x Train, CancelJob, Backup, and the tokenizer versions'
  // Activate, Drop, Pin, SetRetention, Import.
  EXPECT_EQ(write_methods, 13);
  EXPECT_TRUE(Observe() == before) << "a refused call changed the server's state";
  EXPECT_FALSE(std::filesystem::exists(backup_dir_ + "/stolen"));
}

// The requests above do act when the token allows it, so the refusals are the check's doing.
TEST_F(AuthEveryMethodTest, TheWriteTokenDoesWhatTheRefusedCallsWouldHaveDone) {
  EXPECT_TRUE(Call("Backup", RequestFor("Backup"), kWriteToken).ok());
  EXPECT_TRUE(std::filesystem::exists(backup_dir_ + "/stolen"));
  EXPECT_TRUE(Call("CreateCollection", RequestFor("CreateCollection"), kWriteToken).ok());
  EXPECT_TRUE(Call("DeleteItems", RequestFor("DeleteItems"), kWriteToken).ok());
  const State after = Observe();
  EXPECT_EQ(after.collections, (std::vector<std::string>{"created:0", "kept:7"}));
  // Every read method answers the read token (with OK or a domain error, never an auth error).
  const google::protobuf::ServiceDescriptor* service = ServiceDescriptor();
  for (int i = 0; i < service->method_count(); ++i) {
    const std::string name = service->method(i)->name();
    if (RequiredRole(name) != Role::kRead) continue;
    const grpc::StatusCode code = Call(name, RequestFor(name), kReadToken).error_code();
    EXPECT_NE(code, grpc::StatusCode::UNAUTHENTICATED) << name;
    EXPECT_NE(code, grpc::StatusCode::PERMISSION_DENIED) << name;
    EXPECT_NE(code, grpc::StatusCode::UNIMPLEMENTED) << name;
  }
}

}  // namespace
}  // namespace quantd
