// Sinkhorn-Knopp balanced assignment, as the RQ-VAE tokenizer of LC-Rec / LETTER / MiniOneRec
// uses it: an entropic optimal transport of n items onto k codes with uniform marginals (every
// item mass 1/n, every code mass 1/k), then each item takes the code of its largest share.
// A small epsilon follows the costs (epsilon -> 0: nearest code); a large one spreads items
// evenly over the codes.
//
// Shapes: costs is n x k row-major float32 (squared distances of items to codes); plans are
// n x k row-major double.
#ifndef QUANTD_CORE_SINKHORN_H_
#define QUANTD_CORE_SINKHORN_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace quantd {

struct SinkhornOptions {
  // Entropic regularisation, > 0, in units of the (centred) costs.
  double epsilon = 0.003;
  // Alternating normalisations (rows, then columns), >= 1; the seed's sk_iters.
  int iterations = 50;
  // Centre and scale the costs into [-1, 1] first, (c - mid) / (max - mid + 1e-5) with mid the
  // mean of the smallest and largest cost, as the seed's center_distance_for_constraint does:
  // epsilon then means the same whatever the scale of the distances.
  bool center = true;
};

// The transport plan (n x k): starting from exp(-cost / epsilon), `iterations` rounds of scaling
// the rows to sum 1/n and then the columns to sum 1/k, so the column sums are exactly 1/k (to
// rounding) and the row sums approach 1/n. Computed in double as diag(u) K diag(v) with K's
// rows shifted to a maximum of 1 (no overflow for any epsilon), falling back to log-domain
// scalings when a scaling under- or overflows (a code far from every item at tiny epsilon).
// INVALID_ARGUMENT for n < 1, k < 1, epsilon <= 0 or not finite, iterations < 1, or a
// non-finite cost (naming the row and column).
absl::StatusOr<std::vector<double>> SinkhornPlan(const float* costs, int64_t n, int64_t k,
                                                 const SinkhornOptions& options);

// As SinkhornPlan, into *plan (resized; its storage reused across calls).
absl::Status SinkhornPlanInto(const float* costs, int64_t n, int64_t k,
                              const SinkhornOptions& options, std::vector<double>* plan);

// The code of every item, labels (n): the argmax of its row of the plan (the lowest code on
// ties). scratch (may be null) holds the plan, reused across calls. Errors as SinkhornPlan.
absl::Status SinkhornAssign(const float* costs, int64_t n, int64_t k,
                            const SinkhornOptions& options, int32_t* labels,
                            std::vector<double>* scratch = nullptr);

}  // namespace quantd

#endif  // QUANTD_CORE_SINKHORN_H_
