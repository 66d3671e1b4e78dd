// RQ-VAE tokenizers through the server: training as a job with per-epoch progress, index
// generation, Encode by vector and by id, Stats, restart, export and import of the model, and
// every bad option, model and limit refused with a clear error that changes nothing.
#include <chrono>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/rqvae.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "io/npz.h"
#include "io/torch_checkpoint.h"
#include "io/vector_file.h"
#include "server/rqvae_model.h"
#include "tests/server_fixture.h"

namespace quantd::testing {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kItems = 2000;

// A small RQ-VAE request that trains in a second or two.
v1::TrainTokenizerRequest SmallRqVae(const std::string& collection, int epochs = 12) {
  v1::TrainTokenizerRequest request;
  request.set_collection(collection);
  request.set_method(v1::TOKENIZER_METHOD_RQ_VAE);
  for (uint32_t k : {32, 32, 32}) request.add_codebook_sizes(k);
  request.set_seed(7);
  v1::RqVaeOptions* options = request.mutable_rqvae();
  options->add_layers(64);
  options->add_layers(32);
  options->set_e_dim(16);
  options->set_epochs(static_cast<uint32_t>(epochs));
  options->set_batch_size(256);
  options->set_kmeans_iters(20);
  return request;
}

class RqVaeServiceTest : public InProcessServerTest {
 protected:
  void SetUp() override {
    InProcessServerTest::SetUp();
    CreateAndUpload("beauty", DataFile("sasrec/Beauty-32d-sasrec.npy"), kItems);
  }

  // The first n rows of Beauty (n x 32).
  static std::vector<float> Rows(int64_t n) {
    auto reader = VectorReader::Open(DataFile("sasrec/Beauty-32d-sasrec.npy"));
    EXPECT_TRUE(reader.ok()) << reader.status();
    std::vector<float> rows(static_cast<size_t>(n * 32));
    EXPECT_TRUE((*reader)->Read(n, rows.data()).ok());
    return rows;
  }

  v1::ExportTokenizerResponse Export(const std::string& collection, uint32_t version = 0) {
    grpc::ClientContext context;
    v1::ExportTokenizerRequest request;
    request.set_collection(collection);
    request.set_tokenizer_version(version);
    v1::ExportTokenizerResponse response;
    const grpc::Status status = stub_->ExportTokenizer(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  grpc::Status Import(const v1::ImportTokenizerRequest& request, v1::Job* job) {
    grpc::ClientContext context;
    return stub_->ImportTokenizer(&context, request, job);
  }

  // Encode by vector of rows (n x 32): the codes, n x L.
  std::vector<int32_t> EncodeCodes(const std::string& collection, const std::vector<float>& rows) {
    grpc::ClientContext context;
    v1::EncodeRequest request;
    request.set_collection(collection);
    request.mutable_vectors()->Add(rows.begin(), rows.end());
    v1::EncodeResponse response;
    const grpc::Status status = stub_->Encode(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    std::vector<int32_t> codes;
    for (const v1::EncodedVector& encoded : response.encoded()) {
      codes.insert(codes.end(), encoded.codes().begin(), encoded.codes().end());
    }
    return codes;
  }

  // A request changed by one case, and what its error must say.
  template <typename Request>
  struct BadCase {
    std::string name;
    std::function<void(Request*)> change;
    std::string message;
  };
  // Each case's change of `base`, sent by `send`, is INVALID_ARGUMENT with the case's message,
  // and together they start no job and leave the active version of "beauty" as it was.
  template <typename Request>
  void ExpectRefused(const Request& base, const std::vector<BadCase<Request>>& cases,
                     const std::function<grpc::Status(const Request&, v1::Job*)>& send) {
    const uint32_t active = ActiveVersion("beauty");
    const int jobs = JobCount();
    for (const BadCase<Request>& c : cases) {
      Request request = base;
      c.change(&request);
      v1::Job job;
      const grpc::Status status = send(request, &job);
      EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.name;
      EXPECT_THAT(status.error_message(), HasSubstr(c.message)) << c.name;
    }
    EXPECT_EQ(JobCount(), jobs);
    EXPECT_EQ(ActiveVersion("beauty"), active);
  }

  uint32_t ActiveVersion(const std::string& collection) {
    return Stats(collection).tokenizer_versions().active_version();
  }

  // Every job of the server.
  int JobCount() {
    grpc::ClientContext context;
    v1::ListJobsRequest request;
    v1::ListJobsResponse response;
    EXPECT_TRUE(stub_->ListJobs(&context, request, &response).ok());
    return response.jobs_size();
  }
};

TEST_F(RqVaeServiceTest, TrainsCommitsAndServesEncode) {
  const v1::Job job = TrainAndWait(SmallRqVae("beauty"));
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.error();
  EXPECT_GT(job.result_version(), 0u);
  EXPECT_TRUE(job.activated());

  const v1::GetStatsResponse stats = Stats("beauty");
  const v1::TokenizerStats& tokenizer = stats.tokenizer();
  EXPECT_EQ(tokenizer.method(), v1::TOKENIZER_METHOD_RQ_VAE);
  EXPECT_EQ(tokenizer.items(), static_cast<uint64_t>(kItems));
  const v1::RqVaeStats& rqvae = tokenizer.rqvae();
  EXPECT_EQ(rqvae.source(), "trained");
  EXPECT_EQ(rqvae.epochs(), 12u);
  EXPECT_LT(rqvae.model_epoch(), 12u);
  EXPECT_EQ(rqvae.keep(), v1::RQ_VAE_CHECKPOINT_BEST_COLLISION);
  EXPECT_EQ(rqvae.index_generation(), v1::INDEX_GENERATION_EXACT_FREE_CODES);
  // Index generation never adds collisions, and the committed SIDs carry what is left.
  EXPECT_LE(rqvae.collisions_after(), rqvae.collisions_before());
  EXPECT_EQ(tokenizer.items() - tokenizer.unique_tuples(), rqvae.collisions_after());
  EXPECT_GT(rqvae.reconstruction_mse(), 0);
  EXPECT_TRUE(std::isfinite(rqvae.reconstruction_mse()));
  EXPECT_GT(rqvae.parameters(), 0u);
  EXPECT_GT(rqvae.training_memory_bytes(), 0u);
  EXPECT_EQ(rqvae.options().e_dim(), 16u);
  ASSERT_EQ(tokenizer.level_stats_size(), 3);
  for (const v1::LevelStats& level : tokenizer.level_stats()) {
    EXPECT_GT(level.codes_used(), 16u);  // dead codes are revived: most of the 32 are used
    EXPECT_GT(level.reconstruction_mse(), 0);
  }
  // Latent residuals shrink level after level.
  EXPECT_LT(tokenizer.level_stats(2).reconstruction_mse(),
            tokenizer.level_stats(0).reconstruction_mse());

  // Encode by vector runs the encoder MLP and the quantizer: the exported model's codes.
  const v1::ExportTokenizerResponse exported = Export("beauty");
  ASSERT_TRUE(exported.has_rqvae());
  EXPECT_EQ(exported.manifest().parameters().method(), v1::TOKENIZER_METHOD_RQ_VAE);
  EXPECT_EQ(exported.codebooks_size(), 0);
  auto model = RqVaeModelFromProto(exported.rqvae(), {32, 32, 32}, 32, "rqvae");
  ASSERT_TRUE(model.ok()) << model.status();
  const std::vector<float> rows = Rows(300);
  std::vector<int32_t> expected(300 * 3);
  RqVaeEncoder(*model).Encode(rows.data(), 300, expected.data());
  EXPECT_EQ(EncodeCodes("beauty", rows), expected);

  // Every item has a SID; ids name items, suffixes tell colliding items apart.
  const std::map<uint64_t, std::string> sids = AllSids("beauty");
  ASSERT_EQ(sids.size(), static_cast<size_t>(kItems));
  std::set<std::string> distinct;
  for (const auto& [id, sid] : sids) distinct.insert(sid);
  EXPECT_EQ(distinct.size(), sids.size());
}

TEST_F(RqVaeServiceTest, SurvivesRestartAndRoundTripsThroughExportImport) {
  const v1::Job job = TrainAndWait(SmallRqVae("beauty", 6));
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.error();
  const std::vector<float> rows = Rows(200);
  const std::vector<int32_t> before = EncodeCodes("beauty", rows);
  const std::map<uint64_t, std::string> sids = AllSids("beauty");
  const v1::ExportTokenizerResponse exported = Export("beauty");

  Restart();
  EXPECT_EQ(EncodeCodes("beauty", rows), before);
  EXPECT_EQ(AllSids("beauty"), sids);
  EXPECT_EQ(Stats("beauty").tokenizer().method(), v1::TOKENIZER_METHOD_RQ_VAE);

  // The exported model imported into a collection of the same items gives the same SIDs.
  CreateAndUpload("copy", DataFile("sasrec/Beauty-32d-sasrec.npy"), kItems);
  v1::ImportTokenizerRequest request;
  request.set_collection("copy");
  *request.mutable_manifest() = exported.manifest();
  *request.mutable_rqvae() = exported.rqvae();
  v1::Job imported;
  const grpc::Status status = Import(request, &imported);
  ASSERT_TRUE(status.ok()) << status.error_message();
  const v1::Job done = WaitJob(imported.id());
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.error();
  EXPECT_EQ(AllSids("copy"), sids);
  EXPECT_EQ(EncodeCodes("copy", rows), before);
  const v1::TokenizerStats stats = Stats("copy").tokenizer();
  EXPECT_EQ(stats.method(), v1::TOKENIZER_METHOD_RQ_VAE);
  EXPECT_EQ(stats.rqvae().source(), "model");
}

TEST_F(RqVaeServiceTest, NewItemsGetCodesFromTheEncoder) {
  const v1::Job job = TrainAndWait(SmallRqVae("beauty", 4));
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.error();
  // Rows 2000..2099 of Beauty as new items: their SIDs are what Encode proposed for them.
  auto reader = VectorReader::Open(DataFile("sasrec/Beauty-32d-sasrec.npy"));
  ASSERT_TRUE(reader.ok());
  std::vector<float> all(static_cast<size_t>(2100 * 32));
  ASSERT_TRUE((*reader)->Read(2100, all.data()).ok());
  const std::vector<float> fresh(all.begin() + 2000 * 32, all.end());
  const std::vector<int32_t> proposed = EncodeCodes("beauty", fresh);
  std::vector<uint64_t> ids;
  for (uint64_t id = 2000; id < 2100; ++id) ids.push_back(id);
  ASSERT_TRUE(Upsert("beauty", ids, fresh).ok());
  const std::map<uint64_t, std::string> sids = AllSids("beauty");
  for (int64_t i = 0; i < 100; ++i) {
    const std::string sid = sids.at(static_cast<uint64_t>(2000 + i));
    const std::string codes = sid.substr(0, sid.find('#'));
    EXPECT_EQ(codes, absl::StrCat(proposed[i * 3], ",", proposed[i * 3 + 1], ",",
                                  proposed[i * 3 + 2], ","))
        << "item " << 2000 + i;
  }
  // Drift compares like with like: the new items' quantization error (latent space) against
  // the committed items' after the last level, not the decoder's reconstruction error (about
  // 40 times larger here).
  const v1::TokenizerDrift drift = Stats("beauty").tokenizer().drift();
  EXPECT_EQ(drift.assigned_since_training(), 100u);
  EXPECT_GT(drift.training_mse(), 0);
  EXPECT_LT(drift.assigned_mse(), 2 * drift.training_mse());
  EXPECT_GT(drift.assigned_mse(), 0.5 * drift.training_mse());
  EXPECT_FALSE(drift.retrain_recommended());
}

TEST_F(RqVaeServiceTest, ProgressNamesEpochsAndCancelLeavesNoVersion) {
  v1::TrainTokenizerRequest request = SmallRqVae("beauty", 5000);
  v1::Job job;
  ASSERT_TRUE(StartTraining(request, &job).ok());
  // Wait until an epoch has been reported, then cancel.
  std::string phase;
  for (int i = 0; i < 3000 && !absl::StrContains(phase, "epoch 2/5000"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    phase = GetJob(job.id()).phase();
  }
  EXPECT_THAT(phase, HasSubstr("/5000: loss "));
  EXPECT_THAT(phase, HasSubstr("codes used "));
  grpc::ClientContext context;
  v1::CancelJobRequest cancel;
  cancel.set_id(job.id());
  v1::Job cancelled;
  ASSERT_TRUE(stub_->CancelJob(&context, cancel, &cancelled).ok());
  EXPECT_EQ(WaitJob(job.id()).state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(ActiveVersion("beauty"), 0u);
  EXPECT_FALSE(Stats("beauty").has_tokenizer());
}

TEST_F(RqVaeServiceTest, BadOptionsAreInvalidArgumentAndChangeNothing) {
  ASSERT_EQ(TrainAndWait(SmallRqVae("beauty", 2)).state(), v1::JOB_STATE_SUCCEEDED);
  const std::vector<BadCase<v1::TrainTokenizerRequest>> cases = {
      {"e_dim over the dimension", [](auto* r) { r->mutable_rqvae()->set_e_dim(33); },
       "rqvae.e_dim 33 exceeds the collection's dimension 32"},
      {"zero learning rate", [](auto* r) { r->mutable_rqvae()->set_lr(0); },
       "rqvae.lr 0 is outside (0, 1]"},
      {"negative learning rate", [](auto* r) { r->mutable_rqvae()->set_lr(-1e-3); },
       "rqvae.lr -0.001"},
      {"negative epsilon",
       [](auto* r) {
         for (double e : {0.0, 0.0, -0.1}) r->mutable_rqvae()->add_sk_epsilons(e);
       },
       "sk_epsilons[2] = -0.1"},
      {"epsilons per level", [](auto* r) { r->mutable_rqvae()->add_sk_epsilons(0.003); },
       "rqvae.sk_epsilons has 1 values for 3 levels"},
      {"zero layer", [](auto* r) { r->mutable_rqvae()->set_layers(1, 0); },
       "rqvae.layers[1] = 0 is outside 1..8192"},
      {"too many layers",
       [](auto* r) {
         for (int i = 0; i < 8; ++i) r->mutable_rqvae()->add_layers(16);
       },
       "rqvae.layers has 10 hidden layers; at most 8"},
      {"dropout of one", [](auto* r) { r->mutable_rqvae()->set_dropout_prob(1); },
       "dropout_prob 1"},
      {"unknown activation", [](auto* r) { r->mutable_rqvae()->set_activation_fn("swish"); },
       "swish"},
      {"unknown scheduler", [](auto* r) { r->mutable_rqvae()->set_lr_scheduler_type("cosine"); },
       "cosine"},
      {"too many epochs", [](auto* r) { r->mutable_rqvae()->set_epochs(100001); },
       "rqvae.epochs 100001 is outside 1..100000"},
      {"eval step over epochs", [](auto* r) { r->mutable_rqvae()->set_eval_step(3); },
       "rqvae.eval_step 3 exceeds epochs 2"},
      {"codebook over the first batch", [](auto* r) { r->mutable_rqvae()->set_batch_size(16); },
       "codebook_sizes[0] = 32 exceeds the 16 rows its k-means initialisation fits on"},
      {"balanced with RQ-VAE", [](auto* r) { r->set_balanced(true); },
       "balanced applies to method TOKENIZER_METHOD_RQ_KMEANS only"},
      {"warm start with RQ-VAE", [](auto* r) { r->set_warm_start(true); },
       "warm_start applies to method TOKENIZER_METHOD_RQ_KMEANS only"},
      {"rqvae options without the method", [](auto* r) { r->clear_method(); },
       "rqvae options need method TOKENIZER_METHOD_RQ_VAE"},
      {"unknown method", [](auto* r) { r->set_method(static_cast<v1::TokenizerMethod>(9)); },
       "method 9 is not a TokenizerMethod value"},
      {"unknown checkpoint",
       [](auto* r) { r->mutable_rqvae()->set_keep(static_cast<v1::RqVaeCheckpoint>(7)); },
       "rqvae.keep 7"},
  };
  ExpectRefused<v1::TrainTokenizerRequest>(
      SmallRqVae("beauty", 2), cases,
      [this](const v1::TrainTokenizerRequest& request, v1::Job* job) {
        return StartTraining(request, job);
      });
}

TEST_F(RqVaeServiceTest, DivergedTrainingFailsNamingTheEpochAndKeepsServing) {
  ASSERT_EQ(TrainAndWait(SmallRqVae("beauty", 2)).state(), v1::JOB_STATE_SUCCEEDED);
  const uint32_t active = ActiveVersion("beauty");
  const std::map<uint64_t, std::string> sids = AllSids("beauty");
  // Positive vectors near the float limit overflow the encoder's first layer (a sum of 32
  // such terms): the latents, and so the loss, are not finite.
  CreateCollection("huge", 32);
  std::vector<uint64_t> ids;
  std::vector<float> vectors;
  for (uint64_t i = 0; i < 300; ++i) {
    ids.push_back(i);
    for (int j = 0; j < 32; ++j) vectors.push_back(3e38f * (1.0f - 1e-3f * static_cast<float>(i)));
  }
  ASSERT_TRUE(Upsert("huge", ids, vectors).ok());
  const v1::Job job = TrainAndWait(SmallRqVae("huge", 3));
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_THAT(job.error(), HasSubstr("training diverged at epoch 0"));
  EXPECT_THAT(job.error(), HasSubstr("loss"));
  EXPECT_EQ(ActiveVersion("huge"), 0u);
  EXPECT_EQ(ActiveVersion("beauty"), active);
  EXPECT_EQ(AllSids("beauty"), sids);
}

TEST_F(RqVaeServiceTest, BadModelsAreRefusedNamingTheTensor) {
  ASSERT_EQ(TrainAndWait(SmallRqVae("beauty", 2)).state(), v1::JOB_STATE_SUCCEEDED);
  const v1::ExportTokenizerResponse exported = Export("beauty");
  const std::vector<BadCase<v1::ImportTokenizerRequest>> cases = {
      {"missing tensor",
       [](auto* r) {
         auto* tensors = r->mutable_rqvae()->mutable_tensors();
         tensors->erase(tensors->begin() + 2);
       },
       "tensor encoder.mlp_layers.4.weight is missing"},
      {"wrong shape", [](auto* r) { r->mutable_rqvae()->mutable_tensors(0)->set_shape(1, 31); },
       "tensor encoder.mlp_layers.1.weight has shape [64, 31]; the model needs [64, 32]"},
      {"not finite",
       [](auto* r) {
         r->mutable_rqvae()->mutable_tensors(1)->set_values(
             3, std::numeric_limits<float>::quiet_NaN());
       },
       "tensor encoder.mlp_layers.1.bias value 3 is nan, not finite"},
      {"extra tensor",
       [](auto* r) {
         v1::Tensor* extra = r->mutable_rqvae()->add_tensors();
         extra->set_name("encoder.mlp_layers.99.weight");
         extra->add_shape(1);
         extra->add_values(0);
       },
       "tensor encoder.mlp_layers.99.weight is not part of the architecture"},
      {"input dim", [](auto* r) { r->mutable_rqvae()->set_input_dim(16); },
       "rqvae.input_dim 16 does not match the collection's dimension 32"},
      {"codebooks too", [](auto* r) { r->add_codebooks(1); },
       "give exactly one of codebooks (RQ-KMeans), rqvae or torch_checkpoint (RQ-VAE); 2 given"},
      {"manifest sizes", [](auto* r) { r->mutable_manifest()->set_codebook_sizes(0, 64); },
       "tensor rq.vq_layers.0.embedding.weight has shape [32, 16]; the model needs [64, 16]"},
      {"balanced parameters",
       [](auto* r) { r->mutable_manifest()->mutable_parameters()->set_balanced(true); },
       "manifest.parameters: balanced applies to method TOKENIZER_METHOD_RQ_KMEANS only"},
  };
  v1::ImportTokenizerRequest base;
  base.set_collection("beauty");
  *base.mutable_manifest() = exported.manifest();
  *base.mutable_rqvae() = exported.rqvae();
  ExpectRefused<v1::ImportTokenizerRequest>(
      base, cases, [this](const v1::ImportTokenizerRequest& request, v1::Job* job) {
        return Import(request, job);
      });
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string TorchFixture(const std::string& name) {
  return absl::StrCat(QUANTD_TEST_FIXTURE_DIR, "/torch/", name);
}

// A checkpoint saved by PyTorch (the seed pipeline's model, tests/data/torch) becomes a version
// whose Encode gives PyTorch's codes exactly; bad checkpoints are refused and change nothing.
TEST_F(RqVaeServiceTest, TorchCheckpointImportEncodesLikePyTorch) {
  auto arrays = ReadNpz(TorchFixture("rqvae_bn.npz"));
  ASSERT_TRUE(arrays.ok()) << arrays.status();
  std::vector<float> inputs;
  std::vector<int64_t> torch_codes;
  for (const NpyArray& array : *arrays) {
    if (array.name == "inputs") inputs = array.ToFloat();
    if (array.name == "codes") torch_codes = *array.ToInt64();
  }
  const auto n = static_cast<int64_t>(inputs.size() / 32);
  ASSERT_GT(n, 100);
  CreateCollection("torch", 32);
  std::vector<uint64_t> ids;
  for (int64_t i = 0; i < n; ++i) ids.push_back(static_cast<uint64_t>(i));
  ASSERT_TRUE(Upsert("torch", ids, inputs).ok());

  const std::string checkpoint = ReadBytes(TorchFixture("rqvae_bn.pth"));
  ASSERT_FALSE(checkpoint.empty());
  const int jobs = JobCount();
  // Refused before any job: a truncated file, a checkpoint of another input dimension (the
  // 32-wide model into a 16-wide collection), a bare state dict without its architecture,
  // codebooks beside it.
  CreateCollection("narrow", 16);
  const auto refused = [&](const std::string& collection, const std::string& bytes,
                           const std::string& message, bool with_codebooks = false) {
    v1::ImportTokenizerRequest request;
    request.set_collection(collection);
    request.set_torch_checkpoint(bytes);
    if (with_codebooks) request.add_codebooks(0.5f);
    v1::Job job;
    const grpc::Status status = Import(request, &job);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << message;
    EXPECT_THAT(status.error_message(), HasSubstr(message));
  };
  refused("torch", checkpoint.substr(0, checkpoint.size() / 2), "torch checkpoint: ");
  refused("torch", "not a zip at all", "torch checkpoint: ");
  refused("narrow", checkpoint, "16");
  refused("torch", ReadBytes(TorchFixture("rqvae_bn_state_dict.pth")),
          "torch_checkpoint is a bare state dict (no args)");
  refused("torch", checkpoint, "give exactly one of codebooks", /*with_codebooks=*/true);
  EXPECT_EQ(JobCount(), jobs);
  EXPECT_EQ(ActiveVersion("torch"), 0u);

  v1::ImportTokenizerRequest request;
  request.set_collection("torch");
  request.set_torch_checkpoint(checkpoint);
  v1::Job job;
  grpc::Status status = Import(request, &job);
  ASSERT_TRUE(status.ok()) << status.error_message();
  v1::Job done = WaitJob(job.id());
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.error();
  const std::vector<int32_t> codes = EncodeCodes("torch", inputs);
  ASSERT_EQ(codes.size(), torch_codes.size());
  int64_t mismatched = 0;
  for (size_t i = 0; i < codes.size(); ++i) mismatched += codes[i] != torch_codes[i];
  EXPECT_EQ(mismatched, 0) << "of " << codes.size() << " codes";
  const v1::TokenizerStats stats = Stats("torch").tokenizer();
  EXPECT_EQ(stats.method(), v1::TOKENIZER_METHOD_RQ_VAE);
  EXPECT_EQ(stats.rqvae().source(), "torch_checkpoint");
  EXPECT_TRUE(stats.rqvae().options().bn());
  EXPECT_EQ(stats.items(), static_cast<uint64_t>(n));
  EXPECT_LE(stats.rqvae().collisions_after(), stats.rqvae().collisions_before());

  // The bare state dict with the architecture in the manifest gives the same model.
  auto parsed = ParseTorchCheckpoint(checkpoint);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  auto options = RqVaeOptionsFromCheckpoint(*parsed);
  ASSERT_TRUE(options.ok()) << options.status();
  CreateCollection("bare", 32);
  ASSERT_TRUE(Upsert("bare", ids, inputs).ok());
  v1::ImportTokenizerRequest bare;
  bare.set_collection("bare");
  bare.set_torch_checkpoint(ReadBytes(TorchFixture("rqvae_bn_state_dict.pth")));
  *bare.mutable_manifest()->mutable_parameters()->mutable_rqvae() = RqVaeOptionsToProto(*options);
  for (int64_t k : options->num_emb_list) {
    bare.mutable_manifest()->add_codebook_sizes(static_cast<uint32_t>(k));
  }
  status = Import(bare, &job);
  ASSERT_TRUE(status.ok()) << status.error_message();
  done = WaitJob(job.id());
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.error();
  EXPECT_EQ(EncodeCodes("bare", inputs), codes);
}

class RqVaeMemoryLimitTest : public RqVaeServiceTest {
 protected:
  ServerOptions Options() override {
    ServerOptions options = RqVaeServiceTest::Options();
    options.training_memory_bytes = 4 << 20;
    return options;
  }
};

TEST_F(RqVaeMemoryLimitTest, TrainingOverTheLimitIsRefusedBeforeItStarts) {
  const int jobs = JobCount();
  // The small model fits in 4 MiB; the default architecture's 1024-row batches do not.
  v1::TrainTokenizerRequest request = SmallRqVae("beauty", 2);
  request.mutable_rqvae()->clear_layers();
  request.mutable_rqvae()->set_batch_size(1024);
  v1::Job job;
  const grpc::Status status = StartTraining(request, &job);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("MiB"));
  EXPECT_THAT(status.error_message(), HasSubstr("--training_memory_mb 4"));
  EXPECT_EQ(JobCount(), jobs);
  EXPECT_EQ(TrainAndWait(SmallRqVae("beauty", 2)).state(), v1::JOB_STATE_SUCCEEDED);
}

}  // namespace
}  // namespace quantd::testing
