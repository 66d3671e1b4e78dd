// Faults with the real binary: SIGKILL during a backup and during a training job, a corrupt
// model blob, an unusable data directory and a full disk (a file-size limit). Each test bounds
// its own time, stops its processes and removes its directories.
#include <pwd.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "client/client.h"
#include "gtest/gtest.h"
#include "io/vector_file.h"
#include "quantd/storage/records.pb.h"
#include "rocksdb/db.h"
#include "server/db.h"
#include "server/keys.h"
#include "tests/process_support.h"
#include "tests/test_support.h"

namespace quantd {
namespace {

namespace fs = std::filesystem;
using ::quantd::testing::ChildSetup;
using ::quantd::testing::CreateCollection;
using ::quantd::testing::DataFile;
using ::quantd::testing::Entries;
using ::quantd::testing::FashionMnistFile;
using ::quantd::testing::GetJob;
using ::quantd::testing::ItemCount;
using ::quantd::testing::ReadText;
using ::quantd::testing::RunQuantctl;
using ::quantd::testing::ServerProcess;
using ::quantd::testing::TempDir;
using Clock = std::chrono::steady_clock;

// A fresh directory under /dev/shm (tmpfs) when that is another filesystem than the system
// temp dir, so a backup there copies its files instead of hard-linking them; removed with the
// object. Empty path() if there is no such filesystem.
class ShmDir {
 public:
  ShmDir() {
    struct stat shm, tmp;
    if (stat("/dev/shm", &shm) != 0 || stat(fs::temp_directory_path().c_str(), &tmp) != 0 ||
        shm.st_dev == tmp.st_dev) {
      return;
    }
    std::string pattern = "/dev/shm/quantd-fault-XXXXXX";
    if (mkdtemp(pattern.data()) != nullptr) path_ = pattern;
  }
  ~ShmDir() {
    std::error_code ignored;
    if (!path_.empty()) fs::remove_all(path_, ignored);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

void Upload(v1::Quantd::Stub& stub, const std::string& collection, const std::string& path,
            int64_t rows) {
  auto reader = VectorReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  UploadOptions options;
  options.max_rows = rows;
  auto uploaded = UploadVectors(stub, collection, **reader, options);
  ASSERT_TRUE(uploaded.ok()) << uploaded.status();
}

// Starts a tokenizer (`levels` non-empty) or index training job; returns its id.
std::string StartJob(v1::Quantd::Stub& stub, const std::string& collection,
                     std::vector<uint32_t> levels, bool balanced = false, uint32_t iterations = 5) {
  grpc::ClientContext context;
  v1::Job job;
  grpc::Status status;
  if (levels.empty()) {
    v1::TrainIndexRequest request;
    request.set_collection(collection);
    request.set_seed(3);
    request.set_m(16);  // small and quick: these tests need an index, not a good one
    request.set_coarse_iterations(5);
    request.set_pq_iterations(5);
    status = stub.TrainIndex(&context, request, &job);
  } else {
    v1::TrainTokenizerRequest request;
    request.set_collection(collection);
    request.mutable_codebook_sizes()->Add(levels.begin(), levels.end());
    request.set_balanced(balanced);
    request.set_max_iterations(iterations);
    request.set_seed(3);
    status = stub.TrainTokenizer(&context, request, &job);
  }
  EXPECT_TRUE(status.ok()) << status.error_message();
  return job.id();
}

// Polls a job until it ends (at most 60 s).
v1::Job WaitJob(v1::Quantd::Stub& stub, const std::string& id) {
  v1::Job job;
  for (int i = 0; i < 3000; ++i) {
    job = GetJob(stub, id);
    if (job.state() != v1::JOB_STATE_PENDING && job.state() != v1::JOB_STATE_RUNNING) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return job;
}

grpc::Status Encode(v1::Quantd::Stub& stub, const std::string& collection,
                    const std::vector<uint64_t>& ids, const std::vector<float>& vectors,
                    v1::EncodeResponse* response) {
  grpc::ClientContext context;
  v1::EncodeRequest request;
  request.set_collection(collection);
  request.mutable_ids()->Add(ids.begin(), ids.end());
  request.mutable_vectors()->Add(vectors.begin(), vectors.end());
  return stub.Encode(&context, request, response);
}

grpc::Status Search(v1::Quantd::Stub& stub, const std::string& collection,
                    const std::vector<float>& queries, v1::SearchResponse* response) {
  grpc::ClientContext context;
  v1::SearchRequest request;
  request.set_collection(collection);
  request.mutable_queries()->Add(queries.begin(), queries.end());
  request.set_k(10);
  request.set_nprobe(8);
  return stub.Search(&context, request, response);
}

grpc::Status Stats(v1::Quantd::Stub& stub, const std::string& collection,
                   v1::GetStatsResponse* response) {
  grpc::ClientContext context;
  v1::GetStatsRequest request;
  request.set_collection(collection);
  return stub.GetStats(&context, request, response);
}

// One Upsert stream of one batch: ids first..first+n-1, every value `value`.
grpc::Status UpsertBatch(v1::Quantd::Stub& stub, const std::string& collection, uint64_t first,
                         int n, int dim, float value) {
  grpc::ClientContext context;
  auto stream = stub.Upsert(&context);
  v1::UpsertRequest request;
  request.set_collection(collection);
  for (int i = 0; i < n; ++i) request.add_ids(first + i);
  request.mutable_vectors()->Resize(n * dim, value);
  stream->Write(request);
  stream->WritesDone();
  v1::UpsertResponse ack;
  while (stream->Read(&ack)) {
  }
  return stream->Finish();
}

TEST(FaultTest, SigkillDuringBackupLeavesNoFinishedLookingBackup) {
  const auto test_start = Clock::now();
  TempDir dir;
  ShmDir shm;  // another filesystem: the checkpoint copies 188 MB instead of linking
  const std::string data_dir = dir.path() + "/data";
  const std::string backup_dir = shm.path().empty() ? dir.path() + "/backups" : shm.path();
  const std::vector<std::string> flags = {"--sync=false", "--backup_dir=" + backup_dir};
  const std::string fmnist = FashionMnistFile("train-images-idx3-ubyte.gz");
  auto images = ReadMatrix(fmnist);
  ASSERT_TRUE(images.ok()) << images.status();

  bool killed_during_backup = false;
  {
    ServerProcess server(data_dir, dir.File("first.log"), flags);
    const std::string address = server.WaitReady();
    ASSERT_FALSE(address.empty());
    auto stub = v1::Quantd::NewStub(Connect(address));
    CreateCollection(*stub, "fmnist", 784);
    Upload(*stub, "fmnist", fmnist, 60000);

    std::atomic<bool> finished{false};
    grpc::Status backup_status;
    std::thread backup([&] {
      grpc::ClientContext context;
      v1::BackupRequest request;
      request.set_name("snap");
      v1::BackupResponse response;
      backup_status = stub->Backup(&context, request, &response);
      finished = true;
    });
    // Kill as soon as the backup's partial directory shows up.
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    while (!finished.load() && Clock::now() < deadline) {
      const auto names = Entries(backup_dir);
      if (std::any_of(names.begin(), names.end(), [](const std::string& name) {
            return name.rfind("snap.partial-", 0) == 0;
          })) {
        break;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    killed_during_backup = !finished.load();
    server.Signal(SIGKILL);
    server.Wait();
    backup.join();
    if (killed_during_backup) {
      EXPECT_FALSE(backup_status.ok());
    }
  }
  // Either no backup named "snap" or a complete one; leftovers are marked partial.
  const std::vector<std::string> left = Entries(backup_dir);
  for (const std::string& name : left) {
    EXPECT_TRUE(name == "snap" || name.rfind("snap.partial-", 0) == 0) << name;
  }
  std::printf("killed %s the backup; left behind: %zu entries\n",
              killed_during_backup ? "during" : "after", left.size());
  if (killed_during_backup) {
    EXPECT_TRUE(std::find(left.begin(), left.end(), "snap") == left.end());
  }

  // The server restarts on its data intact; a backup of the same name then succeeds, through
  // quantctl, and clears the leftovers.
  ServerProcess server(data_dir, dir.File("second.log"), flags);
  const std::string address = server.WaitReady();
  ASSERT_FALSE(address.empty());
  auto stub = v1::Quantd::NewStub(Connect(address));
  EXPECT_EQ(ItemCount(*stub, "fmnist"), 60000u);
  {
    grpc::ClientContext context;
    v1::GetItemsRequest request;
    request.set_collection("fmnist");
    for (uint64_t id : {0, 1, 30000, 59999}) request.add_ids(id);
    v1::GetItemsResponse items;
    ASSERT_TRUE(stub->GetItems(&context, request, &items).ok());
    ASSERT_EQ(items.ids_size(), 4);
    for (int i = 0; i < 4; ++i) {
      EXPECT_TRUE(std::equal(items.vectors().begin() + i * 784,
                             items.vectors().begin() + (i + 1) * 784,
                             images->values.begin() + items.ids(i) * 784))
          << "item " << items.ids(i);
    }
  }
  if (std::find(left.begin(), left.end(), "snap") != left.end())
    fs::remove_all(backup_dir + "/snap");
  std::string out;
  ASSERT_EQ(RunQuantctl(address, "backup snap --json", &out), 0) << out;
  EXPECT_NE(out.find("\"path\":\"" + backup_dir + "/snap\""), std::string::npos) << out;
  EXPECT_EQ(Entries(backup_dir), std::vector<std::string>{"snap"});
  ASSERT_EQ(RunQuantctl(address, "backup snap", &out), 1) << out;
  EXPECT_NE(out.find("ALREADY_EXISTS"), std::string::npos) << out;
  ASSERT_EQ(RunQuantctl(address, "backup snap2", &out), 0) << out;
  EXPECT_NE(out.find("backup 'snap2' written to " + backup_dir + "/snap2: "), std::string::npos)
      << out;
  EXPECT_NE(out.find(" MiB in "), std::string::npos) << out;
  std::printf("%s", out.c_str());
  EXPECT_EQ(RunQuantctl(address, "backup a/b", &out), 1) << out;
  EXPECT_NE(out.find("INVALID_ARGUMENT"), std::string::npos) << out;
  EXPECT_EQ(RunQuantctl(address, "backup", &out), 2) << out;
  EXPECT_EQ(RunQuantctl(address, "backup --help", &out), 0) << out;
  EXPECT_NE(out.find("Usage: quantctl backup NAME"), std::string::npos) << out;

  // The new backup opens as a data directory with every item.
  ServerProcess restored(backup_dir + "/snap", dir.File("restored.log"),
                         {"--backup_dir=" + dir.path() + "/restored-backups"});
  const std::string restored_address = restored.WaitReady();
  ASSERT_FALSE(restored_address.empty());
  auto restored_stub = v1::Quantd::NewStub(Connect(restored_address));
  EXPECT_EQ(ItemCount(*restored_stub, "fmnist"), 60000u);
  EXPECT_LT(Clock::now() - test_start, std::chrono::seconds(30));
}

TEST(FaultTest, SigkillDuringTrainingReportsFailedAndThePreviousModelsServe) {
  TempDir dir;
  const std::string data_dir = dir.path() + "/data";
  const std::string fmnist = FashionMnistFile("train-images-idx3-ubyte.gz");
  auto images = ReadMatrix(fmnist);
  ASSERT_TRUE(images.ok()) << images.status();
  const std::vector<uint64_t> ids = {0, 1, 2, 100, 1000, 9999};
  const std::vector<float> queries(images->values.begin() + 30000 * 784,
                                   images->values.begin() + 30010 * 784);
  std::string job_id;
  v1::EncodeResponse encoded_before;
  v1::SearchResponse searched_before;
  {
    ServerProcess server(data_dir, dir.File("first.log"), {"--sync=false"});
    const std::string address = server.WaitReady();
    ASSERT_FALSE(address.empty());
    auto stub = v1::Quantd::NewStub(Connect(address));
    CreateCollection(*stub, "fmnist", 784);
    Upload(*stub, "fmnist", fmnist, 10000);
    auto phase_start = Clock::now();
    ASSERT_EQ(WaitJob(*stub, StartJob(*stub, "fmnist", {16, 16})).state(), v1::JOB_STATE_SUCCEEDED);
    ASSERT_EQ(WaitJob(*stub, StartJob(*stub, "fmnist", {})).state(), v1::JOB_STATE_SUCCEEDED);
    std::printf("trained in %.1f s\n",
                std::chrono::duration<double>(Clock::now() - phase_start).count());
    ASSERT_TRUE(Encode(*stub, "fmnist", ids, queries, &encoded_before).ok());
    ASSERT_TRUE(Search(*stub, "fmnist", queries, &searched_before).ok());

    job_id = StartJob(*stub, "fmnist", {256, 256, 256}, /*balanced=*/true, 500);
    v1::Job job;
    for (int i = 0; i < 3000; ++i) {
      job = GetJob(*stub, job_id);
      if (job.state() == v1::JOB_STATE_RUNNING && job.phase().rfind("training", 0) == 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_EQ(job.state(), v1::JOB_STATE_RUNNING) << job.phase();
    server.Signal(SIGKILL);
    server.Wait();
  }
  ServerProcess server(data_dir, dir.File("second.log"));
  const std::string address = server.WaitReady();
  ASSERT_FALSE(address.empty());
  auto stub = v1::Quantd::NewStub(Connect(address));
  const v1::Job job = GetJob(*stub, job_id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  // As a clean stop records it: the phase it was killed in, not the "loading" it started with.
  EXPECT_EQ(job.phase(), "interrupted");
  EXPECT_EQ(job.error().rfind("interrupted in phase 'training level ", 0), 0u) << job.error();
  EXPECT_NE(job.error().find("the previous tokenizer version is unchanged"), std::string::npos)
      << job.error();
  EXPECT_EQ(job.result_version(), 0u);

  v1::EncodeResponse encoded;
  ASSERT_TRUE(Encode(*stub, "fmnist", ids, queries, &encoded).ok());
  EXPECT_EQ(encoded.tokenizer_version(), 1u);
  EXPECT_EQ(encoded.SerializeAsString(), encoded_before.SerializeAsString());
  v1::SearchResponse searched;
  ASSERT_TRUE(Search(*stub, "fmnist", queries, &searched).ok());
  EXPECT_EQ(searched.SerializeAsString(), searched_before.SerializeAsString());
  grpc::ClientContext context;
  v1::GetStatsRequest request;
  request.set_collection("fmnist");
  v1::GetStatsResponse stats;
  ASSERT_TRUE(stub->GetStats(&context, request, &stats).ok());
  EXPECT_EQ(stats.tokenizer().version(), 1u);
  EXPECT_EQ(stats.tokenizer().items(), 10000u);  // every item still has its version-1 SID
}

// Opens the stopped server's database directly and flips a byte in the middle of every model
// blob (tokenizer and index) of `collection`.
void CorruptModels(const std::string& data_dir, const std::string& collection) {
  auto db = Db::Open({.path = data_dir, .sync = true});
  ASSERT_TRUE(db.ok()) << db.status();
  auto value = (*db)->Get(ColumnFamily::kMeta, keys::CollectionRecordKey(collection), "read");
  ASSERT_TRUE(value.ok() && value->has_value());
  storage::CollectionRecord record;
  ASSERT_TRUE(record.ParseFromString(**value));
  rocksdb::WriteBatch batch;
  int corrupted = 0;
  ASSERT_TRUE((*db)
                  ->ScanPrefix(ColumnFamily::kModels, keys::CollectionBegin(record.id()),
                               [&](absl::string_view key, absl::string_view blob) {
                                 std::string bytes(blob);
                                 bytes[bytes.size() / 2] ^= 0x5a;
                                 batch.Put((*db)->handle(ColumnFamily::kModels),
                                           rocksdb::Slice(key.data(), key.size()), bytes);
                                 ++corrupted;
                                 return absl::OkStatus();
                               })
                  .ok());
  EXPECT_EQ(corrupted, 2);  // the tokenizer's and the index's
  EXPECT_TRUE((*db)->Write(batch, "corrupt").ok());
}

TEST(FaultTest, CorruptModelBlobIsDataLossForThatCollectionOnly) {
  TempDir dir;
  const std::string data_dir = dir.path() + "/data";
  const std::string sift = DataFile("sift5k/sift5k_base.fvecs");
  auto base = ReadMatrix(sift);
  ASSERT_TRUE(base.ok()) << base.status();
  const std::vector<float> queries(base->values.begin(), base->values.begin() + 5 * 128);
  v1::EncodeResponse good_encoded;
  v1::SearchResponse good_searched;
  {
    ServerProcess server(data_dir, dir.File("first.log"));
    const std::string address = server.WaitReady();
    ASSERT_FALSE(address.empty());
    auto stub = v1::Quantd::NewStub(Connect(address));
    for (const char* name : {"good", "bad"}) {
      CreateCollection(*stub, name, 128);
      Upload(*stub, name, sift, 2000);
      ASSERT_EQ(WaitJob(*stub, StartJob(*stub, name, {16, 16})).state(), v1::JOB_STATE_SUCCEEDED);
      ASSERT_EQ(WaitJob(*stub, StartJob(*stub, name, {})).state(), v1::JOB_STATE_SUCCEEDED);
    }
    ASSERT_TRUE(Encode(*stub, "good", {0, 1, 2}, queries, &good_encoded).ok());
    ASSERT_TRUE(Search(*stub, "good", queries, &good_searched).ok());
    server.Signal(SIGTERM);
    const int status = server.Wait();
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << ReadText(dir.File("first.log"));
  }
  CorruptModels(data_dir, "bad");

  ServerProcess server(data_dir, dir.File("second.log"));
  const std::string address = server.WaitReady();
  ASSERT_FALSE(address.empty());
  auto stub = v1::Quantd::NewStub(Connect(address));
  v1::EncodeResponse encoded;
  const grpc::Status encode_status = Encode(*stub, "bad", {0, 1, 2}, {}, &encoded);
  EXPECT_EQ(encode_status.error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_NE(encode_status.error_message().find("collection 'bad'"), std::string::npos)
      << encode_status.error_message();
  v1::SearchResponse searched;
  const grpc::Status search_status = Search(*stub, "bad", queries, &searched);
  EXPECT_EQ(search_status.error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_NE(search_status.error_message().find("collection 'bad'"), std::string::npos)
      << search_status.error_message();
  v1::GetStatsResponse stats;
  EXPECT_EQ(Stats(*stub, "bad", &stats).error_code(), grpc::StatusCode::DATA_LOSS);
  // Writes that would need the unreadable models are refused too, and change nothing.
  const grpc::Status upsert = UpsertBatch(*stub, "bad", 1, 1, 128, 0.5f);
  EXPECT_EQ(upsert.error_code(), grpc::StatusCode::DATA_LOSS) << upsert.error_message();
  EXPECT_EQ(ItemCount(*stub, "bad"), 2000u);

  // The healthy collection serves as before; the server stays up.
  ASSERT_TRUE(Encode(*stub, "good", {0, 1, 2}, queries, &encoded).ok());
  EXPECT_EQ(encoded.SerializeAsString(), good_encoded.SerializeAsString());
  ASSERT_TRUE(Search(*stub, "good", queries, &searched).ok());
  EXPECT_EQ(searched.SerializeAsString(), good_searched.SerializeAsString());
  ASSERT_TRUE(Stats(*stub, "good", &stats).ok());
  EXPECT_EQ(stats.tokenizer().items(), 2000u);
  EXPECT_EQ(stats.index().items(), 2000u);
  EXPECT_TRUE(testing::HealthServing(Connect(address).get()));
}

TEST(FaultTest, DataDirThatIsARegularFileFailsStartupClearly) {
  TempDir dir;
  testing::WriteFile(dir.File("plain-file"), "x");
  ServerProcess server(dir.File("plain-file"), dir.File("server.log"));
  const int status = server.Wait();
  ASSERT_TRUE(WIFEXITED(status)) << "quantd crashed: " << ReadText(dir.File("server.log"));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  const std::string log = ReadText(dir.File("server.log"));
  EXPECT_NE(log.find("data_dir '" + dir.File("plain-file") + "'"), std::string::npos) << log;
  EXPECT_NE(log.find("not a directory"), std::string::npos) << log;
}

TEST(FaultTest, ReadOnlyDataDirStopsStartupReadOnlyBackupDirFailsBackupsOnly) {
  TempDir dir;
  const std::string locked = dir.File("locked");
  fs::create_directories(locked);
  ChildSetup setup;
  if (geteuid() == 0) {
    // Root ignores permissions: the server runs as an unprivileged user instead.
    const passwd* nobody = getpwnam("nobody");
    ASSERT_NE(nobody, nullptr) << "no 'nobody' user to drop root privileges to";
    setup.uid = static_cast<int>(nobody->pw_uid);
    fs::permissions(dir.path(),
                    fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec);
    // The build tree may sit in a directory only root can enter: run a copy nobody can reach.
    setup.binary = dir.File("quantd");
    fs::copy_file(QUANTD_BINARY, setup.binary);
    fs::permissions(setup.binary, fs::perms::owner_all | fs::perms::group_read |
                                      fs::perms::group_exec | fs::perms::others_read |
                                      fs::perms::others_exec);
  }
  fs::permissions(locked, fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read |
                              fs::perms::group_exec | fs::perms::others_read |
                              fs::perms::others_exec);
  ServerProcess server(locked + "/data", dir.File("server.log"),
                       {"--backup_dir=" + locked + "/backups"}, {}, setup);
  const int status = server.Wait();
  fs::permissions(locked, fs::perms::owner_all);
  ASSERT_TRUE(WIFEXITED(status)) << "quantd crashed: " << ReadText(dir.File("server.log"));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  const std::string log = ReadText(dir.File("server.log"));
  EXPECT_NE(log.find("data_dir '" + locked + "/data' cannot be created"), std::string::npos) << log;
  EXPECT_NE(log.find("Permission denied"), std::string::npos) << log;
  // ... and what to do about it: give the directory to the user quantd runs as.
  EXPECT_NE(log.find("chown -R "), std::string::npos) << log;
  EXPECT_NE(log.find(" " + locked + "`"), std::string::npos) << log;

  // An unwritable backup_dir does not stop the server: a warning at start-up, and each Backup
  // call fails naming it, while everything else serves.
  const std::string open_dir = dir.File("open");
  fs::create_directories(open_dir);
  fs::permissions(open_dir, fs::perms::all);
  fs::permissions(locked, fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read |
                              fs::perms::group_exec | fs::perms::others_read |
                              fs::perms::others_exec);
  ServerProcess serving(open_dir + "/data", dir.File("serving.log"),
                        {"--backup_dir=" + locked + "/backups"}, {}, setup);
  const std::string address = serving.WaitReady();
  ASSERT_FALSE(address.empty());
  EXPECT_NE(ReadText(dir.File("serving.log")).find("backup_dir '" + locked + "/backups'"),
            std::string::npos)
      << ReadText(dir.File("serving.log"));
  auto stub = v1::Quantd::NewStub(Connect(address));
  CreateCollection(*stub, "still-serving", 4);
  grpc::ClientContext context;
  v1::BackupRequest request;
  request.set_name("nope");
  v1::BackupResponse response;
  const grpc::Status backup = stub->Backup(&context, request, &response);
  fs::permissions(locked, fs::perms::owner_all);
  EXPECT_EQ(backup.error_code(), grpc::StatusCode::INTERNAL) << backup.error_message();
  EXPECT_NE(backup.error_message().find("create backup_dir '" + locked + "/backups'"),
            std::string::npos)
      << backup.error_message();
  EXPECT_NE(backup.error_message().find("Permission denied"), std::string::npos)
      << backup.error_message();
  EXPECT_EQ(ItemCount(*stub, "still-serving"), 0u);
}

TEST(FaultTest, FullDiskFailsWritesClearlyAndKeepsEarlierData) {
  TempDir dir;
  const std::string data_dir = dir.path() + "/data";
  constexpr int kDim = 64;
  constexpr int kRows = 1000;  // 256 KB per batch
  const std::string backup_dir = dir.path() + "/backups";
  ChildSetup setup;
  setup.file_size_limit = 4 << 20;  // no file may grow past 4 MiB: the WAL soon fails (EFBIG)
  int acknowledged = 0;
  grpc::Status failure;
  {
    ServerProcess server(data_dir, dir.File("limited.log"),
                         {"--sync=false", "--backup_dir=" + backup_dir}, {}, setup);
    const std::string address = server.WaitReady();
    ASSERT_FALSE(address.empty());
    auto stub = v1::Quantd::NewStub(Connect(address));
    CreateCollection(*stub, "full", kDim);
    for (int b = 0; b < 100; ++b) {
      failure = UpsertBatch(*stub, "full", static_cast<uint64_t>(b) * kRows, kRows, kDim, b);
      if (!failure.ok()) break;
      ++acknowledged;
    }
    ASSERT_FALSE(failure.ok()) << "100 batches of 256 KB fit under a 4 MiB file-size limit";
    EXPECT_GT(acknowledged, 0);
    EXPECT_EQ(failure.error_code(), grpc::StatusCode::UNAVAILABLE) << failure.error_message();
    EXPECT_NE(failure.error_message().find("write items"), std::string::npos)
        << failure.error_message();
    std::printf("after %d batches: %s\n", acknowledged, failure.error_message().c_str());
    // Later writes fail the same way; reads go on and the server stays up.
    const grpc::Status again = UpsertBatch(*stub, "full", 1u << 30, 1, kDim, 1);
    EXPECT_FALSE(again.ok());
    EXPECT_EQ(ItemCount(*stub, "full"), static_cast<uint64_t>(acknowledged) * kRows);
    grpc::ClientContext context;
    v1::GetItemsRequest request;
    request.set_collection("full");
    request.add_ids(0);
    v1::GetItemsResponse items;
    EXPECT_TRUE(stub->GetItems(&context, request, &items).ok());
    EXPECT_EQ(items.ids_size(), 1);
    EXPECT_TRUE(testing::HealthServing(Connect(address).get()));
    // A backup cannot be written either (its files exceed the limit, or the flush fails): a
    // clear error naming it, and nothing left in backup_dir.
    grpc::ClientContext backup_context;
    v1::BackupRequest backup_request;
    backup_request.set_name("when-full");
    v1::BackupResponse backup_response;
    const grpc::Status backup = stub->Backup(&backup_context, backup_request, &backup_response);
    EXPECT_FALSE(backup.ok());
    EXPECT_TRUE(backup.error_code() == grpc::StatusCode::INTERNAL ||
                backup.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED)
        << backup.error_code();
    EXPECT_NE(backup.error_message().find("backup 'when-full'"), std::string::npos)
        << backup.error_message();
    std::printf("backup when full: %s\n", backup.error_message().c_str());
    EXPECT_TRUE(Entries(backup_dir).empty());
    server.Signal(SIGKILL);
    server.Wait();
  }
  // Without the limit, every acknowledged batch is there, whole.
  ServerProcess server(data_dir, dir.File("restarted.log"));
  const std::string address = server.WaitReady();
  ASSERT_FALSE(address.empty());
  auto stub = v1::Quantd::NewStub(Connect(address));
  const uint64_t count = ItemCount(*stub, "full");
  EXPECT_GE(count, static_cast<uint64_t>(acknowledged) * kRows);
  EXPECT_EQ(count % kRows, 0u);
  grpc::ClientContext context;
  v1::GetItemsRequest request;
  request.set_collection("full");
  for (int b = 0; b < acknowledged; ++b)
    request.add_ids(static_cast<uint64_t>(b) * kRows + kRows - 1);
  v1::GetItemsResponse items;
  ASSERT_TRUE(stub->GetItems(&context, request, &items).ok());
  EXPECT_EQ(items.ids_size(), acknowledged);
  for (int i = 0; i < items.ids_size(); ++i) {
    EXPECT_EQ(items.vectors(i * kDim), static_cast<float>(items.ids(i) / kRows));
  }
}

}  // namespace
}  // namespace quantd
