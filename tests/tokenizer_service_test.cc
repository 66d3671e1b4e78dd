// The semantic-ID tokenizer through gRPC, in-process: the Train job lifecycle, Encode, Lookup,
// ExportSids, GetStats, suffix stability, and bad inputs.
#include <chrono>
#include <map>
#include <numeric>
#include <random>
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

using ::quantd::testing::DataFile;
using ::quantd::testing::TempDir;

class TokenizerServiceTest : public ::quantd::testing::InProcessServerTest {
 protected:
  v1::Job Train(const std::string& collection, std::vector<uint32_t> levels, bool balanced,
                uint64_t seed = 7) {
    v1::TrainTokenizerRequest request;
    request.set_collection(collection);
    request.mutable_codebook_sizes()->Add(levels.begin(), levels.end());
    request.set_balanced(balanced);
    request.set_seed(seed);
    request.set_max_iterations(10);
    return TrainAndWait(request);
  }

  grpc::Status EncodeIds(const std::string& collection, const std::vector<uint64_t>& ids,
                         v1::EncodeResponse* response) {
    grpc::ClientContext context;
    v1::EncodeRequest request;
    request.set_collection(collection);
    request.mutable_ids()->Add(ids.begin(), ids.end());
    return stub_->Encode(&context, request, response);
  }
};

TEST_F(TokenizerServiceTest, TrainEncodeLookupExportStats) {
  CreateAndUpload("beauty", DataFile("sasrec/Beauty-32d-sasrec.npy"), -1, v1::METRIC_INNER_PRODUCT);
  const v1::Job job = Train("beauty", {64, 64, 64}, /*balanced=*/true);
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.error();
  EXPECT_EQ(job.result_version(), 1u);
  EXPECT_EQ(job.progress(), 1.0);
  EXPECT_GT(job.elapsed_seconds(), 0);

  const v1::GetStatsResponse stats = Stats("beauty");
  ASSERT_TRUE(stats.has_tokenizer());
  const v1::TokenizerStats& t = stats.tokenizer();
  EXPECT_EQ(t.items(), 12101u);
  EXPECT_EQ(t.levels(), 3u);
  EXPECT_TRUE(t.balanced());
  ASSERT_EQ(t.level_stats_size(), 3);
  double previous_mse = 1e30;
  for (const v1::LevelStats& level : t.level_stats()) {
    // Balanced: every code used, every cluster within its enforced bounds.
    EXPECT_EQ(level.codes_used(), 64u);
    EXPECT_GE(level.size_min(), level.bounds().size_min());
    EXPECT_LE(level.size_max(), level.bounds().size_max());
    EXPECT_GT(level.perplexity(), 60.0);
    EXPECT_LT(level.reconstruction_mse(), previous_mse);
    previous_mse = level.reconstruction_mse();
  }
  EXPECT_LT(t.collision_rate(), 0.2);
  EXPECT_EQ(t.unique_tuples() + static_cast<uint64_t>(t.collision_rate() * 12101 + 0.5), 12101u);

  // Encode by id, Lookup of that SID gives the id back, export holds every item.
  v1::EncodeResponse encoded;
  ASSERT_TRUE(EncodeIds("beauty", {5, 77777}, &encoded).ok());
  ASSERT_EQ(encoded.sids_size(), 1);
  EXPECT_EQ(encoded.missing_ids_size(), 1);
  const v1::Sid& sid = encoded.sids(0);
  EXPECT_EQ(sid.codes_size(), 3);
  {
    grpc::ClientContext context;
    v1::LookupRequest request;
    request.set_collection("beauty");
    request.set_tokens(sid.tokens());
    v1::LookupResponse response;
    ASSERT_TRUE(stub_->Lookup(&context, request, &response).ok());
    ASSERT_EQ(response.ids_size(), 1);
    EXPECT_EQ(response.ids(0), 5u);
  }
  {
    // A one-code prefix finds the whole first-level cluster, within the balanced bounds.
    grpc::ClientContext context;
    v1::LookupRequest request;
    request.set_collection("beauty");
    request.add_codes(sid.codes(0));
    request.set_limit(100000);
    v1::LookupResponse response;
    ASSERT_TRUE(stub_->Lookup(&context, request, &response).ok());
    EXPECT_GE(static_cast<uint64_t>(response.ids_size()), t.level_stats(0).bounds().size_min());
    EXPECT_LE(static_cast<uint64_t>(response.ids_size()), t.level_stats(0).bounds().size_max());
    EXPECT_FALSE(response.truncated());
  }
  const auto all = AllSids("beauty");
  EXPECT_EQ(all.size(), 12101u);

  // A stored vector encoded as a new item (capacity assignment, the default for balanced
  // tokenizers) gets a tuple with room: fewer items than the suffix cap hold it.
  {
    auto matrix = ReadMatrix(DataFile("sasrec/Beauty-32d-sasrec.npy"), 6);
    ASSERT_TRUE(matrix.ok());
    grpc::ClientContext context;
    v1::EncodeRequest request;
    request.set_collection("beauty");
    request.mutable_vectors()->Add(matrix->values.begin() + 5 * 32, matrix->values.end());
    v1::EncodeResponse response;
    ASSERT_TRUE(stub_->Encode(&context, request, &response).ok());
    ASSERT_EQ(response.encoded_size(), 1);
    const v1::EncodedVector& e = response.encoded(0);
    EXPECT_EQ(t.assignment(), v1::ASSIGNMENT_CAPACITY);
    EXPECT_FALSE(e.overflow());
    EXPECT_LT(e.items_with_codes(), t.suffix_cap());
    EXPECT_EQ(e.codes_size(), 3);
    EXPECT_EQ(e.nearest_codes_size(), 3);
  }

  // Everything survives a restart unchanged.
  Restart();
  EXPECT_EQ(AllSids("beauty"), all);
  EXPECT_EQ(Stats("beauty").tokenizer().collision_rate(), t.collision_rate());
}

TEST_F(TokenizerServiceTest, SuffixesAreStableAcrossDeletesReinsertsAndRestarts) {
  // Few codes for many items: collisions are certain.
  CreateAndUpload("sift", DataFile("sift5k/sift5k_base.fvecs"), 2000);
  ASSERT_EQ(Train("sift", {4, 4}, false).state(), v1::JOB_STATE_SUCCEEDED);
  auto before = AllSids("sift");
  ASSERT_EQ(before.size(), 2000u);
  // Find a tuple with at least three items; take its suffix-0 and suffix-2 members.
  std::map<std::string, std::map<uint32_t, uint64_t>> groups;
  for (const auto& [id, sid] : before) {
    const size_t hash = sid.find('#');
    groups[sid.substr(0, hash)][std::stoul(sid.substr(hash + 1))] = id;
  }
  const auto group = std::find_if(groups.begin(), groups.end(),
                                  [](const auto& g) { return g.second.size() >= 3; });
  ASSERT_NE(group, groups.end());
  const uint64_t first = group->second.at(0);
  const uint64_t third = group->second.at(2);

  // Delete the suffix-0 item: nobody else's SID moves.
  {
    grpc::ClientContext context;
    v1::DeleteItemsRequest request;
    request.set_collection("sift");
    request.add_ids(first);
    v1::DeleteItemsResponse response;
    ASSERT_TRUE(stub_->DeleteItems(&context, request, &response).ok());
  }
  auto after_delete = AllSids("sift");
  EXPECT_EQ(after_delete.size(), 1999u);
  for (const auto& [id, sid] : after_delete) EXPECT_EQ(sid, before.at(id)) << id;

  // Re-upserting an item with an unchanged vector keeps its suffix.
  auto base = ReadMatrix(DataFile("sift5k/sift5k_base.fvecs"), 2000);
  ASSERT_TRUE(base.ok());
  const auto row = [&](uint64_t id) {
    return std::vector<float>(base->values.begin() + id * 128,
                              base->values.begin() + (id + 1) * 128);
  };
  ASSERT_TRUE(Upsert("sift", {third}, row(third)).ok());
  EXPECT_EQ(AllSids("sift").at(third), before.at(third));

  // A new item with the deleted item's vector takes the lowest free suffix of the tuple: 0.
  ASSERT_TRUE(Upsert("sift", {900000}, row(first)).ok());
  auto reinserted = AllSids("sift");
  EXPECT_EQ(reinserted.at(900000), before.at(first));

  // Restart: identical.
  Restart();
  EXPECT_EQ(AllSids("sift"), reinserted);

  // Upserts after training are encoded in the same write: visible at once.
  ASSERT_TRUE(Upsert("sift", {900001, 900002},
                     [&] {
                       auto v = row(10);
                       auto w = row(11);
                       v.insert(v.end(), w.begin(), w.end());
                       return v;
                     }())
                  .ok());
  v1::EncodeResponse encoded;
  ASSERT_TRUE(EncodeIds("sift", {900001, 900002}, &encoded).ok());
  EXPECT_EQ(encoded.sids_size(), 2);
  EXPECT_EQ(Stats("sift").tokenizer().items(), 2002u);
}

// Issue #10, defect 2: a cosine item of subnormal components (Upsert accepts it: its norm is not
// zero) used to make the float scale 1 / ||x|| overflow to inf, so every later TrainTokenizer
// failed ("data[row N, component 0] = inf") and an item upserted under a tokenizer got a SID
// unlike its direction's. Its codes must be those of the same direction at normal scale.
TEST_F(TokenizerServiceTest, TinyCosineVectorsGetTheCodesOfTheirDirection) {
  constexpr int d = 8;
  CreateCollection("tiny", d, v1::METRIC_COSINE);
  // 300 Gaussian items (ids 0..299), then item 1000: eight components of 1e-45 (1.4e-45).
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  std::vector<uint64_t> ids(300);
  std::iota(ids.begin(), ids.end(), 0);
  std::vector<float> values(ids.size() * d);
  for (float& v : values) v = normal(rng);
  ids.push_back(1000);
  values.insert(values.end(), d, 1e-45f);
  ASSERT_TRUE(Upsert("tiny", ids, values).ok());

  const v1::Job job = Train("tiny", {8, 4}, /*balanced=*/false);
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.error();

  // The direction (1, ..., 1) at normal scale, encoded as a new vector.
  v1::EncodeResponse direction;
  {
    grpc::ClientContext context;
    v1::EncodeRequest request;
    request.set_collection("tiny");
    const std::vector<float> ones(d, 1.0f);
    request.mutable_vectors()->Add(ones.begin(), ones.end());
    ASSERT_TRUE(stub_->Encode(&context, request, &direction).ok());
    ASSERT_EQ(direction.encoded_size(), 1);
  }
  const auto codes_of = [&](uint64_t id) {
    v1::EncodeResponse response;
    EXPECT_TRUE(EncodeIds("tiny", {id}, &response).ok());
    EXPECT_EQ(response.sids_size(), 1);
    return response.sids_size() == 1 ? std::vector<uint32_t>(response.sids(0).codes().begin(),
                                                             response.sids(0).codes().end())
                                     : std::vector<uint32_t>();
  };
  const std::vector<uint32_t> expected(direction.encoded(0).codes().begin(),
                                       direction.encoded(0).codes().end());
  ASSERT_EQ(expected.size(), 2u);
  // Trained with the tiny item among the training rows, and upserted under the tokenizer.
  EXPECT_EQ(codes_of(1000), expected);
  ASSERT_TRUE(Upsert("tiny", {1001}, std::vector<float>(d, 3e-45f)).ok());
  EXPECT_EQ(codes_of(1001), expected);
  // And the next training succeeds too.
  EXPECT_EQ(Train("tiny", {8, 4}, /*balanced=*/false, /*seed=*/8).state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(codes_of(1001), codes_of(1000));
}

TEST_F(TokenizerServiceTest, RetrainingReplacesTheVersion) {
  CreateAndUpload("sift", DataFile("sift5k/sift5k_base.fvecs"), 1000);
  ASSERT_EQ(Train("sift", {16, 16}, false).result_version(), 1u);
  const v1::Job second = Train("sift", {8, 8, 8}, true);
  ASSERT_EQ(second.state(), v1::JOB_STATE_SUCCEEDED) << second.error();
  EXPECT_EQ(second.result_version(), 2u);
  const auto stats = Stats("sift");
  EXPECT_EQ(stats.tokenizer().version(), 2u);
  EXPECT_EQ(stats.tokenizer().levels(), 3u);
  EXPECT_EQ(AllSids("sift").size(), 1000u);
  // Old-version entries are gone: a 2-code lookup prefix sees only version-2 SIDs.
  grpc::ClientContext context;
  v1::LookupRequest request;
  request.set_collection("sift");
  request.add_codes(0);
  request.set_limit(100000);
  v1::LookupResponse response;
  ASSERT_TRUE(stub_->Lookup(&context, request, &response).ok());
  for (const v1::Sid& sid : response.sids()) EXPECT_EQ(sid.codes_size(), 3);
}

TEST_F(TokenizerServiceTest, CancelRunningAndPendingJobs) {
  // A job long enough to catch running: Fashion-MNIST, 3 balanced levels of 256.
  CreateAndUpload("fmnist", testing::FashionMnistFile("train-images-idx3-ubyte.gz"), 20000);
  CreateAndUpload("small", DataFile("sift5k/sift5k_base.fvecs"), 500);
  v1::TrainTokenizerRequest big;
  big.set_collection("fmnist");
  big.set_balanced(true);
  big.set_max_iterations(200);
  v1::Job running;
  ASSERT_TRUE(StartTraining(big, &running).ok());
  v1::TrainTokenizerRequest small;
  small.set_collection("small");
  small.add_codebook_sizes(8);
  v1::Job pending;
  ASSERT_TRUE(StartTraining(small, &pending).ok());

  // A second job for a collection with an active one is refused.
  v1::Job refused;
  EXPECT_EQ(StartTraining(big, &refused).error_code(), grpc::StatusCode::FAILED_PRECONDITION);

  const auto cancel = [&](const std::string& id, v1::Job* job) {
    grpc::ClientContext context;
    v1::CancelJobRequest request;
    request.set_id(id);
    return stub_->CancelJob(&context, request, job);
  };
  v1::Job cancelled;
  ASSERT_TRUE(cancel(pending.id(), &cancelled).ok());
  EXPECT_EQ(cancelled.state(), v1::JOB_STATE_CANCELLED);
  ASSERT_TRUE(cancel(running.id(), &cancelled).ok());
  const v1::Job ended = WaitJob(running.id());
  EXPECT_EQ(ended.state(), v1::JOB_STATE_CANCELLED) << ended.error();
  // Nothing was committed; cancelling an ended job is refused.
  EXPECT_FALSE(Stats("fmnist").has_tokenizer());
  EXPECT_EQ(cancel(running.id(), &cancelled).error_code(), grpc::StatusCode::FAILED_PRECONDITION);

  grpc::ClientContext context;
  v1::ListJobsResponse jobs;
  ASSERT_TRUE(stub_->ListJobs(&context, {}, &jobs).ok());
  ASSERT_EQ(jobs.jobs_size(), 2);
  EXPECT_EQ(jobs.jobs(0).id(), pending.id());  // newest first
}

TEST_F(TokenizerServiceTest, RepeatedIdInABatchKeepsItsSidWhenItsCodesEndUnchanged) {
  // One dimension, two clear clusters: items 1-3 at 0, items 4-5 at 10.
  CreateCollection("line", 1, v1::METRIC_L2);
  ASSERT_TRUE(Upsert("line", {1, 2, 3, 4, 5}, {0, 0, 0, 10, 10}).ok());
  ASSERT_EQ(Train("line", {2}, false).state(), v1::JOB_STATE_SUCCEEDED);
  const auto before = AllSids("line");
  ASSERT_EQ(before.size(), 5u);
  // Free a suffix below item 3's, then move item 3 away and back within one batch: the last
  // row wins and its codes are unchanged, so its SID must be too.
  {
    grpc::ClientContext context;
    v1::DeleteItemsRequest request;
    request.set_collection("line");
    request.add_ids(2);
    v1::DeleteItemsResponse response;
    ASSERT_TRUE(stub_->DeleteItems(&context, request, &response).ok());
  }
  ASSERT_TRUE(Upsert("line", {3, 3}, {10, 0}).ok());
  const auto after = AllSids("line");
  EXPECT_EQ(after.at(3), before.at(3));
  EXPECT_EQ(after.at(1), before.at(1));

  // Many identical new items in one batch get distinct suffixes 0, 1, 2, ... after the taken.
  std::vector<uint64_t> ids(3000);
  std::iota(ids.begin(), ids.end(), 100);
  ASSERT_TRUE(Upsert("line", ids, std::vector<float>(ids.size(), 10.0f)).ok());
  std::map<std::string, int> seen;
  for (const auto& [id, sid] : AllSids("line")) ++seen[sid];
  for (const auto& [sid, count] : seen) EXPECT_EQ(count, 1) << sid;
  EXPECT_EQ(Stats("line").tokenizer().largest_group(), 3002u);
}

TEST_F(TokenizerServiceTest, DroppingACollectionCancelsItsJobsAndFreesTheName) {
  CreateAndUpload("fmnist", testing::FashionMnistFile("train-images-idx3-ubyte.gz"), 20000);
  v1::TrainTokenizerRequest big;
  big.set_collection("fmnist");
  big.set_balanced(true);
  big.set_max_iterations(200);
  v1::Job job;
  ASSERT_TRUE(StartTraining(big, &job).ok());
  {
    grpc::ClientContext context;
    v1::DropCollectionRequest request;
    request.set_name("fmnist");
    v1::DropCollectionResponse response;
    ASSERT_TRUE(stub_->DropCollection(&context, request, &response).ok());
  }
  const v1::Job ended = WaitJob(job.id());
  EXPECT_NE(ended.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_NE(ended.state(), v1::JOB_STATE_RUNNING);
  // The name is free again, and the new collection's history does not show the old job.
  CreateAndUpload("fmnist", DataFile("sift5k/sift5k_base.fvecs"), 500);
  const v1::Job fresh = Train("fmnist", {8}, false);
  EXPECT_EQ(fresh.state(), v1::JOB_STATE_SUCCEEDED) << fresh.error();
  grpc::ClientContext context;
  v1::ListJobsRequest request;
  request.set_collection("fmnist");
  v1::ListJobsResponse jobs;
  ASSERT_TRUE(stub_->ListJobs(&context, request, &jobs).ok());
  ASSERT_EQ(jobs.jobs_size(), 1);
  EXPECT_EQ(jobs.jobs(0).id(), fresh.id());
}

TEST_F(TokenizerServiceTest, BadRequests) {
  CreateAndUpload("c", DataFile("sift5k/sift5k_base.fvecs"), 300);
  const auto train_error = [&](const std::function<void(v1::TrainTokenizerRequest&)>& edit,
                               const std::string& fragment) {
    v1::TrainTokenizerRequest request;
    request.set_collection("c");
    request.add_codebook_sizes(8);
    edit(request);
    v1::Job job;
    const grpc::Status status = StartTraining(request, &job);
    EXPECT_NE(status.error_message().find(fragment), std::string::npos)
        << fragment << " / " << status.error_message();
    return status.error_code();
  };
  using R = v1::TrainTokenizerRequest;
  EXPECT_EQ(train_error([](R& r) { r.set_collection("nope"); }, "nope"),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(train_error([](R& r) { r.set_codebook_sizes(0, 0); }, "codebook_sizes[0] = 0"),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(train_error([](R& r) { r.set_codebook_sizes(0, 301); }, "301 exceeds the 300"),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(train_error(
                [](R& r) {
                  for (int i = 0; i < 16; ++i) r.add_codebook_sizes(2);
                },
                "17 levels"),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(train_error([](R& r) { r.set_balance_slack(0.2); }, "balanced = true"),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(train_error(
                [](R& r) {
                  r.set_balanced(true);
                  r.add_size_bounds()->set_size_min(50);
                  r.mutable_size_bounds(0)->set_size_max(60);
                },
                "size_min 50"),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(train_error([](R& r) { r.set_max_iterations(5000); }, "5000"),
            grpc::StatusCode::INVALID_ARGUMENT);

  // Before any training: Encode, Lookup and Export say so.
  v1::EncodeResponse encoded;
  EXPECT_EQ(EncodeIds("c", {1}, &encoded).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_FALSE(Stats("c").has_tokenizer());

  ASSERT_EQ(Train("c", {8, 8}, false).state(), v1::JOB_STATE_SUCCEEDED);
  const auto encode_vectors = [&](std::vector<float> values) {
    grpc::ClientContext context;
    v1::EncodeRequest request;
    request.set_collection("c");
    request.mutable_vectors()->Add(values.begin(), values.end());
    v1::EncodeResponse response;
    return stub_->Encode(&context, request, &response);
  };
  EXPECT_EQ(encode_vectors(std::vector<float>(127, 1.0f)).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  std::vector<float> nan(128, 1.0f);
  nan[3] = std::nanf("");
  const grpc::Status nan_status = encode_vectors(nan);
  EXPECT_EQ(nan_status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(nan_status.error_message().find("component 3"), std::string::npos);
  EXPECT_EQ(EncodeIds("c", {}, &encoded).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(EncodeIds("nope", {1}, &encoded).error_code(), grpc::StatusCode::NOT_FOUND);

  const auto lookup = [&](const std::vector<uint32_t>& codes, const std::string& tokens,
                          uint32_t limit) {
    grpc::ClientContext context;
    v1::LookupRequest request;
    request.set_collection("c");
    request.mutable_codes()->Add(codes.begin(), codes.end());
    request.set_tokens(tokens);
    request.set_limit(limit);
    v1::LookupResponse response;
    return stub_->Lookup(&context, request, &response).error_code();
  };
  EXPECT_EQ(lookup({}, "", 0), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(lookup({8}, "", 0), grpc::StatusCode::INVALID_ARGUMENT);           // code outside 0..7
  EXPECT_EQ(lookup({1, 2, 3, 4}, "", 0), grpc::StatusCode::INVALID_ARGUMENT);  // too long
  EXPECT_EQ(lookup({}, "<a_1><c_2>", 0), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(lookup({1}, "<a_1>", 0), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(lookup({1}, "", 200000), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(lookup({1, 2, 0}, "", 0), grpc::StatusCode::OK);  // codes and suffix

  grpc::ClientContext context;
  v1::GetJobRequest request;
  request.set_id("job-999999");
  v1::Job job;
  EXPECT_EQ(stub_->GetJob(&context, request, &job).error_code(), grpc::StatusCode::NOT_FOUND);
}

}  // namespace
}  // namespace quantd
