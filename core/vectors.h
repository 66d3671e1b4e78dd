// Validation of vector batches shared by every write and query path.
#ifndef QUANTD_CORE_VECTORS_H_
#define QUANTD_CORE_VECTORS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace quantd {

enum class Metric {
  kL2,            // squared Euclidean distance, smaller is nearer
  kInnerProduct,  // larger is nearer
  kCosine,        // inner product of normalised vectors, larger is nearer
};

absl::string_view MetricName(Metric metric);
// Parses "l2", "ip" / "inner_product", "cosine" (case-insensitive).
std::optional<Metric> ParseMetric(absl::string_view name);

// Largest dimension a collection may have.
inline constexpr int64_t kMaxDimension = 65536;

// Checks a row-major batch `data` of size n x d: every component finite, and for cosine every
// row of non-zero norm. `field` names the request field in error messages, e.g.
// "vectors[row 3, component 17] = nan". Returns INVALID_ARGUMENT on the first bad row.
absl::Status CheckVectors(const float* data, int64_t n, int64_t d, Metric metric,
                          absl::string_view field = "vectors");

// Scales every row of x (size n x d, row-major, finite components) to unit L2 norm, in place;
// zero rows stay zero. The squared norm, the scale 1 / ||row|| and each product are computed in
// double and rounded once, so every float row comes out finite with unit norm (to float
// rounding): rows of subnormal components (||row|| ~ 1e-45, whose float scale would overflow to
// inf) and rows of components near FLT_MAX (squared norm up to ~1e82 at d = kMaxDimension,
// which overflows float) alike. The one row normalisation of quantd: cosine training, encoding
// and search, and spherical k-means centroids all go through it.
void NormalizeRows(float* x, int64_t n, int64_t d);

// A copy of x (size n x d) with NormalizeRows applied.
std::vector<float> NormalizedRows(const float* x, int64_t n, int64_t d);

}  // namespace quantd

#endif  // QUANTD_CORE_VECTORS_H_
