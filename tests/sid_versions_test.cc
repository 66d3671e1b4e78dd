// Tokenizer versions (issue #12) through gRPC, in-process, on real embeddings (SASRec Beauty):
// retrains keep earlier versions and their SIDs current under upserts and deletes; activation,
// rollback, pins and retention; the activation policy; suffix carry-over; MapSids; NextCodes
// against Lookup; codebook export and import; restarts; the schema-2 migration; bad inputs.
#include <algorithm>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "client/client.h"
#include "gtest/gtest.h"
#include "io/vector_file.h"
#include "server/db.h"
#include "server/keys.h"
#include "server/server.h"
#include "tests/server_fixture.h"
#include "tests/test_support.h"

namespace quantd {
namespace {

using ::quantd::testing::DataFile;

constexpr int64_t kRows = 6000;
constexpr int kDim = 32;

// The codes of a SID written "c0,c1,...,#suffix".
std::vector<std::string> CodesOf(const std::string& sid) {
  return absl::StrSplit(sid.substr(0, sid.find('#')), ',', absl::SkipEmpty());
}

class SidVersionsTest : public ::quantd::testing::InProcessServerTest {
 protected:
  void SetUp() override {
    InProcessServerTest::SetUp();
    auto matrix = ReadMatrix(DataFile("sasrec/Beauty-32d-sasrec.npy"), kRows + 100);
    ASSERT_TRUE(matrix.ok()) << matrix.status();
    beauty_ = std::move(matrix->values);
  }

  std::vector<float> Rows(uint64_t first, uint64_t count) const {
    return std::vector<float>(beauty_.begin() + first * kDim,
                              beauty_.begin() + (first + count) * kDim);
  }

  // Creates `name` (keeping `keep` versions; 0: the default) with Beauty's first kRows rows.
  void Load(const std::string& name, uint32_t keep = 0) {
    grpc::ClientContext context;
    v1::CreateCollectionRequest create;
    create.set_name(name);
    create.set_dimension(kDim);
    create.set_metric(v1::METRIC_L2);
    create.set_keep_tokenizer_versions(keep);
    v1::CreateCollectionResponse created;
    ASSERT_TRUE(stub_->CreateCollection(&context, create, &created).ok());
    for (uint64_t first = 0; first < kRows; first += 1000) {
      std::vector<uint64_t> ids(1000);
      std::iota(ids.begin(), ids.end(), first);
      ASSERT_TRUE(Upsert(name, ids, Rows(first, 1000)).ok());
    }
  }

  static v1::TrainTokenizerRequest Train(const std::string& name, uint32_t k, uint64_t seed = 7,
                                         v1::Activation activation = v1::ACTIVATION_UNSPECIFIED) {
    v1::TrainTokenizerRequest request;
    request.set_collection(name);
    for (int l = 0; l < 3; ++l) request.add_codebook_sizes(k);
    request.set_seed(seed);
    request.set_max_iterations(10);
    request.set_activation(activation);
    return request;
  }
  v1::Job TrainOk(const v1::TrainTokenizerRequest& request) {
    v1::Job job = TrainAndWait(request);
    EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.error();
    return job;
  }

  grpc::Status Versions(const std::string& name, v1::TokenizerVersions* out) {
    grpc::ClientContext context;
    v1::ListTokenizerVersionsRequest request;
    request.set_collection(name);
    return stub_->ListTokenizerVersions(&context, request, out);
  }
  std::vector<uint32_t> Kept(const std::string& name) {
    v1::TokenizerVersions versions;
    EXPECT_TRUE(Versions(name, &versions).ok());
    std::vector<uint32_t> kept;
    for (const v1::TokenizerVersion& v : versions.versions()) kept.push_back(v.version());
    return kept;
  }
  grpc::Status Activate(const std::string& name, uint32_t version) {
    grpc::ClientContext context;
    v1::ActivateTokenizerRequest request;
    request.set_collection(name);
    request.set_version(version);
    v1::TokenizerVersions out;
    return stub_->ActivateTokenizer(&context, request, &out);
  }
  grpc::Status DropVersion(const std::string& name, uint32_t version) {
    grpc::ClientContext context;
    v1::DropTokenizerVersionRequest request;
    request.set_collection(name);
    request.set_version(version);
    v1::TokenizerVersions out;
    return stub_->DropTokenizerVersion(&context, request, &out);
  }
  grpc::Status Pin(const std::string& name, uint32_t version, bool pinned) {
    grpc::ClientContext context;
    v1::PinTokenizerVersionRequest request;
    request.set_collection(name);
    request.set_version(version);
    request.set_pinned(pinned);
    v1::TokenizerVersions out;
    return stub_->PinTokenizerVersion(&context, request, &out);
  }

  grpc::Status Next(const std::string& name, uint32_t version, const std::vector<uint32_t>& prefix,
                    v1::NextCodesResponse* out, const std::string& tokens = "") {
    grpc::ClientContext context;
    v1::NextCodesRequest request;
    request.set_collection(name);
    request.set_tokenizer_version(version);
    request.mutable_prefix()->Add(prefix.begin(), prefix.end());
    request.set_tokens(tokens);
    return stub_->NextCodes(&context, request, out);
  }

  std::vector<float> beauty_;
};

TEST_F(SidVersionsTest, RetrainKeepsThePreviousVersionAndItsSids) {
  Load("c");
  const v1::Job first = TrainOk(Train("c", 64, /*seed=*/7));
  EXPECT_EQ(first.result_version(), 1u);
  EXPECT_TRUE(first.activated());
  const std::map<uint64_t, std::string> v1_sids = AllSids("c", 0);
  ASSERT_EQ(v1_sids.size(), static_cast<size_t>(kRows));

  const v1::Job second = TrainOk(Train("c", 32, /*seed=*/9));
  EXPECT_EQ(second.result_version(), 2u);
  EXPECT_EQ(Kept("c"), (std::vector<uint32_t>{1, 2}));
  // Version 1 still answers exactly as before; version 2 is active.
  EXPECT_EQ(AllSids("c", 1), v1_sids);
  EXPECT_NE(AllSids("c", 0), v1_sids);
  EXPECT_EQ(AllSids("c", 0), AllSids("c", 2));
  EXPECT_EQ(Stats("c").tokenizer().version(), 2u);

  // Rollback: version 1 active again, with the same SIDs.
  ASSERT_TRUE(Activate("c", 1).ok());
  EXPECT_EQ(AllSids("c", 0), v1_sids);
  EXPECT_EQ(Stats("c").tokenizer().version(), 1u);
  v1::TokenizerVersions versions;
  ASSERT_TRUE(Versions("c", &versions).ok());
  EXPECT_EQ(versions.active_version(), 1u);
  EXPECT_EQ(versions.keep_versions(), 3u);
  ASSERT_EQ(versions.versions_size(), 2);
  EXPECT_TRUE(versions.versions(0).active());
  EXPECT_EQ(versions.versions(1).parent_version(), 1u);
  EXPECT_EQ(versions.versions(1).items(), static_cast<uint64_t>(kRows));
  EXPECT_EQ(versions.versions(1).codebook_sizes(0), 32u);
}

TEST_F(SidVersionsTest, UpsertsAndDeletesKeepEveryKeptVersionCurrent) {
  Load("c");
  TrainOk(Train("c", 64, 7));
  TrainOk(Train("c", 32, 9));
  // A new item, a changed one and a deleted one.
  ASSERT_TRUE(Upsert("c", {kRows + 5}, Rows(kRows + 5, 1)).ok());
  ASSERT_TRUE(Upsert("c", {3}, Rows(kRows + 6, 1)).ok());
  {
    grpc::ClientContext context;
    v1::DeleteItemsRequest request;
    request.set_collection("c");
    request.add_ids(4);
    v1::DeleteItemsResponse response;
    ASSERT_TRUE(stub_->DeleteItems(&context, request, &response).ok());
  }
  for (uint32_t version : {1u, 2u}) {
    const std::map<uint64_t, std::string> sids = AllSids("c", version);
    EXPECT_EQ(sids.size(), static_cast<size_t>(kRows)) << "version " << version;
    EXPECT_TRUE(sids.contains(kRows + 5)) << "version " << version;
    EXPECT_FALSE(sids.contains(4)) << "version " << version;
    // Every SID is distinct within the version.
    std::set<std::string> distinct;
    for (const auto& [id, sid] : sids) distinct.insert(sid);
    EXPECT_EQ(distinct.size(), sids.size());
    // Lookup under the version finds the new item by its SID.
    grpc::ClientContext context;
    v1::LookupRequest lookup;
    lookup.set_collection("c");
    lookup.set_tokenizer_version(version);
    const std::string& sid = sids.at(kRows + 5);
    for (const std::string& part : CodesOf(sid)) {
      lookup.add_codes(static_cast<uint32_t>(std::stoul(part)));
    }
    lookup.add_codes(static_cast<uint32_t>(std::stoul(sid.substr(sid.find('#') + 1))));
    v1::LookupResponse found;
    ASSERT_TRUE(stub_->Lookup(&context, lookup, &found).ok());
    ASSERT_EQ(found.ids_size(), 1);
    EXPECT_EQ(found.ids(0), kRows + 5);
  }
  // The versions' ledgers agree with their SIDs after a restart too.
  Restart();
  v1::TokenizerVersions versions;
  ASSERT_TRUE(Versions("c", &versions).ok());
  ASSERT_EQ(versions.versions_size(), 2);
  for (const v1::TokenizerVersion& v : versions.versions()) {
    EXPECT_EQ(v.items(), static_cast<uint64_t>(kRows));
  }
  EXPECT_EQ(versions.active_version(), 2u);
}

TEST_F(SidVersionsTest, RetentionDropsTheOldestUnpinnedInactiveVersion) {
  Load("c", /*keep=*/2);
  TrainOk(Train("c", 16, 1));
  TrainOk(Train("c", 16, 2));
  ASSERT_TRUE(Pin("c", 1, true).ok());
  TrainOk(Train("c", 16, 3));
  // 1 is pinned, 3 active: 2 goes.
  EXPECT_EQ(Kept("c"), (std::vector<uint32_t>{1, 3}));
  grpc::Status status;
  AllSids("c", 2, &status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(status.error_message().find("version 2 of collection 'c' was dropped"),
            std::string::npos)
      << status.error_message();
  // A dropped version cannot be activated, pinned or dropped again.
  EXPECT_EQ(Activate("c", 2).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Pin("c", 2, true).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(DropVersion("c", 2).error_code(), grpc::StatusCode::NOT_FOUND);
  // Every kept version pinned: a new one cannot be kept (an active unpinned one would go, as
  // the new version becomes active).
  ASSERT_TRUE(Pin("c", 3, true).ok());
  const v1::Job refused = TrainAndWait(Train("c", 16, 4));
  EXPECT_EQ(refused.state(), v1::JOB_STATE_FAILED);
  EXPECT_NE(refused.error().find("pinned"), std::string::npos) << refused.error();
  EXPECT_EQ(Kept("c"), (std::vector<uint32_t>{1, 3}));
  // Version numbers are never reused (2 was dropped; the refused job reserved none).
  ASSERT_TRUE(Pin("c", 1, false).ok());
  ASSERT_TRUE(Pin("c", 3, false).ok());
  EXPECT_EQ(TrainOk(Train("c", 16, 5)).result_version(), 4u);
  EXPECT_EQ(Kept("c"), (std::vector<uint32_t>{3, 4}));
  // Raising then lowering the retention drops the oldest inactive ones at once.
  {
    grpc::ClientContext context;
    v1::SetTokenizerRetentionRequest request;
    request.set_collection("c");
    request.set_keep_versions(1);
    v1::TokenizerVersions out;
    ASSERT_TRUE(stub_->SetTokenizerRetention(&context, request, &out).ok());
    EXPECT_EQ(out.keep_versions(), 1u);
    ASSERT_EQ(out.versions_size(), 1);
    EXPECT_EQ(out.versions(0).version(), 4u);
  }
  Restart();
  EXPECT_EQ(Kept("c"), (std::vector<uint32_t>{4}));
}

TEST_F(SidVersionsTest, BadVersionRequestsAreRefusedAndChangeNothing) {
  Load("c");
  TrainOk(Train("c", 16, 1));
  TrainOk(Train("c", 16, 2));
  const std::vector<uint32_t> kept = Kept("c");
  EXPECT_EQ(Activate("c", 7).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Activate("c", 0).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Activate("nope", 1).error_code(), grpc::StatusCode::NOT_FOUND);
  const grpc::Status active = DropVersion("c", 2);
  EXPECT_EQ(active.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(active.error_message().find("active"), std::string::npos);
  ASSERT_TRUE(Pin("c", 1, true).ok());
  EXPECT_EQ(DropVersion("c", 1).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Kept("c"), kept);
  EXPECT_EQ(Pin("c", 9, true).error_code(), grpc::StatusCode::NOT_FOUND);
  {
    grpc::ClientContext context;
    v1::SetTokenizerRetentionRequest request;
    request.set_collection("c");
    request.set_keep_versions(17);
    v1::TokenizerVersions out;
    EXPECT_EQ(stub_->SetTokenizerRetention(&context, request, &out).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    grpc::ClientContext context;
    v1::CreateCollectionRequest request;
    request.set_name("d");
    request.set_dimension(4);
    request.set_metric(v1::METRIC_L2);
    request.set_keep_tokenizer_versions(99);
    v1::CreateCollectionResponse out;
    EXPECT_EQ(stub_->CreateCollection(&context, request, &out).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  v1::TrainTokenizerRequest bad = Train("c", 16, 1);
  bad.set_activation(static_cast<v1::Activation>(9));
  v1::Job job;
  EXPECT_EQ(StartTraining(bad, &job).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // Encode and Lookup under a version that is not kept.
  grpc::ClientContext context;
  v1::EncodeRequest encode;
  encode.set_collection("c");
  encode.add_ids(1);
  encode.set_tokenizer_version(3);
  v1::EncodeResponse encoded;
  const grpc::Status status = stub_->Encode(&context, encode, &encoded);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(status.error_message().find("does not exist yet"), std::string::npos)
      << status.error_message();
  // Dropping the only other version leaves the active one serving.
  ASSERT_TRUE(Pin("c", 1, false).ok());
  ASSERT_TRUE(DropVersion("c", 1).ok());
  EXPECT_EQ(Kept("c"), (std::vector<uint32_t>{2}));
  EXPECT_EQ(AllSids("c", 0).size(), static_cast<size_t>(kRows));
}

TEST_F(SidVersionsTest, ActivationPolicyNeverAndIfBetter) {
  Load("c");
  const v1::Job coarse = TrainOk(Train("c", 8, 1));
  // Never: trained and kept, not active.
  const v1::Job never = TrainOk(Train("c", 64, 1, v1::ACTIVATION_NEVER));
  EXPECT_FALSE(never.activated());
  EXPECT_NE(never.decision().find("never"), std::string::npos) << never.decision();
  EXPECT_EQ(Stats("c").tokenizer().version(), coarse.result_version());
  // If better: 3 x 64 beats 3 x 8 on both collisions and MSE over the same items.
  const v1::Job better = TrainOk(Train("c", 64, 2, v1::ACTIVATION_IF_BETTER));
  EXPECT_TRUE(better.activated()) << better.decision();
  EXPECT_NE(better.decision().find("activated"), std::string::npos);
  EXPECT_NE(better.decision().find("version 1"), std::string::npos) << better.decision();
  EXPECT_EQ(Stats("c").tokenizer().version(), better.result_version());
  // ... and 3 x 8 does not beat 3 x 64.
  const v1::Job worse = TrainOk(Train("c", 8, 3, v1::ACTIVATION_IF_BETTER));
  EXPECT_FALSE(worse.activated()) << worse.decision();
  EXPECT_NE(worse.decision().find("not activated"), std::string::npos) << worse.decision();
  EXPECT_EQ(Stats("c").tokenizer().version(), better.result_version());
  v1::TokenizerVersions versions;
  ASSERT_TRUE(Versions("c", &versions).ok());
  ASSERT_EQ(versions.versions_size(), 3);  // keep 3: version 1 (inactive) went
  EXPECT_EQ(versions.versions(2).decision(), worse.decision());
  EXPECT_GT(versions.versions(2).committed_collision_rate(),
            versions.versions(1).committed_collision_rate());
}

TEST_F(SidVersionsTest, SuffixesCarryOverAndMapSidsRelabels) {
  Load("c");
  TrainOk(Train("c", 16, 5));  // 4096 tuples for 6000 items: many collisions
  const std::map<uint64_t, std::string> before = AllSids("c", 0);
  // The same training again gives the same tuples: every item keeps its whole SID.
  const v1::Job again = TrainOk(Train("c", 16, 5));
  EXPECT_EQ(AllSids("c", 0), before);
  v1::TokenizerVersions versions;
  ASSERT_TRUE(Versions("c", &versions).ok());
  EXPECT_EQ(versions.versions(1).suffixes_carried(), static_cast<uint64_t>(kRows));
  // Another training: MapSids pairs each item's SIDs under both versions.
  TrainOk(Train("c", 32, 6));
  const std::map<uint64_t, std::string> after = AllSids("c", 3);
  grpc::ClientContext context;
  v1::MapSidsRequest request;
  request.set_collection("c");
  request.set_from_version(1);
  request.set_to_version(3);
  auto reader = stub_->MapSids(&context, request);
  v1::MapSidsResponse batch;
  int64_t rows = 0;
  while (reader->Read(&batch)) {
    ASSERT_EQ(batch.from_levels(), 3u);
    ASSERT_EQ(batch.to_levels(), 3u);
    for (int i = 0; i < batch.ids_size(); ++i, ++rows) {
      std::string from;
      std::string to;
      for (int l = 0; l < 3; ++l) {
        from += std::to_string(batch.from_codes(i * 3 + l)) + ",";
        to += std::to_string(batch.to_codes(i * 3 + l)) + ",";
      }
      EXPECT_EQ(from + "#" + std::to_string(batch.from_suffixes(i)), before.at(batch.ids(i)));
      EXPECT_EQ(to + "#" + std::to_string(batch.to_suffixes(i)), after.at(batch.ids(i)));
    }
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(rows, kRows);
}

// A retrain after some items changed: warm-started from the active version's codebooks (both
// run to convergence) it keeps most items' code tuples, and so their suffixes; started cold it
// relabels the codes.
TEST_F(SidVersionsTest, WarmStartKeepsTuplesAndSuffixesAcrossARetrain) {
  Load("c");
  v1::TrainTokenizerRequest first = Train("c", 32, 7);
  first.set_warm_start(true);  // nothing to start from yet
  const v1::Job refused = TrainAndWait(first);
  EXPECT_EQ(refused.state(), v1::JOB_STATE_FAILED);
  EXPECT_NE(refused.error().find("no active tokenizer version"), std::string::npos)
      << refused.error();
  v1::TrainTokenizerRequest converged = Train("c", 32, 7);
  converged.set_max_iterations(100);
  TrainOk(converged);
  const std::map<uint64_t, std::string> before = AllSids("c", 0);
  // 300 items move to other rows' vectors.
  std::vector<uint64_t> moved(300);
  std::iota(moved.begin(), moved.end(), 1000);
  ASSERT_TRUE(Upsert("c", moved, Rows(3000, 300)).ok());

  v1::TrainTokenizerRequest warm = Train("c", 32, 8, v1::ACTIVATION_NEVER);
  warm.set_max_iterations(100);
  warm.set_warm_start(true);
  const v1::Job warm_job = TrainOk(warm);
  const v1::Job cold_job = TrainOk(Train("c", 32, 8, v1::ACTIVATION_NEVER));
  v1::TokenizerVersions versions;
  ASSERT_TRUE(Versions("c", &versions).ok());
  ASSERT_EQ(versions.versions_size(), 3);
  const uint64_t warm_carried = versions.versions(1).suffixes_carried();
  const uint64_t cold_carried = versions.versions(2).suffixes_carried();
  // Measured: 4178 of 6000 warm (moving 5% of the items shifts residual levels too), 1 cold.
  EXPECT_GT(warm_carried, static_cast<uint64_t>(kRows * 6 / 10)) << cold_carried;
  EXPECT_LT(cold_carried, static_cast<uint64_t>(kRows / 20)) << warm_carried;
  // The unchanged items mostly keep their whole SID.
  const std::map<uint64_t, std::string> after = AllSids("c", warm_job.result_version());
  int64_t same = 0;
  for (const auto& [id, sid] : before) same += after.at(id) == sid;
  EXPECT_GT(same, kRows * 55 / 100);  // measured 3940
  // Different codebook sizes cannot be warm-started.
  v1::TrainTokenizerRequest mismatch = Train("c", 16, 9);
  mismatch.set_warm_start(true);
  const v1::Job failed = TrainAndWait(mismatch);
  EXPECT_EQ(failed.state(), v1::JOB_STATE_FAILED);
  EXPECT_NE(failed.error().find("warm_start: codebook_sizes [16, 16, 16] differ"),
            std::string::npos)
      << failed.error();
  (void)cold_job;
}

TEST_F(SidVersionsTest, NextCodesAgreesWithLookupAndTheSids) {
  Load("c");
  TrainOk(Train("c", 16, 5));
  const std::map<uint64_t, std::string> sids = AllSids("c", 0);
  // Counts per prefix from the exported SIDs.
  std::map<std::string, int64_t> under;
  for (const auto& [id, sid] : sids) {
    std::string prefix;
    for (const std::string& part : CodesOf(sid)) {
      prefix += part + ",";
      ++under[prefix];
    }
  }
  v1::NextCodesResponse root;
  ASSERT_TRUE(Next("c", 0, {}, &root).ok());
  EXPECT_EQ(root.level(), 0u);
  int64_t total = 0;
  for (int i = 0; i < root.codes_size(); ++i) {
    EXPECT_EQ(static_cast<int64_t>(root.items(i)), under[std::to_string(root.codes(i)) + ","]);
    EXPECT_EQ(root.tokens(i), "<a_" + std::to_string(root.codes(i)) + ">");
    total += static_cast<int64_t>(root.items(i));
  }
  EXPECT_EQ(total, kRows);
  // Down one path to the suffixes, checking each level's counts.
  std::vector<uint32_t> path;
  std::string key;
  for (int level = 0; level < 3; ++level) {
    v1::NextCodesResponse next;
    ASSERT_TRUE(Next("c", 0, path, &next).ok());
    ASSERT_GT(next.codes_size(), 0);
    int64_t sum = 0;
    for (int i = 0; i < next.codes_size(); ++i) {
      EXPECT_EQ(static_cast<int64_t>(next.items(i)),
                under[key + std::to_string(next.codes(i)) + ","]);
      if (i > 0) {
        EXPECT_LT(next.codes(i - 1), next.codes(i));
      }
      sum += static_cast<int64_t>(next.items(i));
    }
    EXPECT_EQ(sum, level == 0 ? kRows : under[key]);
    path.push_back(next.codes(0));
    key += std::to_string(next.codes(0)) + ",";
  }
  v1::NextCodesResponse suffixes;
  ASSERT_TRUE(Next("c", 0, path, &suffixes).ok());
  EXPECT_EQ(suffixes.level(), 3u);
  ASSERT_EQ(suffixes.codes_size(), under[key]);
  ASSERT_EQ(suffixes.ids_size(), suffixes.codes_size());
  for (int i = 0; i < suffixes.ids_size(); ++i) {
    EXPECT_EQ(sids.at(suffixes.ids(i)), key + "#" + std::to_string(suffixes.codes(i)));
    EXPECT_EQ(suffixes.tokens(i), "<d_" + std::to_string(suffixes.codes(i)) + ">");
  }
  // The same prefix as tokens.
  v1::NextCodesResponse by_tokens;
  ASSERT_TRUE(Next("c", 0, {}, &by_tokens,
                   "<a_" + std::to_string(path[0]) + "><b_" + std::to_string(path[1]) + ">")
                  .ok());
  v1::NextCodesResponse by_codes;
  ASSERT_TRUE(Next("c", 0, {path[0], path[1]}, &by_codes).ok());
  EXPECT_EQ(by_tokens.SerializeAsString(), by_codes.SerializeAsString());
  // Bad prefixes.
  v1::NextCodesResponse ignored;
  EXPECT_EQ(Next("c", 0, {1, 2, 3, 4}, &ignored).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Next("c", 0, {16}, &ignored).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Next("c", 0, {1}, &ignored, "<a_1>").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Next("c", 0, {}, &ignored, "<b_1>").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Next("c", 4, {}, &ignored).error_code(), grpc::StatusCode::NOT_FOUND);
  // A prefix no item holds has no next codes.
  v1::NextCodesResponse empty;
  for (uint32_t code = 0; code < 16; ++code) {
    if (under.contains(std::to_string(path[0]) + "," + std::to_string(code) + ",")) continue;
    ASSERT_TRUE(Next("c", 0, {path[0], code}, &empty).ok());
    EXPECT_EQ(empty.codes_size(), 0);
    break;
  }
}

TEST_F(SidVersionsTest, ExportedCodebooksImportToIdenticalSids) {
  Load("c");
  Load("copy");
  TrainOk(Train("c", 32, 5));
  grpc::ClientContext context;
  v1::ExportTokenizerRequest request;
  request.set_collection("c");
  v1::ExportTokenizerResponse exported;
  ASSERT_TRUE(stub_->ExportTokenizer(&context, request, &exported).ok());
  EXPECT_EQ(exported.manifest().dimension(), static_cast<uint32_t>(kDim));
  EXPECT_EQ(exported.manifest().codebook_sizes_size(), 3);
  EXPECT_EQ(exported.codebooks_size(), 3 * 32 * kDim);
  EXPECT_EQ(exported.manifest().parameters().assignment(), v1::ASSIGNMENT_NEAREST);

  const auto import = [&](const std::string& name, const v1::ImportTokenizerRequest& base,
                          v1::Job* job) {
    grpc::ClientContext import_context;
    v1::ImportTokenizerRequest named = base;
    named.set_collection(name);
    return stub_->ImportTokenizer(&import_context, named, job);
  };
  v1::ImportTokenizerRequest good;
  *good.mutable_manifest() = exported.manifest();
  *good.mutable_codebooks() = exported.codebooks();
  v1::Job job;
  ASSERT_TRUE(import("copy", good, &job).ok());
  job = WaitJob(job.id());
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.error();
  EXPECT_EQ(job.kind(), "import_tokenizer");
  EXPECT_EQ(AllSids("copy", 0), AllSids("c", 0));
  v1::TokenizerVersions versions;
  ASSERT_TRUE(Versions("copy", &versions).ok());
  EXPECT_EQ(versions.versions(0).source(), "imported");

  // Bad imports are refused before any job runs.
  v1::ImportTokenizerRequest bad = good;
  bad.mutable_manifest()->set_dimension(kDim + 1);
  EXPECT_EQ(import("copy", bad, &job).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  bad = good;
  bad.mutable_codebooks()->RemoveLast();
  grpc::Status status = import("copy", bad, &job);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("codebooks has"), std::string::npos);
  bad = good;
  bad.set_codebooks(17, std::nanf(""));
  EXPECT_EQ(import("copy", bad, &job).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  bad = good;
  bad.mutable_manifest()->set_codebook_sizes(1, 0);
  EXPECT_EQ(import("copy", bad, &job).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  bad = good;
  bad.mutable_manifest()->set_metric(v1::METRIC_COSINE);
  EXPECT_EQ(import("copy", bad, &job).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(import("nope", good, &job).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Kept("copy"), (std::vector<uint32_t>{1}));
}

// A database of the previous layout (schema 2: one tokenizer version, codes keyed by item)
// opens with its SIDs intact as version 1 of the new layout.
TEST_F(SidVersionsTest, SchemaTwoDatabaseMigrates) {
  Load("c");
  TrainOk(Train("c", 16, 5));
  const std::map<uint64_t, std::string> before = AllSids("c", 0);
  const std::string path = Options().data_dir;
  stub_.reset();
  server_->Shutdown(std::chrono::seconds(5));
  server_.reset();
  {
    // Rewrite version 1's rows as schema 2 had them.
    auto db = Db::Open({.path = path, .sync = true});
    ASSERT_TRUE(db.ok()) << db.status();
    const uint32_t cid = 1;
    rocksdb::WriteBatch batch;
    ASSERT_TRUE((*db)
                    ->ScanPrefix(ColumnFamily::kCodes, keys::TokenizerModelKey(cid, 1),
                                 [&](absl::string_view key, absl::string_view value) {
                                   batch.Put((*db)->handle(ColumnFamily::kCodes),
                                             keys::ItemKey(cid, keys::ItemIdOfCodesKey(key)),
                                             rocksdb::Slice(value.data(), value.size()));
                                   batch.Delete((*db)->handle(ColumnFamily::kCodes),
                                                rocksdb::Slice(key.data(), key.size()));
                                   return absl::OkStatus();
                                 })
                    .ok());
    rocksdb::ColumnFamilyHandle* meta = (*db)->handle(ColumnFamily::kMeta);
    batch.Delete(meta, keys::TokenizerVersionsKey(cid));
    batch.Put(meta, keys::LegacyTokenizerVersionKey(cid), keys::EncodeU32(1));
    batch.Put(meta, keys::kSchemaVersionKey, keys::EncodeU32(2));
    ASSERT_TRUE((*db)->Write(batch, "downgrade").ok());
  }
  Start();
  EXPECT_EQ(AllSids("c", 0), before);
  EXPECT_EQ(Kept("c"), (std::vector<uint32_t>{1}));
  EXPECT_EQ(TrainOk(Train("c", 16, 5)).result_version(), 2u);
  EXPECT_EQ(AllSids("c", 1), before);
}

}  // namespace
}  // namespace quantd
