#include "core/sinkhorn.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace quantd {
namespace {

absl::Status Validate(const float* costs, int64_t n, int64_t k, const SinkhornOptions& options) {
  if (n < 1) return absl::InvalidArgumentError(absl::StrFormat("sinkhorn n %d: need items", n));
  if (k < 1) return absl::InvalidArgumentError(absl::StrFormat("sinkhorn k %d: need codes", k));
  if (!(options.epsilon > 0) || !std::isfinite(options.epsilon)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("sk_epsilon %g: must be positive and finite", options.epsilon));
  }
  if (options.iterations < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("sk_iters %d: must be at least 1", options.iterations));
  }
  for (int64_t i = 0; i < n * k; ++i) {
    if (!std::isfinite(costs[i])) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "sinkhorn costs[row %d, column %d] = %f: must be finite", i / k, i % k, costs[i]));
    }
  }
  return absl::OkStatus();
}

// -cost / epsilon (n x k, double), the costs centred first when asked.
std::vector<double> Logits(const float* costs, int64_t n, int64_t k,
                           const SinkhornOptions& options) {
  double shift = 0;
  double scale = 1;
  if (options.center) {
    const auto [lo, hi] = std::minmax_element(costs, costs + n * k);
    shift = (static_cast<double>(*lo) + *hi) / 2;
    scale = static_cast<double>(*hi) - shift + 1e-5;
  }
  std::vector<double> logits(static_cast<size_t>(n * k));
  for (int64_t i = 0; i < n * k; ++i) {
    logits[i] = -((costs[i] - shift) / scale) / options.epsilon;
  }
  return logits;
}

bool AllFiniteAndPositive(const std::vector<double>& values) {
  return std::all_of(values.begin(), values.end(),
                     [](double v) { return std::isfinite(v) && v > 0; });
}

// Scaling form: plan = diag(u) K diag(v), K = exp(logits - row max). False when a scaling is not
// a positive finite number (then the plan is not written).
bool ScalingPlan(const std::vector<double>& logits, int64_t n, int64_t k, int iterations,
                 std::vector<double>* plan) {
  std::vector<double>& kernel = *plan;
  kernel.resize(logits.size());
  for (int64_t i = 0; i < n; ++i) {
    const double* row = logits.data() + i * k;
    const double top = *std::max_element(row, row + k);
    for (int64_t j = 0; j < k; ++j) kernel[i * k + j] = std::exp(row[j] - top);
  }
  std::vector<double> u(static_cast<size_t>(n), 1.0);
  std::vector<double> v(static_cast<size_t>(k), 1.0);
  std::vector<double> column(static_cast<size_t>(k));
  const double row_mass = 1.0 / static_cast<double>(n);
  const double column_mass = 1.0 / static_cast<double>(k);
  for (int it = 0; it < iterations; ++it) {
    for (int64_t i = 0; i < n; ++i) {
      const double* row = kernel.data() + i * k;
      double sum = 0;
      for (int64_t j = 0; j < k; ++j) sum += row[j] * v[j];
      u[i] = row_mass / sum;
    }
    std::fill(column.begin(), column.end(), 0.0);
    for (int64_t i = 0; i < n; ++i) {
      const double* row = kernel.data() + i * k;
      for (int64_t j = 0; j < k; ++j) column[j] += row[j] * u[i];
    }
    for (int64_t j = 0; j < k; ++j) v[j] = column_mass / column[j];
    if (!AllFiniteAndPositive(u) || !AllFiniteAndPositive(v)) return false;
  }
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < k; ++j) kernel[i * k + j] *= u[i] * v[j];
  }
  return true;
}

// log(sum_j exp(values[j * stride])) over count values.
double LogSumExp(const double* values, int64_t count, int64_t stride, const double* add) {
  double top = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < count; ++j) top = std::max(top, values[j * stride] + add[j]);
  double sum = 0;
  for (int64_t j = 0; j < count; ++j) sum += std::exp(values[j * stride] + add[j] - top);
  return top + std::log(sum);
}

// Log-domain form: log plan = logits + f_i + g_j. Slower (exp in every pass), never overflows.
void LogDomainPlan(const std::vector<double>& logits, int64_t n, int64_t k, int iterations,
                   std::vector<double>* plan) {
  std::vector<double> f(static_cast<size_t>(n), 0.0);
  std::vector<double> g(static_cast<size_t>(k), 0.0);
  const double log_row_mass = -std::log(static_cast<double>(n));
  const double log_column_mass = -std::log(static_cast<double>(k));
  for (int it = 0; it < iterations; ++it) {
    for (int64_t i = 0; i < n; ++i) {
      f[i] = log_row_mass - LogSumExp(logits.data() + i * k, k, 1, g.data());
    }
    for (int64_t j = 0; j < k; ++j) {
      g[j] = log_column_mass - LogSumExp(logits.data() + j, n, k, f.data());
    }
  }
  plan->resize(logits.size());
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < k; ++j) (*plan)[i * k + j] = std::exp(logits[i * k + j] + f[i] + g[j]);
  }
}

}  // namespace

absl::StatusOr<std::vector<double>> SinkhornPlan(const float* costs, int64_t n, int64_t k,
                                                 const SinkhornOptions& options) {
  if (absl::Status s = Validate(costs, n, k, options); !s.ok()) return s;
  const std::vector<double> logits = Logits(costs, n, k, options);
  std::vector<double> plan;
  if (!ScalingPlan(logits, n, k, options.iterations, &plan)) {
    LogDomainPlan(logits, n, k, options.iterations, &plan);
  }
  return plan;
}

absl::StatusOr<std::vector<int32_t>> SinkhornAssign(const float* costs, int64_t n, int64_t k,
                                                    const SinkhornOptions& options) {
  absl::StatusOr<std::vector<double>> plan = SinkhornPlan(costs, n, k, options);
  if (!plan.ok()) return plan.status();
  std::vector<int32_t> labels(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const double* row = plan->data() + i * k;
    labels[i] = static_cast<int32_t>(std::max_element(row, row + k) - row);
  }
  return labels;
}

}  // namespace quantd
