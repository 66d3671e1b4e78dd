// The "train_tokenizer" job: RQ-KMeans (plain or balanced) over a collection, committing a new
// tokenizer version and every item's SID at once.
#ifndef QUANTD_SERVER_TOKENIZER_JOB_H_
#define QUANTD_SERVER_TOKENIZER_JOB_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "core/residual_quantizer.h"
#include "quantd/v1/quantd.pb.h"
#include "server/training_job.h"

namespace quantd {

// Checks a TrainTokenizer request against a collection of `items` items and turns it into
// residual-quantizer options (defaults filled in). INVALID_ARGUMENT naming the field and value.
absl::StatusOr<RqOptions> TrainOptionsFromRequest(const v1::TrainTokenizerRequest& request,
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
