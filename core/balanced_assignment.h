// Size-constrained assignment: give each of n points one of k clusters, minimising the total
// cost, with every cluster's size in [size_min, size_max] as a hard constraint (the problem
// k-means-constrained solves in each Lloyd step).
//
// Shapes: costs is n x k row-major (typically squared distances to centroids).
#ifndef QUANTD_CORE_BALANCED_ASSIGNMENT_H_
#define QUANTD_CORE_BALANCED_ASSIGNMENT_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace quantd {

struct SizeBounds {
  int64_t size_min = 0;
  int64_t size_max = 0;
};

// Bounds from a slack ratio: floor(n/k * (1 - slack)) .. ceil(n/k * (1 + slack)), always
// feasible for slack >= 0.
SizeBounds BoundsFromSlack(int64_t n, int64_t k, double slack);

// OK if some assignment meets the bounds: size_min * k <= n <= size_max * k and
// 0 <= size_min <= size_max. Otherwise INVALID_ARGUMENT naming the numbers.
absl::Status CheckBoundsFeasible(int64_t n, int64_t k, const SizeBounds& bounds);

enum class BalancedMode {
  // Minimum-cost flow; optimal. O(n * k) memory for the graph and roughly n augmenting paths:
  // meant for small n x k, and as the reference in tests.
  kExact,
  // For large n: cluster prices (a dual ascent) bring the nearest-by-price assignment within
  // the bounds, then a repair pass moves the cheapest points until the bounds hold exactly.
  // Objective within 1% of kExact on the test problems; bounds always met exactly.
  kFast,
};

struct BalancedOptions {
  BalancedMode mode = BalancedMode::kFast;
  // kFast: cluster prices (k) to start from, e.g. those of the previous call on similar costs
  // (the previous Lloyd iteration), which saves most of the price sweeps; replaced by the final
  // prices. Null, or not of size k: start from zero. kExact ignores it.
  std::vector<double>* prices = nullptr;
  // kFast: true runs the price sweeps to the end and then improving paths, for an assignment
  // within 1% of kExact's objective. false stops at the first assignment within the bounds; it
  // is argmin under the prices, hence optimal for the sizes it has, but those sizes may not be
  // the best ones. Cheaper: meant for the inner Lloyd iterations of balanced k-means, whose
  // centroids move again anyway.
  bool polish = true;
  // kFast: every point's candidate clusters from the previous call on the same points (as that
  // call left them here); the scan for each point's cheapest clusters starts from them, which
  // finds the same candidates with far fewer insertions when the costs changed little. Null, or
  // not from a call with the same n and polish: a cold scan. Replaced by this call's candidates.
  std::vector<int32_t>* candidates = nullptr;
  // If not null, receives the sum of costs[i, labels[i]] (in double).
  double* objective = nullptr;
  // kFast: threads of the passes over the cost rows (the row function runs on them), 0 for the
  // hardware concurrency; 1 keeps all the work on the calling thread. The result does not depend
  // on it. Negative: INVALID_ARGUMENT.
  int num_threads = 0;
};

// Returns labels (n), each in [0, k), with every cluster size within bounds. INVALID_ARGUMENT
// for infeasible bounds, k < 1, n < 1 or non-finite costs.
absl::StatusOr<std::vector<int32_t>> BalancedAssign(const float* costs, int64_t n, int64_t k,
                                                    const SizeBounds& bounds, BalancedMode mode);
absl::StatusOr<std::vector<int32_t>> BalancedAssign(const float* costs, int64_t n, int64_t k,
                                                    const SizeBounds& bounds,
                                                    const BalancedOptions& options);

// Writes rows [begin, end) of an n x k cost matrix to out ((end - begin) x k, row-major). Called
// from several threads at once on disjoint ranges (blocks of a few hundred rows while scanning):
// it must be thread-safe, and should do its work on the calling thread.
using CostRowsFn = std::function<void(int64_t begin, int64_t end, float* out)>;

// Cost columns of the given clusters over all n points: out is n x clusters.size(), row-major.
using CostColumnsFn = std::function<void(absl::Span<const int32_t> clusters, float* out)>;

// kFast on a cost matrix produced in row blocks (options.mode must be kFast): holds only every
// point's candidate clusters (about 16 per point), never the n x k matrix; the rare repair that
// needs more recomputes rows. `columns` (optional) gives the costs of a few clusters over all
// points more cheaply than a pass over every row, e.g. when few clusters lack candidates. Same
// result as BalancedAssign on the materialised matrix.
absl::StatusOr<std::vector<int32_t>> BalancedAssignRows(const CostRowsFn& rows, int64_t n,
                                                        int64_t k, const SizeBounds& bounds,
                                                        const BalancedOptions& options,
                                                        const CostColumnsFn& columns = {});

// Cost rows of the given points: out is points.size() x k, row-major.
using CostRowsOfFn = std::function<void(absl::Span<const int32_t> points, float* out)>;

// Greedy repair of an assignment (labels, n) whose sizes may break the bounds (checked feasible
// by the caller), given costs (n), each point's cost in its current cluster; both are updated.
// Over-full clusters give up the members whose move costs least, to clusters below size_max;
// then under-full clusters take the points whose move costs least from clusters above size_min.
// Each move fixes one unit of violation and creates none, so the bounds hold exactly after.
// Asks for the full rows of the over-full clusters' members (in blocks, and again for a point
// whose chosen target filled) and the columns of the under-full clusters (16 at a time): meant
// for an assignment that is nearly within bounds, e.g. argmin under cluster prices learnt on a
// sample, where those are a small share of the n x k costs.
void RepairToBounds(int64_t n, int64_t k, const SizeBounds& bounds, const CostRowsOfFn& rows_of,
                    const CostColumnsFn& columns, std::vector<int32_t>* labels,
                    std::vector<float>* costs);

// Sum of costs[i, labels[i]] (in double).
double AssignmentCost(const float* costs, int64_t n, int64_t k, const std::vector<int32_t>& labels);

}  // namespace quantd

#endif  // QUANTD_CORE_BALANCED_ASSIGNMENT_H_
