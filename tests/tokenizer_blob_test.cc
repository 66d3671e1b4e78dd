// The stored tokenizer blob (server/tokenizer.h): the quantizer goes in TokenizerRecord.model as
// core serializes it (an RQ-VAE's tensors in rqvae_model), blobs of the previous release (raw
// `codebooks`, no `model`) still parse, and a damaged blob is DATA_LOSS.
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "core/residual_quantizer.h"
#include "core/rqvae.h"
#include "core/vectors.h"
#include "gtest/gtest.h"
#include "quantd/storage/records.pb.h"
#include "server/model_blob.h"
#include "server/tokenizer.h"

namespace quantd {
namespace {

constexpr int64_t kD = 8;
constexpr int64_t kRows = 400;

// kRows x kD Gaussian rows (seeded).
std::vector<float> Rows() {
  std::mt19937 rng(17);
  std::normal_distribution<float> normal;
  std::vector<float> x(kRows * kD);
  for (float& v : x) v = normal(rng);
  return x;
}

ResidualQuantizer Quantizer() {
  RqOptions options;
  options.levels = {{.k = 16, .balanced = false, .bounds = {}, .initial_centroids = {}},
                    {.k = 4, .balanced = false, .bounds = {}, .initial_centroids = {}}};
  options.kmeans.seed = 9;
  const std::vector<float> x = Rows();
  auto trained = TrainResidualQuantizer(x.data(), kRows, kD, options);
  EXPECT_TRUE(trained.ok()) << trained.status();
  return trained.ok() ? std::move(trained->quantizer) : ResidualQuantizer();
}

// The metadata a tokenizer job writes.
storage::TokenizerRecord Metadata(const ResidualQuantizer& rq) {
  storage::TokenizerRecord record;
  record.set_version(3);
  record.set_dimension(static_cast<uint32_t>(rq.dimension()));
  for (int64_t k : rq.codebook_sizes()) record.add_codebook_sizes(static_cast<uint32_t>(k));
  record.set_normalize(true);
  record.set_seed(9);
  record.set_trained_items(kRows);
  record.set_job_id("job-000042");
  return record;
}

// The framing's payload: the record after "QTOK", the version and the CRC-32.
storage::TokenizerRecord Payload(const std::string& blob) {
  storage::TokenizerRecord record;
  EXPECT_TRUE(blob.size() >= 12 && record.ParseFromString(blob.substr(12)));
  return record;
}

std::vector<int32_t> Codes(const Tokenizer& tokenizer) {
  const std::vector<float> x = Rows();
  std::vector<int32_t> codes(static_cast<size_t>(kRows * tokenizer.levels()));
  tokenizer.Encode(x.data(), kRows, codes.data());
  return codes;
}

TEST(TokenizerBlobTest, TheModelFieldHoldsCoresSerializationAndRoundTrips) {
  const ResidualQuantizer rq = Quantizer();
  ASSERT_EQ(rq.levels(), 2);
  const Tokenizer tokenizer(TokenizerModel{rq, nullptr}, Metadata(rq));
  const std::string blob = tokenizer.Serialize();
  const storage::TokenizerRecord stored = Payload(blob);
  EXPECT_EQ(stored.model(), rq.Serialize());
  EXPECT_EQ(stored.codebooks_size(), 0);
  EXPECT_EQ(stored.job_id(), "job-000042");

  auto parsed = Tokenizer::Parse(blob);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ((*parsed)->version(), 3u);
  EXPECT_TRUE((*parsed)->record().normalize());
  EXPECT_TRUE((*parsed)->record().model().empty());  // held once, by the quantizer
  EXPECT_EQ((*parsed)->quantizer().codebook(0), rq.codebook(0));
  EXPECT_EQ((*parsed)->quantizer().codebook(1), rq.codebook(1));
  EXPECT_EQ(Codes(**parsed), Codes(tokenizer));
  EXPECT_EQ((*parsed)->Serialize(), blob);
}

// A database of the previous release holds blobs with raw codebooks and no model, built here
// the way that release built them.
TEST(TokenizerBlobTest, BlobsOfThePreviousReleaseStillParse) {
  const ResidualQuantizer rq = Quantizer();
  storage::TokenizerRecord old = Metadata(rq);
  for (int64_t l = 0; l < rq.levels(); ++l) {
    const std::vector<float>& codebook = rq.codebook(l);
    old.add_codebooks(std::string(reinterpret_cast<const char*>(codebook.data()),
                                  codebook.size() * sizeof(float)));
  }
  const std::string blob = FrameModelBlob({"QTOK", 1, "tokenizer"}, old);

  auto parsed = Tokenizer::Parse(blob);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ((*parsed)->quantizer().codebook_sizes(), rq.codebook_sizes());
  EXPECT_EQ((*parsed)->quantizer().codebook(0), rq.codebook(0));
  EXPECT_EQ((*parsed)->quantizer().codebook(1), rq.codebook(1));
  EXPECT_EQ(Codes(**parsed), Codes(Tokenizer(TokenizerModel{rq, nullptr}, Metadata(rq))));
  // Written again, it takes the new form.
  const storage::TokenizerRecord rewritten = Payload((*parsed)->Serialize());
  EXPECT_EQ(rewritten.codebooks_size(), 0);
  EXPECT_EQ(rewritten.model(), rq.Serialize());

  // A short codebook in an old blob is still DATA_LOSS.
  old.set_codebooks(1, old.codebooks(1).substr(4));
  const absl::Status short_codebook =
      Tokenizer::Parse(FrameModelBlob({"QTOK", 1, "tokenizer"}, old)).status();
  EXPECT_EQ(short_codebook.code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(absl::StrContains(short_codebook.message(), "codebook 1")) << short_codebook;
}

TEST(TokenizerBlobTest, DamagedModelsAndDisagreeingMetadataAreDataLoss) {
  const ResidualQuantizer rq = Quantizer();
  const auto parse_with = [&](const std::function<void(storage::TokenizerRecord&)>& edit) {
    storage::TokenizerRecord record = Metadata(rq);
    record.set_model(rq.Serialize());
    edit(record);
    return Tokenizer::Parse(FrameModelBlob({"QTOK", 1, "tokenizer"}, record)).status();
  };
  EXPECT_TRUE(parse_with([](storage::TokenizerRecord&) {}).ok());
  using Record = storage::TokenizerRecord;
  const absl::Status cut = parse_with([](Record& r) { r.set_model(r.model().substr(0, 40)); });
  EXPECT_EQ(cut.code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(absl::StrContains(cut.message(), "truncated")) << cut;
  const absl::Status nan = parse_with([](Record& r) {
    const float value = std::nanf("");
    std::memcpy(r.mutable_model()->data() + r.model().size() - 4, &value, sizeof(value));
  });
  EXPECT_EQ(nan.code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(absl::StrContains(nan.message(), "nan")) << nan;
  EXPECT_EQ(parse_with([](Record& r) { r.set_dimension(9); }).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(parse_with([](Record& r) { r.set_codebook_sizes(1, 5); }).code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(parse_with([](Record& r) { r.add_codebook_sizes(4); }).code(),
            absl::StatusCode::kDataLoss);
  // Neither a model nor codebooks.
  EXPECT_EQ(parse_with([](Record& r) { r.clear_model(); }).code(), absl::StatusCode::kDataLoss);
}

// An RQ-VAE tokenizer's blob carries the model's tensors (rqvae_model), not a quantizer: the
// quantizer over the latents is rebuilt from its codebooks, and encoding is unchanged.
TEST(TokenizerBlobTest, RqVaeModelsRoundTripAndDamageIsDataLoss) {
  RqVaeOptions options;
  options.layers = {16};
  options.e_dim = 4;
  options.num_emb_list = {8, 4};
  options.sk_epsilons = {0.0, 0.01};
  options.bn = true;
  auto model = RqVae::Create(kD, options);
  ASSERT_TRUE(model.ok()) << model.status();
  auto made = TokenizerModel::OfRqVae(*model);
  ASSERT_TRUE(made.ok()) << made.status();
  storage::TokenizerRecord metadata = Metadata(made->quantizer);
  metadata.set_dimension(kD);
  const Tokenizer tokenizer(*made, metadata);
  EXPECT_EQ(tokenizer.method(), v1::TOKENIZER_METHOD_RQ_VAE);
  EXPECT_EQ(tokenizer.dimension(), 4);
  EXPECT_EQ(tokenizer.input_dimension(), kD);
  // Encode is the model's own encoder and nearest codes.
  const std::vector<float> x = Rows();
  std::vector<int32_t> expected(static_cast<size_t>(kRows * 2));
  std::vector<float> normalized = x;
  NormalizeRows(normalized.data(), kRows, kD);  // the metadata says normalize
  model->Encode(normalized.data(), kRows, expected.data());
  EXPECT_EQ(Codes(tokenizer), expected);

  const std::string blob = tokenizer.Serialize();
  const storage::TokenizerRecord stored = Payload(blob);
  EXPECT_TRUE(stored.model().empty());
  EXPECT_FALSE(stored.rqvae_model().empty());
  auto parsed = Tokenizer::Parse(blob);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_NE((*parsed)->rqvae(), nullptr);
  EXPECT_TRUE((*parsed)->record().rqvae_model().empty());  // held once, by the model
  EXPECT_EQ(Codes(**parsed), expected);
  EXPECT_EQ((*parsed)->Serialize(), blob);

  // A tensor of the wrong shape, or metadata naming another input dimension: DATA_LOSS.
  v1::RqVaeModel damaged;
  ASSERT_TRUE(damaged.ParseFromString(stored.rqvae_model()));
  damaged.mutable_tensors(0)->set_shape(1, kD + 1);
  storage::TokenizerRecord bad = stored;
  bad.set_rqvae_model(damaged.SerializeAsString());
  absl::Status status = Tokenizer::Parse(FrameModelBlob({"QTOK", 1, "tokenizer"}, bad)).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "encoder.mlp_layers.1.weight")) << status;
  bad = stored;
  bad.set_rqvae_model("not a model");
  status = Tokenizer::Parse(FrameModelBlob({"QTOK", 1, "tokenizer"}, bad)).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  bad = stored;
  bad.set_dimension(kD + 2);
  status = Tokenizer::Parse(FrameModelBlob({"QTOK", 1, "tokenizer"}, bad)).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
}

}  // namespace
}  // namespace quantd
