#include "core/vectors.h"

#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"

namespace quantd {

absl::string_view MetricName(Metric metric) {
  switch (metric) {
    case Metric::kL2:
      return "l2";
    case Metric::kInnerProduct:
      return "inner_product";
    case Metric::kCosine:
      return "cosine";
  }
  return "unknown";
}

std::optional<Metric> ParseMetric(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  if (lower == "l2") return Metric::kL2;
  if (lower == "ip" || lower == "inner_product") return Metric::kInnerProduct;
  if (lower == "cosine" || lower == "cos") return Metric::kCosine;
  return std::nullopt;
}

absl::Status CheckVectors(const float* data, int64_t n, int64_t d, Metric metric,
                          absl::string_view field) {
  for (int64_t row = 0; row < n; ++row) {
    const float* v = data + row * d;
    double squared_norm = 0;
    for (int64_t j = 0; j < d; ++j) {
      if (!std::isfinite(v[j])) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s[row %d, component %d] = %f: components must be finite", field, row, j, v[j]));
      }
      squared_norm += static_cast<double>(v[j]) * v[j];
    }
    if (metric == Metric::kCosine && squared_norm == 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s[row %d] is the zero vector, which has no cosine direction", field, row));
    }
  }
  return absl::OkStatus();
}

void NormalizeRows(float* x, int64_t n, int64_t d) {
  for (int64_t i = 0; i < n; ++i) {
    float* row = x + i * d;
    double squared = 0;
    for (int64_t j = 0; j < d; ++j) squared += static_cast<double>(row[j]) * row[j];
    if (squared == 0) continue;
    // Subnormal floats square to >= 1e-90 and FLT_MAX^2 x 65536 is ~1e82: both well inside
    // double's range, so neither the norm nor its inverse (<= ~1e45) can overflow.
    const double scale = 1.0 / std::sqrt(squared);
    for (int64_t j = 0; j < d; ++j) row[j] = static_cast<float>(row[j] * scale);
  }
}

std::vector<float> NormalizedRows(const float* x, int64_t n, int64_t d) {
  std::vector<float> out(x, x + n * d);
  NormalizeRows(out.data(), n, d);
  return out;
}

}  // namespace quantd
