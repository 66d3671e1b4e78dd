// Validation of vector batches shared by every write and query path.
#ifndef QUANTD_CORE_VECTORS_H_
#define QUANTD_CORE_VECTORS_H_

#include <cstdint>
#include <optional>
#include <string>

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

}  // namespace quantd

#endif  // QUANTD_CORE_VECTORS_H_
