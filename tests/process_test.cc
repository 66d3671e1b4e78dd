// The real binaries as a user runs them: quantd killed with SIGKILL keeps every acknowledged
// write; SIGTERM drains and closes cleanly; quantctl drives every RPC.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "absl/strings/str_format.h"
#include "client/client.h"
#include "google/protobuf/util/json_util.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "io/vector_file.h"
#include "tests/grpc_raw.h"
#include "tests/process_support.h"
#include "tests/test_support.h"

namespace quantd {
namespace {

using ::quantd::testing::CreateCollection;
using ::quantd::testing::DataFile;
using ::quantd::testing::ItemCount;
using ::quantd::testing::ReadText;
using ::quantd::testing::RunQuantctl;
using ::quantd::testing::RunShell;
using ::quantd::testing::ServerProcess;
using ::quantd::testing::TempDir;

TEST(ProcessTest, SigkillKeepsEveryAcknowledgedBatch) {
  auto base = ReadMatrix(DataFile("sift5k/sift5k_base.fvecs"));
  ASSERT_TRUE(base.ok()) << base.status();
  const int64_t d = base->dim;
  constexpr int64_t kBatchRows = 40;
  const int64_t batches = base->rows / kBatchRows;
  TempDir dir;
  const std::string data_dir = dir.path() + "/data";

  std::atomic<int64_t> acknowledged{0};
  {
    ServerProcess server(data_dir, dir.File("first.log"), {"--sync=true"});
    const std::string address = server.WaitReady();
    ASSERT_FALSE(address.empty());
    auto stub = v1::Quantd::NewStub(Connect(address));
    CreateCollection(*stub, "sift", static_cast<uint32_t>(d));

    // The writer streams batches without waiting; acknowledgements are counted as they come,
    // and the server is killed mid-stream once a third of the batches are acknowledged.
    grpc::ClientContext context;
    auto stream = stub->Upsert(&context);
    std::thread writer([&] {
      for (int64_t b = 0; b < batches; ++b) {
        v1::UpsertRequest request;
        request.set_collection("sift");
        for (int64_t r = b * kBatchRows; r < (b + 1) * kBatchRows; ++r) {
          request.add_ids(static_cast<uint64_t>(r));
          request.mutable_vectors()->Add(base->values.begin() + r * d,
                                         base->values.begin() + (r + 1) * d);
        }
        if (!stream->Write(request)) return;
      }
      stream->WritesDone();
    });
    v1::UpsertResponse ack;
    while (stream->Read(&ack)) {
      ASSERT_EQ(static_cast<int64_t>(ack.batch_index()), acknowledged.load());
      if (++acknowledged == batches / 3) server.Signal(SIGKILL);
    }
    writer.join();
    EXPECT_FALSE(stream->Finish().ok());
    const int status = server.Wait();
    ASSERT_TRUE(WIFSIGNALED(status));
    EXPECT_EQ(WTERMSIG(status), SIGKILL);
  }
  ASSERT_GE(acknowledged.load(), batches / 3);
  ASSERT_LT(acknowledged.load(), batches) << "the kill came too late to test anything";

  ServerProcess server(data_dir, dir.File("second.log"));
  const std::string address = server.WaitReady();
  ASSERT_FALSE(address.empty());
  auto stub = v1::Quantd::NewStub(Connect(address));
  uint64_t found_rows = 0;
  for (int64_t b = 0; b < batches; ++b) {
    grpc::ClientContext context;
    v1::GetItemsRequest request;
    request.set_collection("sift");
    for (int64_t r = b * kBatchRows; r < (b + 1) * kBatchRows; ++r) request.add_ids(r);
    v1::GetItemsResponse response;
    ASSERT_TRUE(stub->GetItems(&context, request, &response).ok());
    if (b < acknowledged) {
      ASSERT_EQ(response.ids_size(), kBatchRows) << "acknowledged batch " << b << " lost";
    } else {
      // Unacknowledged batches are all there (committed, ack lost) or not at all.
      ASSERT_TRUE(response.ids_size() == 0 || response.ids_size() == kBatchRows)
          << "batch " << b << " half applied: " << response.ids_size();
    }
    for (int i = 0; i < response.ids_size(); ++i) {
      const int64_t row = static_cast<int64_t>(response.ids(i));
      ASSERT_EQ(std::memcmp(response.vectors().data() + i * d, base->values.data() + row * d,
                            static_cast<size_t>(d) * sizeof(float)),
                0)
          << "row " << row << " differs after the crash";
    }
    found_rows += static_cast<uint64_t>(response.ids_size());
  }
  EXPECT_EQ(ItemCount(*stub, "sift"), found_rows);
}

TEST(ProcessTest, SigtermDrainsClosesAndRestartServesTheSameData) {
  TempDir dir;
  const std::string data_dir = dir.path() + "/data";
  const std::string path = DataFile("movielens/ml-10m_base.fvecs");
  auto reader = VectorReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  {
    // Configuration through the environment this time (QUANTD_SYNC=false).
    ServerProcess server(data_dir, dir.File("first.log"), {}, {"QUANTD_SYNC=false"});
    const std::string address = server.WaitReady();
    ASSERT_FALSE(address.empty());
    EXPECT_NE(ReadText(dir.File("first.log")).find("sync off"), std::string::npos);
    auto stub = v1::Quantd::NewStub(Connect(address));
    CreateCollection(*stub, "ml", static_cast<uint32_t>((*reader)->dim()));
    auto uploaded = UploadVectors(*stub, "ml", **reader, {});
    ASSERT_TRUE(uploaded.ok()) << uploaded.status();
    EXPECT_EQ(uploaded->rows, (*reader)->rows());
    server.Signal(SIGTERM);
    const int status = server.Wait();
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0);
    EXPECT_NE(ReadText(dir.File("first.log")).find("stopped cleanly"), std::string::npos);
  }
  ServerProcess server(data_dir, dir.File("second.log"));
  const std::string address = server.WaitReady();
  ASSERT_FALSE(address.empty());
  auto stub = v1::Quantd::NewStub(Connect(address));
  EXPECT_EQ(ItemCount(*stub, "ml"), static_cast<uint64_t>((*reader)->rows()));
  auto all = ReadMatrix(path);
  ASSERT_TRUE(all.ok());
  grpc::ClientContext context;
  v1::GetItemsRequest request;
  request.set_collection("ml");
  for (int64_t r = 0; r < all->rows; r += 97) request.add_ids(r);
  v1::GetItemsResponse response;
  ASSERT_TRUE(stub->GetItems(&context, request, &response).ok());
  ASSERT_EQ(response.ids_size(), request.ids_size());
  for (int i = 0; i < response.ids_size(); ++i) {
    ASSERT_EQ(std::memcmp(response.vectors().data() + i * all->dim,
                          all->values.data() + response.ids(i) * all->dim, all->dim * 4),
              0);
  }
}

TEST(ProcessTest, StartupFailsClearlyOnBadConfiguration) {
  TempDir dir;
  testing::WriteFile(dir.File("plain-file"), "x");
  ServerProcess bad_dir(dir.File("plain-file") + "/data", dir.File("bad_dir.log"));
  const int status = bad_dir.Wait();
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  EXPECT_NE(ReadText(dir.File("bad_dir.log")).find("cannot start"), std::string::npos);

  ServerProcess bad_env(dir.path() + "/data", dir.File("bad_env.log"), {}, {"QUANTD_SYNC=maybe"});
  const int env_status = bad_env.Wait();
  ASSERT_TRUE(WIFEXITED(env_status));
  EXPECT_EQ(WEXITSTATUS(env_status), 2);
  EXPECT_NE(ReadText(dir.File("bad_env.log")).find("QUANTD_SYNC='maybe'"), std::string::npos);
}

TEST(ProcessTest, HelpAndVersionExitZeroAndBadFlagsExitTwoNamingThem) {
  const std::string quantd = QUANTD_BINARY;
  std::string out;
  for (const char* help : {" --help", " -h", " --helpfull"}) {
    EXPECT_EQ(RunShell(quantd + help, &out), 0) << help << ": " << out;
    // Every flag of quantd with its help and its environment variable, and no build paths.
    EXPECT_NE(out.find("--data_dir"), std::string::npos) << out;
    EXPECT_NE(out.find("QUANTD_DATA_DIR"), std::string::npos) << out;
    EXPECT_NE(out.find("RocksDB data directory"), std::string::npos) << out;
    EXPECT_NE(out.find("--shutdown_grace"), std::string::npos) << out;
    EXPECT_NE(out.find("Usage: quantd"), std::string::npos) << out;
    EXPECT_EQ(out.find("quantd: quantd:"), std::string::npos) << out;
    EXPECT_EQ(out.find("No flags matched"), std::string::npos) << out;
    EXPECT_EQ(out.find(".cc"), std::string::npos) << out;
  }
  EXPECT_EQ(RunShell(quantd + " --version", &out), 0) << out;
  EXPECT_TRUE(std::regex_match(out, std::regex("quantd \\d+\\.\\d+\\.\\d+\n"))) << out;

  // Mistakes: exit code 2 and a message naming the argument.
  const std::pair<std::string, std::string> mistakes[] = {
      {"--frobnicate", "--frobnicate"},
      {"--max_message_mb=abc", "max_message_mb"},
      {"--shutdown_grace", "shutdown_grace"},  // needs a value
      {"--sync=maybe", "sync"},
      {"stray-argument", "stray-argument"},
  };
  for (const auto& [args, named] : mistakes) {
    EXPECT_EQ(RunShell(quantd + " " + args, &out), 2) << args << ": " << out;
    EXPECT_NE(out.find(named), std::string::npos) << args << ": " << out;
  }
}

TEST(ProcessTest, ListenPortsAbove65535StopStartupNamingTheFlag) {
  TempDir dir;
  const std::pair<std::string, std::string> bad[] = {
      {"--listen=127.0.0.1:99999", "--listen '127.0.0.1:99999'"},
      {"--listen=127.0.0.1:65536", "--listen '127.0.0.1:65536'"},
      {"--health_listen=127.0.0.1:65536", "--health_listen '127.0.0.1:65536'"},
      {"--metrics_addr=127.0.0.1:70000", "--metrics_addr '127.0.0.1:70000'"},
      {"--listen=127.0.0.1:", "--listen '127.0.0.1:'"},
  };
  for (const auto& [flag, message] : bad) {
    // ServerProcess puts its own --listen first; the later flag wins.
    ServerProcess server(dir.path() + "/data", dir.File("server.log"), {flag});
    const int status = server.Wait(std::chrono::seconds(20));
    const std::string log = ReadText(dir.File("server.log"));
    ASSERT_TRUE(WIFEXITED(status)) << flag << " was served: " << log;
    EXPECT_EQ(WEXITSTATUS(status), 2) << flag << ": " << log;
    EXPECT_NE(log.find(message), std::string::npos) << log;
    EXPECT_NE(log.find("0..65535"), std::string::npos) << log;
  }
}

// A grpc.health.v1 Watch stream open on the main port and one on the plaintext health port
// get NOT_SERVING and then end as soon as SIGTERM arrives, so they do not hold the drain for
// the whole --shutdown_grace.
TEST(ProcessTest, SigtermEndsHealthWatchStreamsAtOnce) {
  using grpc::health::v1::Health;
  using grpc::health::v1::HealthCheckRequest;
  using grpc::health::v1::HealthCheckResponse;
  TempDir dir;
  ServerProcess server(dir.path() + "/data", dir.File("server.log"),
                       {"--shutdown_grace=20", "--health_listen=127.0.0.1:0"});
  const std::string address = server.WaitReady();
  ASSERT_FALSE(address.empty());
  std::smatch match;
  const std::string log = ReadText(dir.File("server.log"));
  ASSERT_TRUE(std::regex_search(log, match, std::regex(R"(health on \S+ \(port (\d+)\))"))) << log;
  const std::string health_address = "127.0.0.1:" + match[1].str();

  struct Watch {
    std::unique_ptr<Health::Stub> stub;
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientReader<HealthCheckResponse>> reader;
  };
  std::unique_ptr<Watch> watches[3];
  const std::string targets[3] = {address, health_address, address};
  const std::string services[3] = {"", "", "quantd.v1.Quantd"};
  for (int i = 0; i < 3; ++i) {
    watches[i] = std::make_unique<Watch>();
    Watch& watch = *watches[i];
    watch.stub = Health::NewStub(Connect(targets[i]));
    watch.context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(15));
    HealthCheckRequest request;
    request.set_service(services[i]);
    watch.reader = watch.stub->Watch(&watch.context, request);
    HealthCheckResponse response;
    ASSERT_TRUE(watch.reader->Read(&response)) << i;
    EXPECT_EQ(response.status(), HealthCheckResponse::SERVING) << i;
  }

  const auto start = std::chrono::steady_clock::now();
  server.Signal(SIGTERM);
  for (int i = 0; i < 3; ++i) {
    HealthCheckResponse response;
    ASSERT_TRUE(watches[i]->reader->Read(&response)) << i;
    EXPECT_EQ(response.status(), HealthCheckResponse::NOT_SERVING) << i;
    EXPECT_FALSE(watches[i]->reader->Read(&response)) << "stream " << i << " still open";
    const grpc::Status status = watches[i]->reader->Finish();
    EXPECT_NE(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << i;
    // Released as a client does once its call ended, so the server sees the connection close
    // (a gRPC server's drain also waits for its connections to go).
    watches[i].reset();
  }
  const double streams_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(streams_seconds, 2.0) << "the Watch streams ended " << streams_seconds
                                  << " s after SIGTERM";
  const int status = server.Wait(std::chrono::seconds(30));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(WIFEXITED(status)) << ReadText(dir.File("server.log"));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_LT(seconds, 3.0) << "SIGTERM with Watch streams open took " << seconds << " s\n"
                          << ReadText(dir.File("server.log"));
  EXPECT_NE(ReadText(dir.File("server.log")).find("stopped cleanly"), std::string::npos);
}

TEST(ProcessTest, QuantctlWalkThrough) {
  TempDir dir;
  ServerProcess server(dir.path() + "/data", dir.File("server.log"));
  const std::string address = server.WaitReady();
  ASSERT_FALSE(address.empty());
  const std::string sift = DataFile("sift5k/sift5k_base.fvecs");
  const std::string query = DataFile("sift5k/sift5k_query.fvecs");
  std::string out;

  EXPECT_EQ(RunQuantctl(address, "create sift --dim 128 --metric l2", &out), 0) << out;
  EXPECT_EQ(RunQuantctl(address, "upsert sift " + sift + " --id-offset 1000", &out), 0) << out;
  EXPECT_NE(out.find("upserted 5000 rows (5000 new)"), std::string::npos) << out;
  EXPECT_EQ(RunQuantctl(address, "describe sift --json", &out), 0) << out;
  // --json prints the response in proto3 JSON form: uint64 values are strings.
  EXPECT_NE(out.find("\"item_count\":\"5000\""), std::string::npos) << out;

  // Ids from a text file for the 100 query vectors.
  std::string ids;
  for (int i = 0; i < 100; ++i) ids += std::to_string(900000 + i) + "\n";
  testing::WriteFile(dir.File("ids.txt"), ids);
  EXPECT_EQ(RunQuantctl(address, "upsert sift " + query + " --ids " + dir.File("ids.txt"), &out), 0)
      << out;
  EXPECT_EQ(RunQuantctl(address, "list", &out), 0) << out;
  EXPECT_NE(out.find("5100"), std::string::npos) << out;

  // get --json returns the exact floats of row 0 of the file.
  auto base = ReadMatrix(sift, 1);
  ASSERT_TRUE(base.ok());
  EXPECT_EQ(RunQuantctl(address, "get sift 1000 77 --json", &out), 0) << out;
  v1::GetItemsResponse items;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(out, &items).ok()) << out;
  ASSERT_EQ(items.ids_size(), 1) << out;
  EXPECT_EQ(items.ids(0), 1000u);
  EXPECT_EQ(items.dimension(), 128u);
  ASSERT_EQ(items.vectors_size(), 128) << out;
  EXPECT_EQ(std::memcmp(items.vectors().data(), base->values.data(), 128 * sizeof(float)), 0)
      << out;
  EXPECT_NE(out.find("\"missing_ids\":[\"77\"]"), std::string::npos) << out;

  // Semantic IDs: train (following the job), stats, encode, lookup, export, jobs.
  EXPECT_EQ(RunQuantctl(address, "train sift --levels 16,16 --balanced --seed 3", &out), 0) << out;
  EXPECT_NE(out.find("succeeded"), std::string::npos) << out;
  EXPECT_EQ(RunQuantctl(address, "stats sift", &out), 0) << out;
  EXPECT_NE(out.find("tokenizer version 1 (balanced): 2 levels [16 16]"), std::string::npos) << out;
  EXPECT_NE(out.find("collisions: rate"), std::string::npos) << out;
  EXPECT_EQ(RunQuantctl(address, "stats sift --json", &out), 0) << out;
  EXPECT_NE(out.find("\"items\":\"5100\""), std::string::npos) << out;
  EXPECT_EQ(RunQuantctl(address, "encode sift 1000 --json", &out), 0) << out;
  // Parsed as any script would (the printer writes '<' as \u003c).
  v1::EncodeResponse encoded;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(out, &encoded).ok()) << out;
  ASSERT_EQ(encoded.sids_size(), 1) << out;
  const std::string sid = encoded.sids(0).tokens();
  ASSERT_EQ(sid.rfind("<a_", 0), 0u) << out;
  EXPECT_EQ(RunQuantctl(address, "lookup sift '" + sid + "'", &out), 0) << out;
  EXPECT_NE(out.find("1000\t" + sid), std::string::npos) << out;
  EXPECT_EQ(RunQuantctl(address, "encode sift --vectors " + query + " --max-rows 3", &out), 0)
      << out;
  EXPECT_NE(out.find("row 2\t<a_"), std::string::npos) << out;
  EXPECT_EQ(RunQuantctl(address,
                        "export-sids sift --index " + dir.File("index.json") + " --codes " +
                            dir.File("codes.npy"),
                        &out),
            0)
      << out;
  EXPECT_NE(out.find("exported 5100 semantic IDs"), std::string::npos) << out;
  const std::string index = ReadText(dir.File("index.json"));
  EXPECT_NE(index.find("\"1000\": [\"<a_"), std::string::npos) << index.substr(0, 200);
  auto codes = ReadIntMatrix(dir.File("codes.npy"));
  ASSERT_TRUE(codes.ok()) << codes.status();
  EXPECT_EQ(codes->rows, 5100);
  EXPECT_EQ(codes->dim, 3);
  EXPECT_EQ(RunQuantctl(address, "jobs sift", &out), 0) << out;
  EXPECT_NE(out.find("job-000001"), std::string::npos) << out;
  EXPECT_EQ(RunQuantctl(address, "train sift --levels 99999", &out), 1);
  EXPECT_NE(out.find("codebook_sizes[0] = 99999"), std::string::npos) << out;
  EXPECT_EQ(RunQuantctl(address, "train sift --levels 4,x", &out), 2);

  EXPECT_EQ(RunQuantctl(address, "delete sift 1000 1001 3", &out), 0) << out;
  EXPECT_NE(out.find("deleted 2 items (1 did not exist)"), std::string::npos) << out;

  // Mistakes: exit code 1 for what the server refuses, 2 for usage; messages name the problem.
  EXPECT_EQ(RunQuantctl(address, "create sift --dim 128", &out), 1);
  EXPECT_NE(out.find("ALREADY_EXISTS"), std::string::npos) << out;
  EXPECT_EQ(RunQuantctl(address, "create small --dim 4", &out), 0) << out;
  EXPECT_EQ(RunQuantctl(address, "upsert small " + sift, &out), 1);
  EXPECT_NE(out.find("dimension 128"), std::string::npos) << out;
  EXPECT_EQ(RunQuantctl(address, "upsert nope " + sift, &out), 1);
  EXPECT_NE(out.find("NOT_FOUND"), std::string::npos) << out;
  EXPECT_EQ(RunQuantctl(address, "upsert sift /no/such/file.fvecs", &out), 1);
  EXPECT_EQ(RunQuantctl(address, "create x --dim 3 --metric hamming", &out), 2);
  EXPECT_EQ(RunQuantctl(address, "create x --dim 3 --bogus 1", &out), 2);
  EXPECT_NE(out.find("unknown option --bogus"), std::string::npos) << out;
  EXPECT_EQ(RunQuantctl(address, "frobnicate", &out), 2);
  EXPECT_EQ(RunQuantctl(address, "get sift notanumber", &out), 2);
  for (const char* command :
       {"create", "list", "describe", "drop", "upsert", "get", "delete", "inspect"}) {
    EXPECT_EQ(RunQuantctl(address, std::string(command) + " --help", &out), 0) << command;
    EXPECT_NE(out.find("Usage: quantctl"), std::string::npos) << out;
  }
  EXPECT_EQ(RunQuantctl(address, "inspect " + sift, &out), 0) << out;
  EXPECT_NE(out.find("fvecs, float32, 5000 rows x 128 dimensions"), std::string::npos) << out;

  EXPECT_EQ(RunQuantctl(address, "drop sift", &out), 0) << out;
  EXPECT_NE(out.find("5098 items"), std::string::npos) << out;
  EXPECT_EQ(RunQuantctl(address, "describe sift", &out), 1);
}

TEST(ProcessTest, QuantctlIndexWalkThrough) {
  TempDir dir;
  ServerProcess server(dir.path() + "/data", dir.File("server.log"));
  const std::string address = server.WaitReady();
  ASSERT_FALSE(address.empty());
  const std::string sift = DataFile("sift5k/sift5k_base.fvecs");
  const std::string query = DataFile("sift5k/sift5k_query.fvecs");
  std::string out;
  EXPECT_EQ(RunQuantctl(address, "create sift --dim 128", &out), 0) << out;
  EXPECT_EQ(RunQuantctl(address, "upsert sift " + sift, &out), 0) << out;

  // Before training: the server's FAILED_PRECONDITION, exit code 1.
  EXPECT_EQ(RunQuantctl(address, "search sift --queries " + query, &out), 1);
  EXPECT_NE(out.find("FAILED_PRECONDITION"), std::string::npos) << out;
  EXPECT_NE(out.find("TrainIndex"), std::string::npos) << out;

  EXPECT_EQ(RunQuantctl(address, "train-index sift --seed 3", &out), 0) << out;
  EXPECT_NE(out.find("succeeded"), std::string::npos) << out;
  EXPECT_EQ(RunQuantctl(address, "stats sift", &out), 0) << out;
  EXPECT_NE(out.find("index version 1: IVF128,PQ32x8 on 5000 items (40 bytes/vector"),
            std::string::npos)
      << out;
  EXPECT_EQ(RunQuantctl(address, "stats sift --json", &out), 0) << out;
  EXPECT_NE(out.find("\"index\":{\"version\":1,\"nlist\":\"128\",\"m\":32,\"nbits\":8"),
            std::string::npos)
      << out;

  // Readable default, JSON, and .ivecs output that matches the ground truth well.
  EXPECT_EQ(RunQuantctl(address, "search sift --queries " + query + " --k 3 --max-rows 2", &out), 0)
      << out;
  EXPECT_NE(out.find("query 1: "), std::string::npos) << out;
  EXPECT_EQ(out.find("query 2: "), std::string::npos) << out;
  EXPECT_EQ(
      RunQuantctl(address, "search sift --queries " + query + " --k 2 --max-rows 1 --json", &out),
      0)
      << out;
  EXPECT_NE(out.find("{\"results\":[{\"ids\":[\""), std::string::npos) << out;
  EXPECT_NE(out.find("\"index_version\":1,\"nprobe\":16,\"exact\":false}"), std::string::npos)
      << out;
  EXPECT_EQ(RunQuantctl(address,
                        "search sift --queries " + query + " --k 10 --nprobe 32 --refine 10 " +
                            "--output " + dir.File("ids.ivecs"),
                        &out),
            0)
      << out;
  EXPECT_NE(out.find("wrote 100 queries"), std::string::npos) << out;
  auto found = ReadIntMatrix(dir.File("ids.ivecs"));
  ASSERT_TRUE(found.ok()) << found.status();
  auto truth = ReadIntMatrix(DataFile("sift5k/sift5k_groundtruth.ivecs"));
  ASSERT_TRUE(truth.ok()) << truth.status();
  ASSERT_EQ(found->rows, 100);
  ASSERT_EQ(found->dim, 10);
  int hits = 0;
  for (int64_t q = 0; q < 100; ++q) {
    for (int64_t i = 0; i < 10; ++i) {
      for (int64_t j = 0; j < 10; ++j) {
        hits += found->values[q * 10 + i] == truth->values[q * truth->dim + j];
      }
    }
  }
  EXPECT_GT(hits, 900);

  // Usage mistakes exit 2, server refusals 1.
  EXPECT_EQ(RunQuantctl(address, "search sift", &out), 2);
  EXPECT_NE(out.find("give --queries FILE or --like ID"), std::string::npos) << out;
  EXPECT_EQ(RunQuantctl(address, "search sift --queries " + query + " --k 0", &out), 2);
  EXPECT_EQ(RunQuantctl(address, "search sift --queries " + query + " --k 5000", &out), 1);
  EXPECT_NE(out.find("k 5000 is outside 1..1024"), std::string::npos) << out;
  EXPECT_EQ(RunQuantctl(address, "train-index sift --nbits 5", &out), 1);
  EXPECT_NE(out.find("nbits 5 is not 4 or 8"), std::string::npos) << out;
  for (const char* command : {"train-index", "search"}) {
    EXPECT_EQ(RunQuantctl(address, std::string(command) + " --help", &out), 0) << command;
    EXPECT_NE(out.find("Usage: quantctl"), std::string::npos) << out;
  }
}

}  // namespace
}  // namespace quantd
