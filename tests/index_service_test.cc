// The IVF-PQ index through gRPC, in-process: the TrainIndex job lifecycle, Search recall on
// sift5k against its ground truth, read-your-writes of upserts and deletes, identical results
// after a restart, cancellation, and bad inputs.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <set>
#include <thread>

#include "client/client.h"
#include "gtest/gtest.h"
#include "io/vector_file.h"
#include "rocksdb/db.h"
#include "server/index_job.h"
#include "server/server.h"
#include "tests/server_fixture.h"
#include "tests/test_support.h"

namespace quantd {
namespace {

using ::quantd::testing::DataFile;
using ::quantd::testing::TempDir;

class IndexServiceTest : public ::quantd::testing::InProcessServerTest {
 protected:
  grpc::Status StartIndex(const v1::TrainIndexRequest& request, v1::Job* job) {
    grpc::ClientContext context;
    return stub_->TrainIndex(&context, request, job);
  }

  v1::Job TrainIndex(const std::string& collection, uint64_t seed = 7) {
    v1::TrainIndexRequest request;
    request.set_collection(collection);
    request.set_seed(seed);
    v1::Job job;
    const grpc::Status status = StartIndex(request, &job);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(job.kind(), "train_index");
    return WaitJob(job.id());
  }

  grpc::Status Search(const std::string& collection, const std::vector<float>& queries, uint32_t k,
                      uint32_t nprobe, uint32_t refine, v1::SearchResponse* response) {
    grpc::ClientContext context;
    v1::SearchRequest request;
    request.set_collection(collection);
    request.mutable_queries()->Add(queries.begin(), queries.end());
    request.set_k(k);
    request.set_nprobe(nprobe);
    request.set_refine(refine);
    return stub_->Search(&context, request, response);
  }

  grpc::Status Delete(const std::string& collection, const std::vector<uint64_t>& ids) {
    grpc::ClientContext context;
    v1::DeleteItemsRequest request;
    request.set_collection(collection);
    request.mutable_ids()->Add(ids.begin(), ids.end());
    v1::DeleteItemsResponse response;
    return stub_->DeleteItems(&context, request, &response);
  }
};

// Mean recall@10 of `response` against the first 10 ground-truth neighbours per query.
double RecallAt10(const v1::SearchResponse& response, const IntMatrix& truth) {
  double hits = 0;
  for (int q = 0; q < response.results_size(); ++q) {
    std::set<int64_t> expected(truth.values.begin() + q * truth.dim,
                               truth.values.begin() + q * truth.dim + 10);
    for (uint64_t id : response.results(q).ids()) hits += expected.count(static_cast<int64_t>(id));
  }
  return hits / (10.0 * response.results_size());
}

TEST_F(IndexServiceTest, TrainSearchUpsertDeleteRestart) {
  CreateAndUpload("sift", DataFile("sift5k/sift5k_base.fvecs"), 5000);
  auto queries = ReadMatrix(DataFile("sift5k/sift5k_query.fvecs"));
  ASSERT_TRUE(queries.ok()) << queries.status();
  auto truth = ReadIntMatrix(DataFile("sift5k/sift5k_groundtruth.ivecs"));
  ASSERT_TRUE(truth.ok()) << truth.status();

  // Before any index: a clear FAILED_PRECONDITION.
  v1::SearchResponse response;
  const grpc::Status before = Search("sift", queries->values, 10, 0, 0, &response);
  EXPECT_EQ(before.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(before.error_message().find("TrainIndex"), std::string::npos);

  const v1::Job job = TrainIndex("sift");
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.error();
  EXPECT_EQ(job.kind(), "train_index");
  EXPECT_EQ(job.result_version(), 1u);
  EXPECT_EQ(job.progress(), 1.0);

  {
    grpc::ClientContext context;
    v1::GetStatsRequest request;
    request.set_collection("sift");
    v1::GetStatsResponse stats;
    ASSERT_TRUE(stub_->GetStats(&context, request, &stats).ok());
    ASSERT_TRUE(stats.has_index());
    EXPECT_FALSE(stats.has_tokenizer());
    const v1::IndexStats& index = stats.index();
    EXPECT_EQ(index.version(), 1u);
    EXPECT_EQ(index.nlist(), 128u);  // min(4 sqrt(5000) = 283, 5000 / 39 = 128)
    EXPECT_EQ(index.m(), 32u);       // d / 4
    EXPECT_EQ(index.nbits(), 8u);
    EXPECT_EQ(index.items(), 5000u);
    EXPECT_EQ(index.code_size(), 32u);
    EXPECT_EQ(index.bytes_per_vector(), 40u);
    EXPECT_NEAR(index.list_size_mean(), 5000.0 / 128, 1e-9);
    EXPECT_LE(index.list_size_min(), 39u);
    EXPECT_GE(index.list_size_max(), 40u);
    EXPECT_GE(index.imbalance_factor(), 1.0);
    EXPECT_GT(index.memory_bytes(), 5000u * 40);
    EXPECT_EQ(index.trained_items(), 5000u);
    EXPECT_GT(index.train_seconds(), 0);
    EXPECT_EQ(index.job_id(), job.id());
    EXPECT_EQ(index.coarse_iterations(), 10u);
    EXPECT_EQ(index.pq_iterations(), 25u);
  }

  // Defaults on n = 5000, d = 128: nlist = min(4 sqrt(n), n / 39) = 128, nprobe = 128 / 8.
  ASSERT_TRUE(Search("sift", queries->values, 10, 0, 0, &response).ok());
  EXPECT_EQ(response.index_version(), 1u);
  EXPECT_EQ(response.nprobe(), 16u);
  ASSERT_EQ(response.results_size(), 100);
  for (const v1::SearchResult& result : response.results()) {
    ASSERT_EQ(result.ids_size(), 10);
    ASSERT_EQ(result.distances_size(), 10);
    for (int i = 1; i < 10; ++i) EXPECT_LE(result.distances(i - 1), result.distances(i));
  }
  const double recall = RecallAt10(response, *truth);
  EXPECT_GT(recall, 0.6) << recall;
  // Refining 10 x k candidates by exact distances leaves mostly the probing's own misses.
  v1::SearchResponse refined;
  ASSERT_TRUE(Search("sift", queries->values, 10, 16, 10, &refined).ok());
  const double refined_recall = RecallAt10(refined, *truth);
  EXPECT_GT(refined_recall, 0.75) << refined_recall;
  EXPECT_GT(refined_recall, recall);
  ASSERT_TRUE(Search("sift", queries->values, 10, 32, 10, &refined).ok());
  EXPECT_GT(RecallAt10(refined, *truth), 0.9) << RecallAt10(refined, *truth);
  std::printf("recall@10 on sift5k: nprobe 16 %.3f, refine 10 %.3f, nprobe 32 refine 10 %.3f\n",
              recall, refined_recall, RecallAt10(refined, *truth));
  // nprobe above nlist scans every list.
  v1::SearchResponse all_lists;
  ASSERT_TRUE(Search("sift", queries->values, 10, 100000, 10, &all_lists).ok());
  EXPECT_EQ(all_lists.nprobe(), 128u);
  EXPECT_GT(RecallAt10(all_lists, *truth), 0.95);

  // Read your writes: a new item equal to query 0 is its nearest neighbour right after the
  // acknowledgement; deleted, it is gone.
  const std::vector<float> q0(queries->values.begin(), queries->values.begin() + 128);
  ASSERT_TRUE(Upsert("sift", {900000}, q0).ok());
  ASSERT_TRUE(Search("sift", q0, 5, 16, 10, &response).ok());
  ASSERT_GE(response.results(0).ids_size(), 1);
  EXPECT_EQ(response.results(0).ids(0), 900000u);
  EXPECT_EQ(response.results(0).distances(0), 0.0f);  // exact with refine
  ASSERT_TRUE(Delete("sift", {900000}).ok());
  ASSERT_TRUE(Search("sift", q0, 5, 16, 10, &response).ok());
  for (uint64_t id : response.results(0).ids()) EXPECT_NE(id, 900000u);
  // An upsert replacing a stored vector moves the item: item 1 becomes query 1.
  const std::vector<float> q1(queries->values.begin() + 128, queries->values.begin() + 256);
  ASSERT_TRUE(Upsert("sift", {1}, q1).ok());
  ASSERT_TRUE(Search("sift", q1, 1, 16, 10, &response).ok());
  EXPECT_EQ(response.results(0).ids(0), 1u);

  // A restart reloads model and entries: identical answers, with and without refine.
  v1::SearchResponse plain_before, refined_before;
  ASSERT_TRUE(Search("sift", queries->values, 10, 8, 0, &plain_before).ok());
  ASSERT_TRUE(Search("sift", queries->values, 10, 8, 4, &refined_before).ok());
  Restart();
  v1::SearchResponse plain_after, refined_after;
  ASSERT_TRUE(Search("sift", queries->values, 10, 8, 0, &plain_after).ok());
  ASSERT_TRUE(Search("sift", queries->values, 10, 8, 4, &refined_after).ok());
  EXPECT_EQ(plain_before.SerializeAsString(), plain_after.SerializeAsString());
  EXPECT_EQ(refined_before.SerializeAsString(), refined_after.SerializeAsString());
  // The job is still listed as succeeded.
  EXPECT_EQ(GetJob(job.id()).state(), v1::JOB_STATE_SUCCEEDED);

  // Retraining commits version 2; the moved item 1 is indexed at its new place.
  const v1::Job second = TrainIndex("sift", 8);
  ASSERT_EQ(second.state(), v1::JOB_STATE_SUCCEEDED) << second.error();
  EXPECT_EQ(second.result_version(), 2u);
  ASSERT_TRUE(Search("sift", q1, 1, 16, 10, &response).ok());
  EXPECT_EQ(response.index_version(), 2u);
  EXPECT_EQ(response.results(0).ids(0), 1u);
}

// The fast-scan layout through the service: shape and bytes in GetStats, the job's decision,
// recall near the plain layout's with the same code bytes, read-your-writes, compact lists after
// a churn of 20%, and identical answers after a restart.
TEST_F(IndexServiceTest, FastScanLayoutServesSurvivesChurnAndRestart) {
  CreateAndUpload("fs", DataFile("sift5k/sift5k_base.fvecs"), 5000);
  auto queries = ReadMatrix(DataFile("sift5k/sift5k_query.fvecs"));
  ASSERT_TRUE(queries.ok()) << queries.status();
  auto truth = ReadIntMatrix(DataFile("sift5k/sift5k_groundtruth.ivecs"));
  ASSERT_TRUE(truth.ok()) << truth.status();

  // The default layout for 5000 items is plain, and the job says why.
  const v1::Job plain = TrainIndex("fs");
  ASSERT_EQ(plain.state(), v1::JOB_STATE_SUCCEEDED) << plain.error();
  EXPECT_NE(plain.decision().find("plain layout: 5000 items < 200000"), std::string::npos)
      << plain.decision();
  v1::SearchResponse plain_response;
  ASSERT_TRUE(Search("fs", queries->values, 10, 16, 0, &plain_response).ok());
  const double plain_recall = RecallAt10(plain_response, *truth);

  v1::TrainIndexRequest request;
  request.set_collection("fs");
  request.set_seed(7);
  request.set_layout(v1::INDEX_LAYOUT_FAST_SCAN);
  v1::Job started;
  ASSERT_TRUE(StartIndex(request, &started).ok());
  const v1::Job job = WaitJob(started.id());
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.error();
  EXPECT_NE(job.decision().find("fast-scan, m 64 x 4 bit, 168 B a vector in the lists (32 B code "
                                "+ 8 B id + 128 B SQ8 refine code)"),
            std::string::npos)
      << job.decision();
  EXPECT_NE(job.decision().find("SQ8 refine codes: fast-scan ranks coarsely"), std::string::npos)
      << job.decision();
  const auto index_stats = [&] {
    grpc::ClientContext context;
    v1::GetStatsRequest stats_request;
    stats_request.set_collection("fs");
    v1::GetStatsResponse stats;
    EXPECT_TRUE(stub_->GetStats(&context, stats_request, &stats).ok());
    return stats.index();
  };
  const v1::IndexStats stats = index_stats();
  EXPECT_EQ(stats.layout(), v1::INDEX_LAYOUT_FAST_SCAN);
  EXPECT_EQ(stats.m(), 64u);  // twice the plain default: the same 32 code bytes at 4 bits
  EXPECT_EQ(stats.nbits(), 4u);
  EXPECT_EQ(stats.code_size(), 32u);
  EXPECT_EQ(stats.bytes_per_vector(), 32u + 8 + 128);
  EXPECT_EQ(stats.refine_codes(), v1::REFINE_CODES_SQ8);
  EXPECT_EQ(stats.refine_code_size(), 128u);
  EXPECT_EQ(stats.refine_code_bytes(), 5000u * 128);
  // Memory by part: the parts add up, and each holds at least what it must.
  const v1::IndexMemory& memory = stats.memory();
  EXPECT_EQ(memory.codes() + memory.ids() + memory.refine_codes() + memory.id_map() +
                memory.centroids() + memory.tables(),
            stats.memory_bytes());
  EXPECT_GE(memory.codes(), stats.list_code_bytes());
  EXPECT_GE(memory.ids(), 5000u * 8);
  EXPECT_GE(memory.refine_codes(), 5000u * 128);
  EXPECT_GE(memory.centroids(), stats.nlist() * 128 * 4);
  EXPECT_GE(memory.tables(), stats.nlist() * 64 * 16 * 4);  // the precomputed L2 table
  // Whole blocks of 32: at most 31 empty slots of 32 bytes per list.
  EXPECT_GE(stats.list_code_bytes(), 5000u * 32);
  EXPECT_LE(stats.list_code_bytes(), 5000u * 32 + stats.nlist() * 31 * 32);

  v1::SearchResponse response;
  ASSERT_TRUE(Search("fs", queries->values, 10, 16, 0, &response).ok());
  const double recall = RecallAt10(response, *truth);
  // Refine 10 from the in-memory SQ8 codes, and from the stored vectors (refine_exact): nearly
  // the same recall; exact distances only from the stored vectors.
  v1::SearchResponse refined;
  ASSERT_TRUE(Search("fs", queries->values, 10, 16, 10, &refined).ok());
  const double refined_recall = RecallAt10(refined, *truth);
  v1::SearchResponse exact;
  {
    grpc::ClientContext context;
    v1::SearchRequest exact_request;
    exact_request.set_collection("fs");
    exact_request.mutable_queries()->Add(queries->values.begin(), queries->values.end());
    exact_request.set_k(10);
    exact_request.set_nprobe(16);
    exact_request.set_refine(10);
    exact_request.set_refine_exact(true);
    ASSERT_TRUE(stub_->Search(&context, exact_request, &exact).ok());
  }
  const double exact_recall = RecallAt10(exact, *truth);
  std::printf(
      "sift5k nprobe 16 recall@10: plain PQ32x8 %.3f, fast-scan PQ64x4 %.3f, SQ8 refine 10 %.3f, "
      "exact refine 10 %.3f\n",
      plain_recall, recall, refined_recall, exact_recall);
  EXPECT_GT(recall, plain_recall - 0.1);
  EXPECT_GT(refined_recall, 0.75);
  EXPECT_GT(refined_recall, recall + 0.1);
  EXPECT_GT(refined_recall, exact_recall - 0.02);
  // Exact distances: those of the stored vectors (query 0's nearest, recomputed here).
  auto base_vectors = ReadMatrix(DataFile("sift5k/sift5k_base.fvecs"));
  ASSERT_TRUE(base_vectors.ok());
  double d0 = 0;
  for (int j = 0; j < 128; ++j) {
    const double diff = static_cast<double>(queries->values[j]) -
                        base_vectors->values[exact.results(0).ids(0) * 128 + j];
    d0 += diff * diff;
  }
  EXPECT_NEAR(exact.results(0).distances(0), d0, 1e-3 * d0);

  // Read your writes through the blocked lists.
  const std::vector<float> q0(queries->values.begin(), queries->values.begin() + 128);
  ASSERT_TRUE(Upsert("fs", {900000}, q0).ok());
  ASSERT_TRUE(Search("fs", q0, 5, 16, 10, &response).ok());
  ASSERT_GE(response.results(0).ids_size(), 1);
  EXPECT_EQ(response.results(0).ids(0), 900000u);
  ASSERT_TRUE(Delete("fs", {900000}).ok());

  // Churn of 20%: delete 1000 items, then upsert them back. The lists reuse their blocks.
  auto base = ReadMatrix(DataFile("sift5k/sift5k_base.fvecs"));
  ASSERT_TRUE(base.ok()) << base.status();
  std::vector<uint64_t> churned;
  for (uint64_t id = 0; id < 5000; id += 5) churned.push_back(id);
  ASSERT_TRUE(Delete("fs", churned).ok());
  std::vector<float> vectors;
  for (uint64_t id : churned) {
    vectors.insert(vectors.end(), base->values.begin() + id * 128,
                   base->values.begin() + (id + 1) * 128);
  }
  ASSERT_TRUE(Upsert("fs", churned, vectors).ok());
  const v1::IndexStats churned_stats = index_stats();
  EXPECT_EQ(churned_stats.items(), 5000u);
  EXPECT_LE(churned_stats.list_code_bytes(), 5000u * 32 + stats.nlist() * 31 * 32);
  EXPECT_LE(churned_stats.list_code_capacity_bytes(), 2 * churned_stats.list_code_bytes());
  EXPECT_EQ(churned_stats.refine_code_bytes(), 5000u * 128);
  ASSERT_TRUE(Search("fs", queries->values, 10, 16, 0, &response).ok());
  EXPECT_NEAR(RecallAt10(response, *truth), recall, 0.03);

  // A restart rebuilds the blocked lists from the stored codes: identical answers.
  v1::SearchResponse before, after;
  ASSERT_TRUE(Search("fs", queries->values, 10, 8, 0, &before).ok());
  Restart();
  ASSERT_TRUE(Search("fs", queries->values, 10, 8, 0, &after).ok());
  EXPECT_EQ(before.SerializeAsString(), after.SerializeAsString());
  EXPECT_EQ(index_stats().layout(), v1::INDEX_LAYOUT_FAST_SCAN);
}

// The defaults TrainIndex fills in per collection size and dimension.
TEST(IndexPlanTest, DefaultsFollowSizeAndDimension) {
  const auto plan = [](int64_t items, int64_t d, const v1::TrainIndexRequest& request = {}) {
    auto result = IndexPlanFromRequest(request, items, d, Metric::kL2);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : IndexPlan{};
  };
  // Small: plain, 8 bits, 4 dimensions a sub-code.
  IndexPlan small = plan(50000, 128);
  EXPECT_FALSE(small.options.fast_scan);
  EXPECT_EQ(small.options.m, 32);
  EXPECT_EQ(small.options.nbits, 8);
  EXPECT_EQ(small.options.nlist, 894);  // round(4 sqrt(50000))
  // Large: fast-scan, 4 bits, twice the sub-quantizers (the same bytes).
  IndexPlan large = plan(1000000, 128);
  EXPECT_TRUE(large.options.fast_scan);
  EXPECT_EQ(large.options.m, 64);
  EXPECT_EQ(large.options.nbits, 4);
  EXPECT_EQ(large.options.nlist, 4000);
  EXPECT_EQ(large.options.refine_codes, RefineCodes::kSq8);
  EXPECT_EQ(small.options.refine_codes, RefineCodes::kNone);
  EXPECT_NE(large.decision.find("fast-scan layout: 1000000 items >= 200000"), std::string::npos)
      << large.decision;
  EXPECT_EQ(plan(1000000, 784).options.m, 112);  // 2 x 56
  EXPECT_EQ(plan(1000000, 32).options.m, 16);
  EXPECT_EQ(plan(1000000, 100).options.m, 50);
  EXPECT_EQ(plan(1000000, 99).options.m, 11);  // 2 x 11 does not divide 99
  // An explicit nbits 8 keeps the default layout plain; an explicit layout is kept.
  v1::TrainIndexRequest eight;
  eight.set_nbits(8);
  EXPECT_FALSE(plan(1000000, 128, eight).options.fast_scan);
  EXPECT_EQ(plan(1000000, 128, eight).options.m, 32);
  v1::TrainIndexRequest plain_layout;
  plain_layout.set_layout(v1::INDEX_LAYOUT_PLAIN);
  EXPECT_FALSE(plan(1000000, 128, plain_layout).options.fast_scan);
  v1::TrainIndexRequest fast_layout;
  fast_layout.set_layout(v1::INDEX_LAYOUT_FAST_SCAN);
  EXPECT_TRUE(plan(1000, 128, fast_layout).options.fast_scan);
  EXPECT_EQ(plan(1000, 128, fast_layout).options.nbits, 4);
}

TEST_F(IndexServiceTest, FewerItemsThanKGiveFewerResults) {
  CreateAndUpload("tiny", DataFile("sift5k/sift5k_base.fvecs"), 300);
  v1::TrainIndexRequest request;
  request.set_collection("tiny");
  request.set_nbits(4);
  v1::Job job;
  ASSERT_TRUE(StartIndex(request, &job).ok());
  ASSERT_EQ(WaitJob(job.id()).state(), v1::JOB_STATE_SUCCEEDED);
  auto base = ReadMatrix(DataFile("sift5k/sift5k_base.fvecs"), 1);
  ASSERT_TRUE(base.ok());
  v1::SearchResponse response;
  // Scanning every list of 300 items with k = 1000 returns all 300, no placeholders.
  ASSERT_TRUE(Search("tiny", base->values, 1000, 100000, 0, &response).ok());
  ASSERT_EQ(response.results_size(), 1);
  EXPECT_EQ(response.results(0).ids_size(), 300);
  std::set<uint64_t> ids(response.results(0).ids().begin(), response.results(0).ids().end());
  EXPECT_EQ(ids.size(), 300u);
  EXPECT_EQ(*ids.rbegin(), 299u);
}

// Inner product and cosine: similarities, largest first; a stored item is its own best match.
TEST_F(IndexServiceTest, InnerProductAndCosineRankBySimilarity) {
  auto base = ReadMatrix(DataFile("sift5k/sift5k_base.fvecs"), 1000);
  ASSERT_TRUE(base.ok()) << base.status();
  std::vector<uint64_t> ids(1000);
  for (uint64_t i = 0; i < 1000; ++i) ids[i] = i;
  for (const v1::Metric metric : {v1::METRIC_INNER_PRODUCT, v1::METRIC_COSINE}) {
    const std::string name = metric == v1::METRIC_COSINE ? "cos" : "ip";
    {
      grpc::ClientContext context;
      v1::CreateCollectionRequest request;
      request.set_name(name);
      request.set_dimension(128);
      request.set_metric(metric);
      v1::CreateCollectionResponse response;
      ASSERT_TRUE(stub_->CreateCollection(&context, request, &response).ok());
    }
    ASSERT_TRUE(Upsert(name, ids, base->values).ok());
    ASSERT_EQ(TrainIndex(name).state(), v1::JOB_STATE_SUCCEEDED);
    // Item 5, scaled: the cosine neighbour is item 5 itself with similarity 1.
    std::vector<float> query(base->values.begin() + 5 * 128, base->values.begin() + 6 * 128);
    for (float& v : query) v *= 3.0f;
    v1::SearchResponse response;
    ASSERT_TRUE(Search(name, query, 10, 100000, 10, &response).ok());
    const v1::SearchResult& result = response.results(0);
    ASSERT_EQ(result.ids_size(), 10);
    for (int i = 1; i < 10; ++i) EXPECT_GE(result.distances(i - 1), result.distances(i)) << name;
    if (metric == v1::METRIC_COSINE) {
      EXPECT_EQ(result.ids(0), 5u);
      EXPECT_NEAR(result.distances(0), 1.0f, 1e-5);
    } else {
      // Exact inner products after refine: the first is the largest over all items.
      double best = -1e30;
      for (int64_t r = 0; r < 1000; ++r) {
        double dot = 0;
        for (int j = 0; j < 128; ++j)
          dot += static_cast<double>(query[j]) * base->values[r * 128 + j];
        best = std::max(best, dot);
      }
      EXPECT_NEAR(result.distances(0), best, 1e-3 * best);
    }
  }
}

TEST_F(IndexServiceTest, CancelPendingAndRunningIndexJobs) {
  CreateAndUpload("a", DataFile("sift5k/sift5k_base.fvecs"), 5000);
  CreateAndUpload("b", DataFile("sift5k/sift5k_base.fvecs"), 500);
  // A slow job on a (many PQ iterations), and a job on b queued behind it.
  v1::TrainIndexRequest slow;
  slow.set_collection("a");
  slow.set_pq_iterations(300);
  v1::Job running;
  ASSERT_TRUE(StartIndex(slow, &running).ok());
  v1::TrainIndexRequest quick;
  quick.set_collection("b");
  v1::Job pending;
  ASSERT_TRUE(StartIndex(quick, &pending).ok());
  // A second job of either kind on a busy collection is refused.
  v1::Job refused;
  EXPECT_EQ(StartIndex(slow, &refused).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  {
    grpc::ClientContext context;
    v1::TrainTokenizerRequest tokenizer;
    tokenizer.set_collection("a");
    EXPECT_EQ(stub_->TrainTokenizer(&context, tokenizer, &refused).error_code(),
              grpc::StatusCode::FAILED_PRECONDITION);
  }

  const auto cancel = [&](const std::string& id, v1::Job* job) {
    grpc::ClientContext context;
    v1::CancelJobRequest request;
    request.set_id(id);
    return stub_->CancelJob(&context, request, job);
  };
  v1::Job cancelled;
  ASSERT_TRUE(cancel(pending.id(), &cancelled).ok());
  EXPECT_EQ(cancelled.state(), v1::JOB_STATE_CANCELLED);
  while (GetJob(running.id()).state() == v1::JOB_STATE_PENDING) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ASSERT_TRUE(cancel(running.id(), &cancelled).ok());
  const v1::Job ended = WaitJob(running.id());
  EXPECT_EQ(ended.state(), v1::JOB_STATE_CANCELLED) << ended.error();

  // Nothing was committed.
  v1::SearchResponse response;
  EXPECT_EQ(Search("a", std::vector<float>(128, 1.0f), 1, 0, 0, &response).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Search("b", std::vector<float>(128, 1.0f), 1, 0, 0, &response).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);

  grpc::ClientContext context;
  v1::ListJobsResponse jobs;
  ASSERT_TRUE(stub_->ListJobs(&context, {}, &jobs).ok());
  ASSERT_EQ(jobs.jobs_size(), 2);
  for (const v1::Job& job : jobs.jobs()) EXPECT_EQ(job.kind(), "train_index");
}

TEST_F(IndexServiceTest, InterruptedJobFailsAndDropRemovesTheIndex) {
  CreateAndUpload("x", DataFile("sift5k/sift5k_base.fvecs"), 5000);
  v1::TrainIndexRequest request;
  request.set_collection("x");
  v1::Job job;
  ASSERT_TRUE(StartIndex(request, &job).ok());
  Restart();  // stops the job before it can commit (training alone takes far longer)
  const v1::Job interrupted = GetJob(job.id());
  EXPECT_EQ(interrupted.state(), v1::JOB_STATE_FAILED);
  EXPECT_NE(interrupted.error().find("interrupted"), std::string::npos) << interrupted.error();
  v1::SearchResponse response;
  const std::vector<float> query(128, 1.0f);
  EXPECT_EQ(Search("x", query, 1, 0, 0, &response).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);

  ASSERT_EQ(TrainIndex("x").state(), v1::JOB_STATE_SUCCEEDED);
  ASSERT_TRUE(Search("x", query, 1, 0, 0, &response).ok());
  {
    grpc::ClientContext context;
    v1::DropCollectionRequest drop;
    drop.set_name("x");
    v1::DropCollectionResponse dropped;
    ASSERT_TRUE(stub_->DropCollection(&context, drop, &dropped).ok());
    EXPECT_EQ(dropped.items_deleted(), 5000u);
  }
  // The name is free again and the new collection starts without an index, also after a
  // restart.
  CreateAndUpload("x", DataFile("sift5k/sift5k_base.fvecs"), 500);
  EXPECT_EQ(Search("x", query, 1, 0, 0, &response).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  Restart();
  EXPECT_EQ(Search("x", query, 1, 0, 0, &response).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

// Overwrites `key` of column family `family` in the (closed) database at `path`.
void OverwriteKey(const std::string& path, const std::string& family, const std::string& key,
                  const std::string& value) {
  std::vector<std::string> names;
  ASSERT_TRUE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), path, &names).ok());
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  for (const std::string& name : names)
    descriptors.emplace_back(name, rocksdb::ColumnFamilyOptions());
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open(rocksdb::DBOptions(), path, descriptors, &handles, &db).ok());
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == family) {
      EXPECT_TRUE(db->Put(rocksdb::WriteOptions(), handles[i], key, value).ok());
    }
  }
  for (rocksdb::ColumnFamilyHandle* handle : handles) {
    EXPECT_TRUE(db->DestroyColumnFamilyHandle(handle).ok());
  }
  EXPECT_TRUE(db->Close().ok());
  delete db;
}

TEST_F(IndexServiceTest, CorruptIndexIsDataLossForThatCollectionOnly) {
  CreateAndUpload("hurt", DataFile("sift5k/sift5k_base.fvecs"), 1000);  // collection id 1
  CreateAndUpload("fine", DataFile("sift5k/sift5k_base.fvecs"), 1000);  // collection id 2
  ASSERT_EQ(TrainIndex("hurt").state(), v1::JOB_STATE_SUCCEEDED);
  ASSERT_EQ(TrainIndex("fine").state(), v1::JOB_STATE_SUCCEEDED);
  stub_.reset();
  server_->Shutdown(std::chrono::seconds(5));
  server_.reset();
  // models key of index version 1 of collection 1: <cid:be32>"ivf"<version:be32>.
  const std::string key("\0\0\0\x01ivf\0\0\0\x01", 11);
  OverwriteKey(dir_.path() + "/data", "models", key, "QIDX but not a blob");
  Start();

  v1::SearchResponse response;
  const std::vector<float> query(128, 1.0f);
  const grpc::Status hurt = Search("hurt", query, 1, 0, 0, &response);
  EXPECT_EQ(hurt.error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_NE(hurt.error_message().find("hurt"), std::string::npos) << hurt.error_message();
  // Writes that would leave the index behind are refused too; reads of the items still work.
  EXPECT_EQ(Upsert("hurt", {1}, query).error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_EQ(Delete("hurt", {1}).error_code(), grpc::StatusCode::DATA_LOSS);
  {
    grpc::ClientContext context;
    v1::GetStatsRequest request;
    request.set_collection("hurt");
    v1::GetStatsResponse stats;
    EXPECT_EQ(stub_->GetStats(&context, request, &stats).error_code(), grpc::StatusCode::DATA_LOSS);
  }
  // The other collection serves as before; retraining the damaged one repairs it.
  EXPECT_TRUE(Search("fine", query, 1, 0, 0, &response).ok());
  ASSERT_EQ(TrainIndex("hurt").state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_TRUE(Search("hurt", query, 1, 0, 0, &response).ok());
  EXPECT_EQ(response.index_version(), 2u);
  EXPECT_TRUE(Upsert("hurt", {1}, query).ok());
}

TEST_F(IndexServiceTest, BadRequests) {
  CreateAndUpload("c", DataFile("sift5k/sift5k_base.fvecs"), 1000);
  const auto train_error = [&](const std::function<void(v1::TrainIndexRequest&)>& edit,
                               const std::string& fragment) {
    v1::TrainIndexRequest request;
    request.set_collection("c");
    edit(request);
    v1::Job job;
    const grpc::Status status = StartIndex(request, &job);
    EXPECT_NE(status.error_message().find(fragment), std::string::npos)
        << fragment << " / " << status.error_message();
    return status.error_code();
  };
  using R = v1::TrainIndexRequest;
  EXPECT_EQ(train_error([](R& r) { r.set_collection("nope"); }, "nope"),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(train_error([](R& r) { r.set_nlist(1001); }, "nlist 1001"),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(train_error([](R& r) { r.set_m(3); }, "m 3 does not divide dimension 128"),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(train_error([](R& r) { r.set_nbits(6); }, "nbits 6"),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(train_error(
                [](R& r) {
                  r.set_sample_size(100);
                  r.set_nbits(8);
                },
                "nbits 8 needs at least 256"),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(train_error([](R& r) { r.set_coarse_iterations(5000); }, "coarse_iterations 5000"),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(train_error([](R& r) { r.set_pq_iterations(5000); }, "pq_iterations 5000"),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(train_error([](R& r) { r.set_layout(static_cast<v1::IndexLayout>(7)); }, "layout 7"),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(train_error([](R& r) { r.set_refine_codes(static_cast<v1::RefineCodes>(9)); },
                        "refine_codes 9 is not a RefineCodes"),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(train_error(
                [](R& r) {
                  r.set_layout(v1::INDEX_LAYOUT_FAST_SCAN);
                  r.set_nbits(8);
                },
                "INDEX_LAYOUT_FAST_SCAN needs nbits 4 (got 8)"),
            grpc::StatusCode::INVALID_ARGUMENT);
  {
    grpc::ClientContext context;
    v1::CreateCollectionRequest create;
    create.set_name("empty");
    create.set_dimension(8);
    create.set_metric(v1::METRIC_L2);
    v1::CreateCollectionResponse created;
    ASSERT_TRUE(stub_->CreateCollection(&context, create, &created).ok());
    v1::TrainIndexRequest request;
    request.set_collection("empty");
    v1::Job job;
    EXPECT_EQ(StartIndex(request, &job).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  }
  // No job was created by any of these.
  {
    grpc::ClientContext context;
    v1::ListJobsResponse jobs;
    ASSERT_TRUE(stub_->ListJobs(&context, {}, &jobs).ok());
    EXPECT_EQ(jobs.jobs_size(), 0);
  }

  ASSERT_EQ(TrainIndex("c").state(), v1::JOB_STATE_SUCCEEDED);
  const auto search_error = [&](const std::vector<float>& queries, uint32_t k, uint32_t refine,
                                const std::string& fragment, const std::string& collection = "c") {
    v1::SearchResponse response;
    const grpc::Status status = Search(collection, queries, k, 0, refine, &response);
    EXPECT_NE(status.error_message().find(fragment), std::string::npos)
        << fragment << " / " << status.error_message();
    return status.error_code();
  };
  const std::vector<float> one(128, 1.0f);
  EXPECT_EQ(search_error(one, 10, 0, "nope", "nope"), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(search_error({}, 10, 0, "queries is empty"), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(search_error(std::vector<float>(127, 1.0f), 10, 0, "127 values"),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(search_error(one, 0, 0, "k 0"), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(search_error(one, 1025, 0, "k 1025"), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(search_error(one, 1000, 100, "refine 100"), grpc::StatusCode::INVALID_ARGUMENT);
  std::vector<float> nan = one;
  nan.insert(nan.end(), one.begin(), one.end());
  nan[128 + 5] = std::nanf("");
  EXPECT_EQ(search_error(nan, 10, 0, "queries[row 1, component 5]"),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(search_error(std::vector<float>(128 * 10001, 1.0f), 1, 0, "10001 vectors"),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(search_error(std::vector<float>(128 * 1025, 1.0f), 1024, 0,
                         "1025 queries x k 1024 = 1049600 results exceed 1048576"),
            grpc::StatusCode::INVALID_ARGUMENT);
  // An upsert the index cannot take (NaN) changes nothing: the item count stays.
  std::vector<float> bad = one;
  bad[0] = std::nanf("");
  EXPECT_EQ(Upsert("c", {5}, bad).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1::SearchResponse response;
  ASSERT_TRUE(Search("c", one, 1000, 100000, 0, &response).ok());
  EXPECT_EQ(response.results(0).ids_size(), 1000);
}

}  // namespace
}  // namespace quantd
