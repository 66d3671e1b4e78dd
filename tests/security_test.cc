// TLS and bearer-token authorization: the token file format, the role of every RPC, an
// in-process server with tokens (plaintext) and with TLS / client certificates (throwaway
// certificates made by the `openssl` command), and the real binaries: quantd refusing a bad
// configuration, quantctl talking to a server with TLS and tokens.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "gtest/gtest.h"
#include "server/auth.h"
#include "server/server.h"
#include "tests/grpc_raw.h"
#include "tests/process_support.h"
#include "tests/test_support.h"

namespace quantd {
namespace {

using ::quantd::testing::ReadText;
using ::quantd::testing::RunShell;
using ::quantd::testing::ServerProcess;
using ::quantd::testing::TempDir;
using ::quantd::testing::WriteFile;

constexpr char kReadToken[] = "read-token-0123456789abcdef";
constexpr char kWriteToken[] = "write-token-0123456789abcdef";
constexpr char kTokensFile[] =
    "# quantd tokens: <role> <token>\n"
    "\n"
    "read  read-token-0123456789abcdef\n"
    "  write\twrite-token-0123456789abcdef  \n";

bool IsAuthError(const grpc::Status& status) {
  return status.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
         status.error_code() == grpc::StatusCode::PERMISSION_DENIED;
}

// ---- The RPCs the tests make, each returning the call's status. ----

grpc::ClientContext* WithDeadline(grpc::ClientContext* context) {
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  return context;
}

grpc::Status Create(v1::Quantd::Stub& stub, const std::string& name, uint32_t dim = 4) {
  grpc::ClientContext context;
  v1::CreateCollectionRequest request;
  request.set_name(name);
  request.set_dimension(dim);
  request.set_metric(v1::METRIC_L2);
  v1::CreateCollectionResponse response;
  return stub.CreateCollection(WithDeadline(&context), request, &response);
}

grpc::Status List(v1::Quantd::Stub& stub, v1::ListCollectionsResponse* response) {
  grpc::ClientContext context;
  return stub.ListCollections(WithDeadline(&context), v1::ListCollectionsRequest(), response);
}

// One Upsert stream of `rows` rows of dimension 4 (ids from 0); *acks counts acknowledgements.
grpc::Status Upsert(v1::Quantd::Stub& stub, const std::string& collection, int rows,
                    int* acks = nullptr) {
  grpc::ClientContext context;
  auto stream = stub.Upsert(WithDeadline(&context));
  v1::UpsertRequest request;
  request.set_collection(collection);
  for (int i = 0; i < rows; ++i) {
    request.add_ids(static_cast<uint64_t>(i));
    for (int j = 0; j < 4; ++j) request.add_vectors(static_cast<float>((i * 7 + j * 13) % 29));
  }
  stream->Write(request);
  stream->WritesDone();
  v1::UpsertResponse ack;
  int count = 0;
  while (stream->Read(&ack)) ++count;
  if (acks != nullptr) *acks = count;
  return stream->Finish();
}

grpc::Status Export(v1::Quantd::Stub& stub, const std::string& collection, int* messages) {
  grpc::ClientContext context;
  v1::ExportSidsRequest request;
  request.set_collection(collection);
  auto reader = stub.ExportSids(WithDeadline(&context), request);
  v1::ExportSidsResponse batch;
  *messages = 0;
  while (reader->Read(&batch)) ++*messages;
  return reader->Finish();
}

grpc::Status TrainTokenizer(v1::Quantd::Stub& stub, const std::string& collection, v1::Job* job) {
  grpc::ClientContext context;
  v1::TrainTokenizerRequest request;
  request.set_collection(collection);
  request.add_codebook_sizes(4);
  request.add_codebook_sizes(4);
  return stub.TrainTokenizer(WithDeadline(&context), request, job);
}

grpc::Status GetJob(v1::Quantd::Stub& stub, const std::string& id, v1::Job* job) {
  grpc::ClientContext context;
  v1::GetJobRequest request;
  request.set_id(id);
  return stub.GetJob(WithDeadline(&context), request, job);
}

grpc::Status Search(v1::Quantd::Stub& stub, const std::string& collection) {
  grpc::ClientContext context;
  v1::SearchRequest request;
  request.set_collection(collection);
  for (int j = 0; j < 4; ++j) request.add_queries(1.0f);
  request.set_k(3);
  v1::SearchResponse response;
  return stub.Search(WithDeadline(&context), request, &response);
}

grpc::Status Encode(v1::Quantd::Stub& stub, const std::string& collection) {
  grpc::ClientContext context;
  v1::EncodeRequest request;
  request.set_collection(collection);
  request.add_ids(1);
  v1::EncodeResponse response;
  return stub.Encode(WithDeadline(&context), request, &response);
}

grpc::Status Stats(v1::Quantd::Stub& stub, const std::string& collection) {
  grpc::ClientContext context;
  v1::GetStatsRequest request;
  request.set_collection(collection);
  v1::GetStatsResponse response;
  return stub.GetStats(WithDeadline(&context), request, &response);
}

std::unique_ptr<v1::Quantd::Stub> StubFor(const std::string& address,
                                          const ConnectOptions& options) {
  auto channel = Connect(address, options);
  EXPECT_TRUE(channel.ok()) << channel.status();
  return channel.ok() ? v1::Quantd::NewStub(*channel) : nullptr;
}

ConnectOptions WithToken(const std::string& token) {
  ConnectOptions options;
  options.token = token;
  return options;
}

// ---- Token file format and role table. ----

TEST(TokenFileTest, ReadsRolesSkippingCommentsAndBlankLines) {
  auto tokens = ParseTokens(kTokensFile, "tokens.txt");
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  ASSERT_EQ(tokens->size(), 2u);
  EXPECT_EQ((*tokens)[0].role, Role::kRead);
  EXPECT_EQ((*tokens)[0].line, 3);
  EXPECT_EQ((*tokens)[1].role, Role::kWrite);
  EXPECT_EQ((*tokens)[1].line, 4);
  const Authorizer authorizer(std::move(*tokens));
  EXPECT_EQ(*authorizer.RoleOf(kReadToken), Role::kRead);
  EXPECT_EQ(*authorizer.RoleOf(kWriteToken), Role::kWrite);
  EXPECT_EQ(authorizer.RoleOf("read-token-0123456789abcdeF").status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(authorizer.RoleOf("").status().code(), absl::StatusCode::kUnauthenticated);
}

TEST(TokenFileTest, ErrorsNameTheFileAndLineButNeverTheToken) {
  const std::string secret = "s3cret-token-value-0123456789";
  struct Case {
    std::string text;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"# ok\nadmin " + secret + "\n", "line 2: the role (first field) is not 'read' or 'write'"},
      {secret + " read\n", "line 1: the role (first field) is not 'read' or 'write'"},
      {"\n\nread short-token\n", "line 3: the token has 11 characters, at least 16 are required"},
      {"write " + secret + " extra\n", "line 1: expected '<role> <token>', found 3 fields"},
      {"write\n", "line 1: expected '<role> <token>', found 1 fields"},
      {"read " + secret + "\xc3\xa9\n", "line 1: the token has a character outside visible ASCII"},
      {"read " + secret + "\nwrite " + secret + "\n",
       "line 2: the token repeats the one on line 1"},
      {"# nothing\n\n", "has no tokens"},
  };
  for (const Case& c : cases) {
    auto tokens = ParseTokens(c.text, "/etc/quantd/tokens");
    ASSERT_FALSE(tokens.ok()) << c.text;
    EXPECT_EQ(tokens.status().code(), absl::StatusCode::kInvalidArgument);
    const std::string message(tokens.status().message());
    EXPECT_NE(message.find("--tokens_file '/etc/quantd/tokens'"), std::string::npos) << message;
    EXPECT_NE(message.find(c.expected), std::string::npos) << message;
    EXPECT_EQ(message.find("s3cret"), std::string::npos) << message;
    EXPECT_EQ(message.find("short-token"), std::string::npos) << message;
  }
  auto missing = ReadTokensFile("/no/such/tokens");
  EXPECT_EQ(missing.status().message(),
            "--tokens_file '/no/such/tokens' cannot be read: No such file or directory");
}

TEST(RoleTest, ReadMethodsAreListedAndEveryOtherMethodNeedsWrite) {
  const std::vector<std::string> read = {"Encode",
                                         "Search",
                                         "GetStats",
                                         "Lookup",
                                         "GetItems",
                                         "ListCollections",
                                         "DescribeCollection",
                                         "GetJob",
                                         "ListJobs",
                                         "ExportSids",
                                         "ListTokenizerVersions",
                                         "MapSids",
                                         "NextCodes",
                                         "ExportTokenizer",
                                         "ListItems"};
  int read_methods = 0;
  const google::protobuf::ServiceDescriptor* service =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
          v1::Quantd::service_full_name());
  ASSERT_NE(service, nullptr);
  for (int i = 0; i < service->method_count(); ++i) {
    const std::string name = service->method(i)->name();
    const bool is_read = std::find(read.begin(), read.end(), name) != read.end();
    EXPECT_EQ(RequiredRole(name), is_read ? Role::kRead : Role::kWrite) << name;
    read_methods += is_read;
  }
  EXPECT_EQ(read_methods, static_cast<int>(read.size())) << "a read method left the service";
  for (const char* write :
       {"CreateCollection", "DropCollection", "Upsert", "DeleteItems", "TrainTokenizer",
        "TrainIndex", "CancelJob", "ActivateTokenizer", "DropTokenizerVersion",
        "PinTokenizerVersion", "SetTokenizerRetention", "ImportTokenizer", "SomeFutureMethod"}) {
    EXPECT_EQ(RequiredRole(write), Role::kWrite) << write;
  }
}

// ---- An in-process server with tokens, plaintext. ----

class TokenAuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WriteFile(dir_.File("tokens"), kTokensFile);
    ServerOptions options = ServerOptions::Embedded(dir_.path() + "/data", /*sync=*/false);
    options.tokens_file = dir_.File("tokens");
    if (with_metrics_) options.metrics_address = "127.0.0.1:0";
    auto server = QuantdServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    anonymous_ = StubFor(server_->address(), {});
    reader_ = StubFor(server_->address(), WithToken(kReadToken));
    writer_ = StubFor(server_->address(), WithToken(kWriteToken));
  }

  // Collection names visible to the write token.
  std::vector<std::string> Collections() {
    v1::ListCollectionsResponse response;
    EXPECT_TRUE(List(*writer_, &response).ok());
    std::vector<std::string> names;
    for (const v1::Collection& c : response.collections()) names.push_back(c.name());
    return names;
  }

  TempDir dir_;
  bool with_metrics_ = false;
  std::unique_ptr<QuantdServer> server_;
  std::unique_ptr<v1::Quantd::Stub> anonymous_;
  std::unique_ptr<v1::Quantd::Stub> reader_;
  std::unique_ptr<v1::Quantd::Stub> writer_;
};

TEST_F(TokenAuthTest, NoTokenIsUnauthenticatedOnReadWriteAndStreamingCalls) {
  ASSERT_TRUE(Create(*writer_, "c").ok());
  v1::ListCollectionsResponse list;
  grpc::Status status = List(*anonymous_, &list);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(status.error_message(), "missing or invalid bearer token");
  EXPECT_EQ(list.collections_size(), 0);
  EXPECT_EQ(Create(*anonymous_, "d").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  int acks = -1;
  EXPECT_EQ(Upsert(*anonymous_, "c", 10, &acks).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(acks, 0);
  int messages = -1;
  EXPECT_EQ(Export(*anonymous_, "c", &messages).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(messages, 0);
  EXPECT_EQ(Collections(), std::vector<std::string>{"c"});
}

TEST_F(TokenAuthTest, WrongOrMalformedTokensAreUnauthenticatedAndNeverEchoed) {
  const std::string wrong = "wrong-token-0123456789abcdef";
  for (const std::string& header :
       {"Bearer " + wrong, "Basic " + std::string(kWriteToken), std::string(kWriteToken),
        std::string("Bearer"), std::string("Bearer "),
        "Bearer " + std::string(kWriteToken) + "x"}) {
    grpc::ClientContext context;
    context.AddMetadata("authorization", header);
    v1::ListCollectionsResponse response;
    const grpc::Status status = anonymous_->ListCollections(WithDeadline(&context), {}, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << header;
    EXPECT_EQ(status.error_message(), "missing or invalid bearer token") << header;
  }
  auto stub = StubFor(server_->address(), WithToken(wrong));
  EXPECT_EQ(Create(*stub, "x").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  // The scheme is case-insensitive.
  grpc::ClientContext context;
  context.AddMetadata("authorization", "bEaReR " + std::string(kReadToken));
  v1::ListCollectionsResponse response;
  EXPECT_TRUE(anonymous_->ListCollections(WithDeadline(&context), {}, &response).ok());
  EXPECT_TRUE(Collections().empty());
}

TEST_F(TokenAuthTest, ReadTokenIsDeniedWritesAndChangesNothing) {
  grpc::Status status = Create(*reader_, "c");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(status.error_message(),
            "CreateCollection needs the write role; this token has the read role");
  EXPECT_TRUE(Collections().empty());

  ASSERT_TRUE(Create(*writer_, "c").ok());
  int acks = -1;
  status = Upsert(*reader_, "c", 100, &acks);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(status.error_message().find("Upsert needs the write role"), std::string::npos);
  EXPECT_EQ(acks, 0);
  ASSERT_TRUE(Upsert(*writer_, "c", 100).ok());

  v1::Job job;
  status = TrainTokenizer(*reader_, "c", &job);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(status.error_message().find("TrainTokenizer"), std::string::npos);
  EXPECT_TRUE(job.id().empty());
  grpc::ClientContext context;
  v1::ListJobsResponse jobs;
  ASSERT_TRUE(writer_->ListJobs(WithDeadline(&context), {}, &jobs).ok());
  EXPECT_EQ(jobs.jobs_size(), 0);

  grpc::ClientContext describe_context;
  v1::DescribeCollectionRequest describe;
  describe.set_name("c");
  v1::DescribeCollectionResponse described;
  ASSERT_TRUE(
      reader_->DescribeCollection(WithDeadline(&describe_context), describe, &described).ok());
  EXPECT_EQ(described.collection().item_count(), 100u);
}

TEST_F(TokenAuthTest, ReadTokenReadsAndWriteTokenDoesEverything) {
  ASSERT_TRUE(Create(*writer_, "c").ok());
  ASSERT_TRUE(Upsert(*writer_, "c", 300).ok());
  // Before training: the server's own answers, not authorization errors.
  for (const grpc::Status& status : {Search(*reader_, "c"), Encode(*reader_, "c")}) {
    EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << status.error_message();
  }
  EXPECT_TRUE(Stats(*reader_, "c").ok());

  v1::Job job;
  ASSERT_TRUE(TrainTokenizer(*writer_, "c", &job).ok());
  for (int i = 0; i < 3000; ++i) {
    ASSERT_TRUE(GetJob(*reader_, job.id(), &job).ok());
    if (job.state() != v1::JOB_STATE_PENDING && job.state() != v1::JOB_STATE_RUNNING) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.error();
  EXPECT_TRUE(Encode(*reader_, "c").ok());
  EXPECT_TRUE(Stats(*reader_, "c").ok());
  int messages = 0;
  EXPECT_TRUE(Export(*reader_, "c", &messages).ok());
  EXPECT_GE(messages, 1);

  // The write token reaches every write method (their answers are the server's own).
  {
    grpc::ClientContext context;
    v1::TrainIndexRequest request;
    request.set_collection("c");
    v1::Job index_job;
    EXPECT_FALSE(IsAuthError(writer_->TrainIndex(WithDeadline(&context), request, &index_job)));
  }
  {
    grpc::ClientContext context;
    v1::CancelJobRequest request;
    request.set_id(job.id());
    v1::Job cancelled;
    EXPECT_FALSE(IsAuthError(writer_->CancelJob(WithDeadline(&context), request, &cancelled)));
  }
  {
    grpc::ClientContext context;
    v1::DeleteItemsRequest request;
    request.set_collection("c");
    request.add_ids(1);
    v1::DeleteItemsResponse response;
    EXPECT_TRUE(writer_->DeleteItems(WithDeadline(&context), request, &response).ok());
    EXPECT_EQ(response.deleted(), 1u);
  }
  {
    grpc::ClientContext context;
    v1::GetItemsRequest request;
    request.set_collection("c");
    request.add_ids(2);
    v1::GetItemsResponse response;
    EXPECT_TRUE(reader_->GetItems(WithDeadline(&context), request, &response).ok());
    EXPECT_EQ(response.ids_size(), 1);
  }
  {
    grpc::ClientContext context;
    v1::DropCollectionRequest request;
    request.set_name("c");
    v1::DropCollectionResponse response;
    EXPECT_EQ(reader_->DropCollection(WithDeadline(&context), request, &response).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    grpc::ClientContext context;
    v1::DropCollectionRequest request;
    request.set_name("c");
    v1::DropCollectionResponse response;
    EXPECT_TRUE(writer_->DropCollection(WithDeadline(&context), request, &response).ok());
  }
  EXPECT_TRUE(Collections().empty());
}

TEST_F(TokenAuthTest, HealthAndReflectionNeedNoTokenAndRejectionsAreCounted) {
  with_metrics_ = true;
  server_.reset();
  SetUp();
  auto channel = Connect(server_->address());
  EXPECT_TRUE(quantd::testing::HealthServing(channel.get()));
  std::string response;
  const grpc::Status status = quantd::testing::RawCall(
      channel.get(), "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
      std::string("\x3a\x00", 2), &response, /*streaming=*/true);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_NE(response.find("quantd.v1.Quantd"), std::string::npos);

  EXPECT_EQ(Create(*anonymous_, "c").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Create(*reader_, "c").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Upsert(*reader_, "c", 1).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  int messages = 0;
  EXPECT_EQ(Export(*anonymous_, "c", &messages).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  const std::string metrics = testing::HttpGet(server_->metrics_address(), "/metrics");
  for (const char* line :
       {"quantd_requests_total{code=\"UNAUTHENTICATED\",method=\"CreateCollection\"} 1",
        "quantd_requests_total{code=\"PERMISSION_DENIED\",method=\"CreateCollection\"} 1",
        "quantd_requests_total{code=\"PERMISSION_DENIED\",method=\"Upsert\"} 1",
        "quantd_requests_total{code=\"UNAUTHENTICATED\",method=\"ExportSids\"} 1"}) {
    EXPECT_NE(metrics.find(line), std::string::npos) << line << "\n" << metrics;
  }
}

// ---- TLS, with certificates made by `openssl` once for the suite. ----

// A CA, a server certificate (SAN localhost, 127.0.0.1) and a client certificate signed by it,
// and an unrelated CA with its own client certificate.
class Pki {
 public:
  Pki() {
    const std::string key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    const auto self_signed = [&](const std::string& name) {
      return absl::StrCat("openssl req -x509 ", key, " -keyout ", name, ".key -out ", name,
                          ".pem -days 2 -subj /CN=", name, " && ");
    };
    const auto signed_by = [&](const std::string& name, const std::string& issuer,
                               const std::string& extensions) {
      return absl::StrCat("printf '", extensions, "' > ", name, ".ext && openssl req ", key,
                          " -keyout ", name, ".key -out ", name, ".csr -subj /CN=", name,
                          " && openssl x509 -req -in ", name, ".csr -CA ", issuer, ".pem -CAkey ",
                          issuer, ".key -CAcreateserial -days 2 -out ", name, ".pem -extfile ",
                          name, ".ext && ");
    };
    const std::string command = absl::StrCat(
        "cd ", dir_.path(), " && ", self_signed("ca"), self_signed("other-ca"),
        signed_by("server", "ca",
                  "subjectAltName=DNS:localhost,IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n"),
        signed_by("client", "ca", "extendedKeyUsage=clientAuth\\n"),
        signed_by("other-client", "other-ca", "extendedKeyUsage=clientAuth\\n"), "true) > ",
        dir_.File("openssl.log"), " 2>&1");
    ok_ = std::system(("(" + command).c_str()) == 0;
    if (!ok_) log_ = ReadText(dir_.File("openssl.log"));
  }
  bool ok() const { return ok_; }
  const std::string& log() const { return log_; }
  std::string File(const std::string& name) const { return dir_.File(name); }

 private:
  TempDir dir_;
  bool ok_ = false;
  std::string log_;
};

// The certificates and openssl's output stay in the Pki's temporary directory: nothing lands in
// the working directory (an openssl.log there once got committed).
TEST(PkiTest, WritesNothingIntoTheWorkingDirectory) {
  TempDir cwd;
  char* previous = getcwd(nullptr, 0);
  ASSERT_NE(previous, nullptr);
  ASSERT_EQ(chdir(cwd.path().c_str()), 0);
  {
    Pki pki;
    EXPECT_TRUE(pki.ok()) << pki.log();
  }
  EXPECT_TRUE(testing::Entries(cwd.path()).empty())
      << "left in the working directory: " << testing::Entries(cwd.path()).front();
  EXPECT_EQ(chdir(previous), 0);
  free(previous);
}

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { pki_ = new Pki(); }
  static void TearDownTestSuite() {
    delete pki_;
    pki_ = nullptr;
  }
  void SetUp() override { ASSERT_TRUE(pki_->ok()) << "openssl failed:\n" << pki_->log(); }

  ServerOptions TlsOptions() {
    ServerOptions options = ServerOptions::Embedded(dir_.path() + "/data", /*sync=*/false);
    options.tls_cert = pki_->File("server.pem");
    options.tls_key = pki_->File("server.key");
    return options;
  }

  void StartServer(const ServerOptions& options) {
    auto server = QuantdServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }

  // Lists collections over a fresh channel with `options`; the call's status.
  grpc::Status ListWith(const ConnectOptions& options) {
    auto stub = StubFor(server_->address(), options);
    if (stub == nullptr) return grpc::Status(grpc::StatusCode::INTERNAL, "no channel");
    v1::ListCollectionsResponse response;
    return List(*stub, &response);
  }

  ConnectOptions Trusting(const std::string& ca) {
    ConnectOptions options;
    options.tls_ca = pki_->File(ca);
    return options;
  }

  static Pki* pki_;
  TempDir dir_;
  std::unique_ptr<QuantdServer> server_;
};

Pki* TlsTest::pki_ = nullptr;

TEST_F(TlsTest, ClientTrustingTheCaConnectsOthersFailAndTheServerKeepsServing) {
  StartServer(TlsOptions());
  EXPECT_TRUE(ListWith(Trusting("ca.pem")).ok());
  ConnectOptions by_name = Trusting("ca.pem");
  by_name.tls_server_name = "localhost";
  EXPECT_TRUE(ListWith(by_name).ok());

  const grpc::Status wrong_ca = ListWith(Trusting("other-ca.pem"));
  EXPECT_EQ(wrong_ca.error_code(), grpc::StatusCode::UNAVAILABLE) << wrong_ca.error_message();
  ConnectOptions wrong_name = Trusting("ca.pem");
  wrong_name.tls_server_name = "quantd.example.com";
  EXPECT_EQ(ListWith(wrong_name).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(ListWith({}).error_code(), grpc::StatusCode::UNAVAILABLE);  // plaintext client

  EXPECT_TRUE(ListWith(Trusting("ca.pem")).ok());
  auto stub = StubFor(server_->address(), Trusting("ca.pem"));
  ASSERT_TRUE(Create(*stub, "c").ok());
  EXPECT_TRUE(Upsert(*stub, "c", 50).ok());
}

TEST_F(TlsTest, TlsAndTokensTogether) {
  WriteFile(dir_.File("tokens"), kTokensFile);
  ServerOptions options = TlsOptions();
  options.tokens_file = dir_.File("tokens");
  StartServer(options);
  ConnectOptions client = Trusting("ca.pem");
  EXPECT_EQ(ListWith(client).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  client.token = kReadToken;
  EXPECT_TRUE(ListWith(client).ok());
  auto reader = StubFor(server_->address(), client);
  EXPECT_EQ(Create(*reader, "c").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  client.token = kWriteToken;
  auto writer = StubFor(server_->address(), client);
  EXPECT_TRUE(Create(*writer, "c").ok());
}

TEST_F(TlsTest, ClientCertificateRequiredWhenTlsClientCaIsSet) {
  ServerOptions options = TlsOptions();
  options.tls_client_ca = pki_->File("ca.pem");
  StartServer(options);
  EXPECT_EQ(ListWith(Trusting("ca.pem")).error_code(), grpc::StatusCode::UNAVAILABLE);
  ConnectOptions stranger = Trusting("ca.pem");
  stranger.tls_cert = pki_->File("other-client.pem");
  stranger.tls_key = pki_->File("other-client.key");
  EXPECT_EQ(ListWith(stranger).error_code(), grpc::StatusCode::UNAVAILABLE);
  ConnectOptions client = Trusting("ca.pem");
  client.tls_cert = pki_->File("client.pem");
  client.tls_key = pki_->File("client.key");
  EXPECT_TRUE(ListWith(client).ok());
  EXPECT_TRUE(quantd::testing::HealthServing(Connect(server_->address(), client)->get()));
}

TEST_F(TlsTest, BadTlsConfigurationFailsStartNamingTheFlagAndPath) {
  WriteFile(dir_.File("garbage.pem"), "not a certificate\n");
  struct Case {
    std::string cert, key, client_ca, expected;
  };
  const std::string cert = pki_->File("server.pem");
  const std::string key = pki_->File("server.key");
  const std::vector<Case> cases = {
      {cert, "", "", "--tls_cert is set without --tls_key"},
      {"", key, "", "--tls_key is set without --tls_cert"},
      {"", "", pki_->File("ca.pem"), "--tls_client_ca is set without --tls_cert"},
      {"/no/cert.pem", key, "", "--tls_cert '/no/cert.pem' cannot be read: No such file"},
      {cert, "/no/key.pem", "", "--tls_key '/no/key.pem' cannot be read"},
      {dir_.File("garbage.pem"), key, "",
       "--tls_cert '" + dir_.File("garbage.pem") + "' holds no PEM certificate"},
      {cert, dir_.File("garbage.pem"), "",
       "--tls_key '" + dir_.File("garbage.pem") + "' holds no unencrypted PEM private key"},
      {cert, pki_->File("client.key"), "",
       "--tls_key '" + pki_->File("client.key") + "' does not match the certificate"},
      {cert, key, dir_.File("garbage.pem"),
       "--tls_client_ca '" + dir_.File("garbage.pem") + "' holds no PEM certificate"},
  };
  for (const Case& c : cases) {
    ServerOptions options = ServerOptions::Embedded(dir_.path() + "/data", /*sync=*/false);
    options.tls_cert = c.cert;
    options.tls_key = c.key;
    options.tls_client_ca = c.client_ca;
    auto server = QuantdServer::Start(options);
    ASSERT_FALSE(server.ok()) << c.expected;
    EXPECT_NE(server.status().message().find(c.expected), std::string::npos)
        << server.status() << "\nexpected: " << c.expected;
  }
}

TEST(ClientConnectTest, ClearErrorsForUnreadableFilesAndBadTokens) {
  ConnectOptions options;
  options.tls_ca = "/no/ca.pem";
  EXPECT_EQ(Connect("127.0.0.1:1", options).status().message(),
            "tls_ca '/no/ca.pem' cannot be read: No such file or directory");
  options = {};
  options.tls_cert = "/no/cert.pem";
  EXPECT_NE(Connect("127.0.0.1:1", options).status().message().find("go together"),
            std::string::npos);
  options = {};
  options.token = "token with spaces 0123456789";
  const auto bad = Connect("127.0.0.1:1", options);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message().find("spaces"), std::string::npos);
}

// ---- The real binaries. ----

TEST(SecurityProcessTest, QuantdRefusesToStartWithBadTokensFileOrTlsFlags) {
  TempDir dir;
  WriteFile(dir.File("bad-tokens"),
            "# tokens\nread hunter2-is-my-token-0123\nroot abcdefghijklmnopqrstuvwxyz\n");
  struct Case {
    std::vector<std::string> args;
    std::vector<std::string> environment;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {{"--tokens_file=" + dir.File("bad-tokens")},
       {},
       "--tokens_file '" + dir.File("bad-tokens") + "' line 3: the role"},
      {{},
       {"QUANTD_TOKENS_FILE=" + dir.File("no-such-file")},
       "--tokens_file '" + dir.File("no-such-file") + "' cannot be read"},
      {{"--tls_cert=" + dir.File("cert.pem")}, {}, "--tls_cert is set without --tls_key"},
      {{"--tls_cert=" + dir.File("cert.pem"), "--tls_key=" + dir.File("key.pem")},
       {},
       "--tls_cert '" + dir.File("cert.pem") + "' cannot be read"},
  };
  for (const Case& c : cases) {
    ServerProcess quantd(dir.path() + "/data", dir.File("quantd.log"), c.args, c.environment);
    const int status = quantd.Wait(std::chrono::seconds(30));
    const std::string log = ReadText(dir.File("quantd.log"));
    ASSERT_TRUE(WIFEXITED(status)) << log;
    EXPECT_NE(WEXITSTATUS(status), 0) << log;
    EXPECT_NE(log.find(c.expected), std::string::npos) << log << "\nexpected: " << c.expected;
    EXPECT_EQ(log.find("hunter2"), std::string::npos) << log;
    EXPECT_EQ(log.find("abcdefghijklmnop"), std::string::npos) << log;
  }
}

TEST(SecurityProcessTest, QuantctlWithTlsAndTokensAgainstTheBinary) {
  Pki pki;
  ASSERT_TRUE(pki.ok()) << pki.log();
  TempDir dir;
  WriteFile(dir.File("tokens"), kTokensFile);
  WriteFile(dir.File("read-token"), std::string(kReadToken) + "\n");
  WriteFile(dir.File("write-token"), std::string(kWriteToken) + "\n# second line ignored\n");
  // quantd configured through the environment; it runs until the test kills it.
  const std::string log = dir.File("quantd.log");
  std::vector<std::string> environment = {"QUANTD_TLS_CERT=" + pki.File("server.pem"),
                                          "QUANTD_TLS_KEY=" + pki.File("server.key"),
                                          "QUANTD_TOKENS_FILE=" + dir.File("tokens")};
  ServerProcess server(dir.path() + "/data", log, {}, environment);
  const std::string address = server.WaitReady(/*health_check=*/false);
  ASSERT_FALSE(address.empty()) << ReadText(log);
  const std::string text = ReadText(log);
  EXPECT_NE(text.find("TLS on with certificate " + pki.File("server.pem")), std::string::npos)
      << text;
  EXPECT_NE(text.find("bearer-token authorization on: 1 read and 1 write tokens"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("0123456789abcdef"), std::string::npos) << text;

  const std::string quantctl = absl::StrCat(QUANTCTL_BINARY, " --addr ", address, " --timeout 10");
  const std::string tls = " --tls_ca " + pki.File("ca.pem");
  std::string out;
  // A write with --token_file, a read with QUANTCTL_TOKEN and QUANTCTL_TLS_CA.
  EXPECT_EQ(RunShell(quantctl + tls + " --token_file " + dir.File("write-token") +
                         " create secure --dim 4",
                     &out),
            0)
      << out;
  EXPECT_EQ(RunShell(absl::StrCat("QUANTCTL_TOKEN=", kReadToken,
                                  " QUANTCTL_TLS_CA=", pki.File("ca.pem"), " ", quantctl, " list"),
                     &out),
            0)
      << out;
  EXPECT_NE(out.find("secure"), std::string::npos) << out;
  // QUANTCTL_TOKEN_FILE with the read token: a write is refused, exit code 1.
  EXPECT_EQ(RunShell(absl::StrCat("QUANTCTL_TOKEN_FILE=", dir.File("read-token"), " ", quantctl,
                                  tls, " create other --dim 4"),
                     &out),
            1)
      << out;
  EXPECT_NE(out.find("PERMISSION_DENIED: CreateCollection needs the write role"), std::string::npos)
      << out;
  // --token_file wins over QUANTCTL_TOKEN.
  EXPECT_EQ(RunShell(absl::StrCat("QUANTCTL_TOKEN=wrong-token-0123456789 ", quantctl, tls,
                                  " --token_file ", dir.File("write-token"), " drop secure"),
                     &out),
            0)
      << out;
  // Without a token, without TLS, with an unreadable token file.
  EXPECT_EQ(RunShell(quantctl + tls + " list", &out), 1) << out;
  EXPECT_NE(out.find("UNAUTHENTICATED: missing or invalid bearer token"), std::string::npos) << out;
  EXPECT_EQ(RunShell(absl::StrCat("QUANTCTL_TOKEN=", kReadToken, " ", quantctl, " list"), &out), 1)
      << out;
  EXPECT_NE(out.find("UNAVAILABLE"), std::string::npos) << out;
  EXPECT_EQ(RunShell(quantctl + tls + " --token_file /no/token list", &out), 2) << out;
  EXPECT_NE(out.find("--token_file '/no/token' cannot be read"), std::string::npos) << out;
  EXPECT_EQ(RunShell(quantctl + " --help", &out), 0) << out;
  EXPECT_NE(out.find("QUANTCTL_TOKEN"), std::string::npos) << out;
}

}  // namespace
}  // namespace quantd
