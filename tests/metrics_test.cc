// The Prometheus exposition after real traffic: every family is there with the right labels,
// the text passes `promtool check metrics` (Debian package prometheus), a dropped collection's
// series go away, and clients cannot mint method labels.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <regex>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/grpc_raw.h"
#include "tests/server_fixture.h"

namespace quantd {
namespace {

class MetricsTest : public testing::InProcessServerTest {
 protected:
  ServerOptions Options() override {
    ServerOptions options = InProcessServerTest::Options();
    options.metrics_address = "127.0.0.1:0";
    options.max_message_bytes = max_message_bytes_;
    return options;
  }

  // The exposition's body.
  std::string Scrape() {
    const std::string response = testing::HttpGet(server_->metrics_address(), "/metrics");
    const size_t body = response.find("\r\n\r\n");
    EXPECT_NE(body, std::string::npos) << response;
    return body == std::string::npos ? "" : response.substr(body + 4);
  }

  // Runs promtool check metrics on `text`; its output, and *ok whether it passed.
  std::string Promtool(const std::string& text, bool* ok) {
    const std::string input = dir_.File("metrics.txt");
    const std::string output = dir_.File("promtool.txt");
    testing::WriteFile(input, text);
    const int rc = std::system(
        absl::StrCat("promtool check metrics < ", input, " > ", output, " 2>&1").c_str());
    std::string result;
    if (FILE* f = std::fopen(output.c_str(), "r")) {
      char buffer[4096];
      size_t got;
      while ((got = std::fread(buffer, 1, sizeof(buffer), f)) > 0) result.append(buffer, got);
      std::fclose(f);
    }
    *ok = rc == 0;
    return result;
  }

  // The value of the sample line starting with `series` (name and labels), or NaN.
  static double Sample(const std::string& text, const std::string& series) {
    for (absl::string_view line : absl::StrSplit(text, '\n')) {
      if (absl::StartsWith(line, series + " ")) {
        return std::strtod(std::string(line.substr(series.size() + 1)).c_str(), nullptr);
      }
    }
    return std::nan("");
  }

  int max_message_bytes_ = 64 << 20;
};

TEST_F(MetricsTest, ExpositionAfterTrafficPassesPromtool) {
  CreateAndUpload("m", testing::DataFile("sasrec/Beauty-32d-sasrec.npy"), 3000);
  {
    grpc::ClientContext context;
    v1::TrainTokenizerRequest request;
    request.set_collection("m");
    request.add_codebook_sizes(16);
    request.add_codebook_sizes(16);
    request.set_max_iterations(5);
    v1::Job job;
    ASSERT_TRUE(stub_->TrainTokenizer(&context, request, &job).ok());
    ASSERT_EQ(WaitJob(job.id()).state(), v1::JOB_STATE_SUCCEEDED);
  }
  {
    grpc::ClientContext context;
    v1::TrainIndexRequest request;
    request.set_collection("m");
    v1::Job job;
    ASSERT_TRUE(stub_->TrainIndex(&context, request, &job).ok());
    ASSERT_EQ(WaitJob(job.id()).state(), v1::JOB_STATE_SUCCEEDED);
  }
  {
    grpc::ClientContext context;
    v1::SearchRequest request;
    request.set_collection("m");
    request.mutable_queries()->Resize(32 * 3, 0.1f);
    request.set_k(5);
    v1::SearchResponse response;
    ASSERT_TRUE(stub_->Search(&context, request, &response).ok());
  }
  {
    grpc::ClientContext context;
    v1::EncodeRequest request;
    request.set_collection("m");
    request.add_ids(1);
    request.add_ids(2);
    v1::EncodeResponse response;
    ASSERT_TRUE(stub_->Encode(&context, request, &response).ok());
  }
  // Calls to methods that do not exist must not become label values.
  auto channel = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
  std::string ignored;
  testing::RawCall(channel.get(), "/quantd.v1.Quantd/NoSuchMethod", "", &ignored, false);
  testing::RawCall(channel.get(), "/evil.Service/Mint", "", &ignored, false);

  const std::string text = Scrape();
  bool ok = false;
  const std::string lint = Promtool(text, &ok);
  EXPECT_TRUE(ok) << "promtool check metrics:\n" << lint << "\n" << text;
  EXPECT_EQ(lint, "") << lint;

  EXPECT_EQ(Sample(text, "quantd_collections"), 1) << text;
  EXPECT_EQ(Sample(text, "quantd_collection_items{collection=\"m\"}"), 3000);
  EXPECT_GT(Sample(text, "quantd_tokenizer_memory_bytes{collection=\"m\"}"), 2 * 16 * 32 * 4);
  EXPECT_EQ(Sample(text, "quantd_tokenizer_versions_kept{collection=\"m\"}"), 1);
  EXPECT_EQ(Sample(text, "quantd_tokenizer_active_version{collection=\"m\"}"), 1);
  EXPECT_GT(Sample(text, "quantd_index_memory_bytes{collection=\"m\"}"), 3000 * 8);
  const double collisions = Sample(text, "quantd_sid_collision_rate{collection=\"m\"}");
  EXPECT_GE(collisions, 0);
  EXPECT_LT(collisions, 1);
  EXPECT_GT(Sample(text, "quantd_codebook_usage_ratio{collection=\"m\",level=\"1\"}"), 0.5);
  EXPECT_GT(Sample(text, "quantd_codebook_perplexity{collection=\"m\",level=\"0\"}"), 8);
  // Drift gauges: nothing assigned since training, no growth, no retrain advised.
  EXPECT_EQ(Sample(text, "quantd_sid_assigned_since_training{collection=\"m\"}"), 0);
  EXPECT_EQ(Sample(text, "quantd_sid_growth_ratio{collection=\"m\"}"), 1);
  EXPECT_EQ(Sample(text, "quantd_tokenizer_retrain_recommended{collection=\"m\"}"), 0);
  EXPECT_EQ(Sample(text, "quantd_sid_clusters_over_bound{collection=\"m\",level=\"0\"}"), 0);
  EXPECT_GE(Sample(text, "quantd_sid_largest_suffix{collection=\"m\"}"), 0);
  // Every series the shipped alert rules read is exported.
  {
    std::ifstream rules(std::string(QUANTD_SOURCE_DIR) + "/deploy/prometheus/quantd-alerts.yml");
    ASSERT_TRUE(rules.good());
    const std::string yaml((std::istreambuf_iterator<char>(rules)), {});
    const std::regex series("quantd_[a-z_]+");
    std::set<std::string> names;
    for (auto it = std::sregex_iterator(yaml.begin(), yaml.end(), series);
         it != std::sregex_iterator(); ++it) {
      if (it->str().rfind("quantd_sid_", 0) == 0 || it->str().rfind("quantd_tokenizer_", 0) == 0) {
        names.insert(it->str());
      }
    }
    EXPECT_GE(names.size(), 5u);
    for (const std::string& name : names) {
      EXPECT_NE(text.find("\n" + name + "{"), std::string::npos) << name;
    }
  }
  EXPECT_EQ(Sample(text, "quantd_jobs{state=\"succeeded\"}"), 2);
  EXPECT_EQ(Sample(text, "quantd_jobs{state=\"running\"}"), 0);
  EXPECT_EQ(Sample(text, "quantd_job_duration_seconds_count{kind=\"train_index\"}"), 1);
  EXPECT_EQ(Sample(text, "quantd_request_rows_count{method=\"Search\"}"), 1);
  EXPECT_EQ(Sample(text, "quantd_request_rows_sum{method=\"Search\"}"), 3);
  EXPECT_EQ(Sample(text, "quantd_request_rows_sum{method=\"Encode\"}"), 2);
  EXPECT_EQ(Sample(text, "quantd_requests_total{code=\"OK\",method=\"Search\"}"), 1);
  EXPECT_EQ(Sample(text, "quantd_requests_in_flight{method=\"Search\"}"), 0);
  EXPECT_EQ(Sample(text, "quantd_upserted_rows_total"), 3000);
  EXPECT_GT(
      Sample(text, "quantd_rocksdb_live_sst_bytes") + Sample(text, "quantd_rocksdb_memtable_bytes"),
      3000 * 32 * 4);
  EXPECT_GE(Sample(text, "quantd_serving_queue_capacity"), 0);
  EXPECT_GT(Sample(text, "process_resident_memory_bytes"), 1 << 20);
  EXPECT_GT(Sample(text, "process_open_fds"), 0);
  EXPECT_GT(Sample(text, "process_start_time_seconds"), 1.6e9);
  EXPECT_EQ(text.find("NoSuchMethod"), std::string::npos);
  EXPECT_EQ(text.find("evil"), std::string::npos);
  EXPECT_NE(text.find("quantd_requests_in_flight{method=\"other\"}"), std::string::npos);

  // A dropped collection leaves no series behind.
  grpc::ClientContext context;
  v1::DropCollectionRequest drop;
  drop.set_name("m");
  v1::DropCollectionResponse dropped;
  ASSERT_TRUE(stub_->DropCollection(&context, drop, &dropped).ok());
  const std::string after = Scrape();
  EXPECT_EQ(Sample(after, "quantd_collections"), 0);
  EXPECT_EQ(after.find("collection=\"m\""), std::string::npos) << after;
  Promtool(after, &ok);
  EXPECT_TRUE(ok);
}

// Every call is counted by the gRPC name of the code it ended with, including requests above
// --max_message_mb (refused by the call path: gRPC would drop a unary one before any server code
// ran) and requests that do not parse.
TEST_F(MetricsTest, EveryCallIsCountedByCodeNameIncludingTransportRefusals) {
  max_message_bytes_ = 1 << 20;
  Restart();
  {
    grpc::ClientContext context;
    v1::SearchRequest request;
    request.set_collection("m");
    request.mutable_queries()->Resize(400000, 0.5f);  // 1.6 MB
    v1::SearchResponse response;
    EXPECT_EQ(stub_->Search(&context, request, &response).error_code(),
              grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  {
    grpc::ClientContext context;
    auto stream = stub_->Upsert(&context);
    v1::UpsertRequest request;
    request.set_collection("m");
    request.mutable_vectors()->Resize(400000, 0.5f);
    stream->Write(request);
    stream->WritesDone();
    v1::UpsertResponse ack;
    while (stream->Read(&ack)) {
    }
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  {
    grpc::ClientContext context;
    v1::DescribeCollectionRequest request;
    request.set_name("missing");
    v1::DescribeCollectionResponse response;
    EXPECT_EQ(stub_->DescribeCollection(&context, request, &response).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  auto channel = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
  std::string ignored;
  EXPECT_EQ(testing::RawCall(channel.get(), "/quantd.v1.Quantd/GetJob", "\xff\xff", &ignored, false)
                .error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  const std::string text = Scrape();
  EXPECT_EQ(Sample(text, "quantd_requests_total{code=\"RESOURCE_EXHAUSTED\",method=\"Search\"}"), 1)
      << text;
  EXPECT_EQ(Sample(text, "quantd_requests_total{code=\"RESOURCE_EXHAUSTED\",method=\"Upsert\"}"), 1)
      << text;
  EXPECT_EQ(Sample(text, "quantd_requests_total{code=\"NOT_FOUND\",method=\"DescribeCollection\"}"),
            1);
  EXPECT_EQ(Sample(text, "quantd_requests_total{code=\"INVALID_ARGUMENT\",method=\"GetJob\"}"), 1);
  // No numeric codes are left.
  EXPECT_EQ(text.find("code=\"0\""), std::string::npos);
  EXPECT_EQ(text.find("code=\"8\""), std::string::npos);
  bool ok = false;
  const std::string lint = Promtool(text, &ok);
  EXPECT_TRUE(ok) << lint;
}

}  // namespace
}  // namespace quantd
