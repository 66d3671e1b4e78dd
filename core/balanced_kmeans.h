// Balanced k-means: k-means whose every cluster holds between size_min and size_max of the n
// training rows, as k-means-constrained guarantees. The assignment step of each Lloyd iteration
// is a size-constrained assignment (core/balanced_assignment.h) on squared distances.
//
// Shapes: data is n x d row-major float32; the result's centroids are k x d row-major and its
// assignments hold n labels in [0, k).
#ifndef QUANTD_CORE_BALANCED_KMEANS_H_
#define QUANTD_CORE_BALANCED_KMEANS_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "core/balanced_assignment.h"
#include "core/kmeans.h"

namespace quantd {

// Balanced k-means: Lloyd iterations whose assignment step is BalancedAssign (fast mode, not
// polished: the centroids move again) under `bounds` (over n). Trains on the rows plain k-means
// would train on (KMeansTrainingRows: a subsample when options.max_points_per_centroid asks for
// it, with the bounds scaled to it), then assigns all n rows under the full bounds, polished when
// there was no subsample. The result's assignments meet the bounds exactly. Options as
// TrainKMeans (validated by ValidateKMeansOptions): tolerance, restarts (the run with the lowest
// final objective wins), seeds per restart and on_iteration's numbering are the same. The
// objective passed to on_iteration is that of the iteration's balanced assignment over the
// training rows.
absl::StatusOr<KMeansResult> TrainBalancedKMeans(const float* data, int64_t n, int64_t d,
                                                 const SizeBounds& bounds,
                                                 const KMeansOptions& options);

}  // namespace quantd

#endif  // QUANTD_CORE_BALANCED_KMEANS_H_
