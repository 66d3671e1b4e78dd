// The "train_tokenizer" job: RQ-KMeans (plain or balanced per level) over a collection, then,
// for capacity assignment, training-time collision resolution; commits a new tokenizer version
// and every item's SID at once.
#ifndef QUANTD_SERVER_TOKENIZER_JOB_H_
#define QUANTD_SERVER_TOKENIZER_JOB_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "core/residual_quantizer.h"
#include "quantd/v1/quantd.pb.h"
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
};

// Checks a TrainTokenizer request against a collection of `items` items and turns it into a
// plan. INVALID_ARGUMENT naming the field and value.
absl::StatusOr<TokenizerTrainPlan> TrainPlanFromRequest(const v1::TrainTokenizerRequest& request,
                                                        int64_t items);

class TokenizerJob final : public JobWithRequest<v1::TrainTokenizerRequest> {
 public:
  static const JobKind& Kind();

  explicit TokenizerJob(v1::TrainTokenizerRequest request) : JobWithRequest(std::move(request)) {}

  absl::string_view kind() const override { return Kind().kind; }
  absl::Status Validate(const CollectionInfo& info) const override;
  absl::StatusOr<uint32_t> Run(const JobContext& context) override;
};

}  // namespace quantd

#endif  // QUANTD_SERVER_TOKENIZER_JOB_H_
