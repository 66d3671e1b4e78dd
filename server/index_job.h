// The "train_index" job: an IVF-PQ index (coarse quantizer and product quantizer) over a
// collection, committing a new index version and every item's list and code at once.
#ifndef QUANTD_SERVER_INDEX_JOB_H_
#define QUANTD_SERVER_INDEX_JOB_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "core/ivf_pq.h"
#include "quantd/v1/quantd.pb.h"
#include "server/training_job.h"

namespace quantd {

// Collections of at least this many items get the fast-scan layout by default: a plain 8-bit
// scan of 1/8 of them (the default nprobe) takes about 4 ns a code x 25000 = 100 us, about a
// batch-1 gRPC Search's own overhead, and grows with the collection; below it, the plain
// layout's 8-bit codes rank better per byte and the scan costs little.
inline constexpr int64_t kFastScanMinItems = 200000;

// A TrainIndex request turned into core options, with the defaults of quantd.proto filled in,
// and the job's `decision`: the layout and code size, and each default chosen with its reason.
struct IndexPlan {
  IvfPqOptions options;
  std::string decision;
};
// Checks a TrainIndex request against a collection of `items` items of dimension `d` and
// `metric`. INVALID_ARGUMENT naming the field and value.
absl::StatusOr<IndexPlan> IndexPlanFromRequest(const v1::TrainIndexRequest& request, int64_t items,
                                               int64_t d, Metric metric);

// Training rows of a request over `items` items: sample_size when in 1..items-1, else all.
int64_t IndexTrainingRows(const v1::TrainIndexRequest& request, int64_t items);

class IndexJob final : public JobWithRequest<v1::TrainIndexRequest> {
 public:
  static const JobKind& Kind();

  explicit IndexJob(v1::TrainIndexRequest request) : JobWithRequest(std::move(request)) {}

  absl::string_view kind() const override { return Kind().kind; }
  absl::Status Validate(const CollectionInfo& info) const override;
  absl::StatusOr<JobResult> Run(const JobContext& context) override;
};

}  // namespace quantd

#endif  // QUANTD_SERVER_INDEX_JOB_H_
