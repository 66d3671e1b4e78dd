// The tokenizer jobs. "train_tokenizer": RQ-KMeans (plain or balanced per level) over a
// collection, then, for capacity assignment, training-time collision resolution.
// "import_tokenizer": codebooks trained elsewhere (ImportTokenizer), every item encoded. Both
// end the same way (FinishTokenizerVersion): suffixes carried over from the parent version,
// the activation policy applied, the SIDs written, the version committed.
#ifndef QUANTD_SERVER_TOKENIZER_JOB_H_
#define QUANTD_SERVER_TOKENIZER_JOB_H_

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "core/residual_quantizer.h"
#include "core/rqvae.h"
#include "quantd/v1/quantd.pb.h"
#include "server/tokenizers.h"
#include "server/training_job.h"

namespace quantd {

// What a TrainTokenizer request asks for, defaults filled in.
struct TokenizerTrainPlan {
  RqOptions rq;
  v1::Assignment assignment = v1::ASSIGNMENT_NEAREST;
  int beam_width = 1;
  // Capacity assignment: the suffix cap asked for; 0 takes the default (the largest suffix of
  // the training assignment, at least 1).
  int64_t suffix_cap = 0;
  // Balanced levels take their bounds from this slack (unset: explicit size_bounds).
  std::optional<double> balance_slack;
  // Method RQ-VAE: its training options (rq.levels then only give the codebook sizes, none
  // balanced) and how the items' codes are generated after training.
  std::optional<RqVaeOptions> rqvae;
  v1::IndexGeneration index_generation = v1::INDEX_GENERATION_EXACT_FREE_CODES;
};

// Checks a TrainTokenizer request against a collection of `items` items of `dimension` and
// turns it into a plan. INVALID_ARGUMENT naming the field and value.
absl::StatusOr<TokenizerTrainPlan> TrainPlanFromRequest(const v1::TrainTokenizerRequest& request,
                                                        int64_t items, int64_t dimension);

// Bytes an RQ-VAE training job of `options` holds for n items of dimension d with m of them
// trained on: the items (and their prepared copy), the training rows, TrainRqVae's own
// (RqVaeTrainingBytes) and the index generation's latents.
int64_t RqVaeJobBytes(const RqVaeOptions& options, int64_t n, int64_t m, int64_t d);

// Checks an activation policy value (INVALID_ARGUMENT naming `field`).
absl::Status ValidateActivation(v1::Activation activation, absl::string_view field = "activation");

// The end of a tokenizer job that started at `start`: `quantizer` with metadata `record` (the
// job's parameters filled), made from `items` whose prepared rows (normalised for cosine) are
// x (n x d) with codes (n x L). Capacity assignment (plan) resolves collisions among them;
// suffixes carry over from the pending version's parent where the tuple is the parent's; the
// policy decides activation (ACTIVATION_IF_BETTER compares collision rate and MSE over the same
// items); the SIDs are written and the version committed.
absl::StatusOr<JobResult> FinishTokenizerVersion(
    const JobContext& context, Tokenizers::PendingVersion& pending, storage::TokenizerRecord record,
    TokenizerModel model, const ItemSet& items, const float* x, std::vector<int32_t> codes,
    const TokenizerTrainPlan& plan, v1::Activation policy,
    std::chrono::steady_clock::time_point start);

class TokenizerJob final : public JobWithRequest<v1::TrainTokenizerRequest> {
 public:
  static const JobKind& Kind();

  // memory_limit_bytes bounds an RQ-VAE training (RqVaeJobBytes); 0: no bound.
  explicit TokenizerJob(v1::TrainTokenizerRequest request, int64_t memory_limit_bytes = 0)
      : JobWithRequest(std::move(request)), memory_limit_bytes_(memory_limit_bytes) {}

  absl::string_view kind() const override { return Kind().kind; }
  absl::Status Validate(const CollectionInfo& info) const override;
  absl::StatusOr<JobResult> Run(const JobContext& context) override;

 private:
  // INVALID_ARGUMENT stating the bytes when an RQ-VAE plan for n items of dimension d would
  // exceed memory_limit_bytes_.
  absl::Status CheckMemory(const TokenizerTrainPlan& plan, int64_t n, int64_t d) const;
  // The RQ-VAE part of Run, after the snapshot and the training rows (m x d, prepared).
  absl::StatusOr<JobResult> RunRqVae(const JobContext& context, Tokenizers::PendingVersion& pending,
                                     const ItemSet& items, const std::vector<float>& train,
                                     int64_t m, const TokenizerTrainPlan& plan,
                                     std::chrono::steady_clock::time_point start);

  int64_t memory_limit_bytes_;
};

// The "import_tokenizer" job of an ImportTokenizer request.
class ImportTokenizerJob final : public JobWithRequest<v1::ImportTokenizerRequest> {
 public:
  static const JobKind& Kind();

  explicit ImportTokenizerJob(v1::ImportTokenizerRequest request)
      : JobWithRequest(std::move(request)) {}

  absl::string_view kind() const override { return Kind().kind; }
  absl::Status Validate(const CollectionInfo& info) const override;
  absl::StatusOr<JobResult> Run(const JobContext& context) override;
};

}  // namespace quantd

#endif  // QUANTD_SERVER_TOKENIZER_JOB_H_
