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

// 1 / (epsilon x the costs' scale): the plan is that of exp(-cost * inverse_temperature) (a
// constant added to every cost changes nothing: the row scalings absorb it, so the centring of
// the seed only matters through its scale).
double InverseTemperature(const float* costs, int64_t n, int64_t k,
                          const SinkhornOptions& options) {
  double scale = 1;
  if (options.center) {
    const auto [lo, hi] = std::minmax_element(costs, costs + n * k);
    const double mid = (static_cast<double>(*lo) + *hi) / 2;
    scale = static_cast<double>(*hi) - mid + 1e-5;
  }
  return 1.0 / (scale * options.epsilon);
}

bool AllFiniteAndPositive(const std::vector<double>& values) {
  return std::all_of(values.begin(), values.end(),
                     [](double v) { return std::isfinite(v) && v > 0; });
}

// sum_j a[j] * b[j] over k values, in four interleaved partial sums (vectorisable, and in a
// fixed order).
double Dot(const double* a, const double* b, int64_t k) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t j = 0;
  for (; j + 4 <= k; j += 4) {
    s0 += a[j] * b[j];
    s1 += a[j + 1] * b[j + 1];
    s2 += a[j + 2] * b[j + 2];
    s3 += a[j + 3] * b[j + 3];
  }
  for (; j < k; ++j) s0 += a[j] * b[j];
  return (s0 + s1) + (s2 + s3);
}

// Scaling form: plan = diag(u) K diag(v), K = exp(-(cost - row minimum) * inverse_temperature).
// False when a scaling is not a positive finite number (then *plan holds no plan).
bool ScalingPlan(const float* costs, int64_t n, int64_t k, double inverse_temperature,
                 int iterations, std::vector<double>* plan) {
  std::vector<double>& kernel = *plan;
  kernel.resize(static_cast<size_t>(n * k));
  for (int64_t i = 0; i < n; ++i) {
    const float* row = costs + i * k;
    const double low = *std::min_element(row, row + k);
    for (int64_t j = 0; j < k; ++j) {
      kernel[i * k + j] = std::exp(-(row[j] - low) * inverse_temperature);
    }
  }
  std::vector<double> u(static_cast<size_t>(n), 1.0);
  std::vector<double> v(static_cast<size_t>(k), 1.0);
  std::vector<double> column(static_cast<size_t>(k));
  const double row_mass = 1.0 / static_cast<double>(n);
  const double column_mass = 1.0 / static_cast<double>(k);
  for (int it = 0; it < iterations; ++it) {
    for (int64_t i = 0; i < n; ++i) u[i] = row_mass / Dot(kernel.data() + i * k, v.data(), k);
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

// log(sum_j exp(values[j * stride] + add[j])) over count values.
double LogSumExp(const double* values, int64_t count, int64_t stride, const double* add) {
  double top = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < count; ++j) top = std::max(top, values[j * stride] + add[j]);
  double sum = 0;
  for (int64_t j = 0; j < count; ++j) sum += std::exp(values[j * stride] + add[j] - top);
  return top + std::log(sum);
}

// Log-domain form: log plan = -cost * inverse_temperature + f_i + g_j. Slower (exp in every
// pass), never overflows.
void LogDomainPlan(const float* costs, int64_t n, int64_t k, double inverse_temperature,
                   int iterations, std::vector<double>* plan) {
  std::vector<double> logits(static_cast<size_t>(n * k));
  for (int64_t i = 0; i < n * k; ++i) logits[i] = -costs[i] * inverse_temperature;
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
  std::vector<double> plan;
  if (absl::Status s = SinkhornPlanInto(costs, n, k, options, &plan); !s.ok()) return s;
  return plan;
}

absl::Status SinkhornPlanInto(const float* costs, int64_t n, int64_t k,
                              const SinkhornOptions& options, std::vector<double>* plan) {
  if (absl::Status s = Validate(costs, n, k, options); !s.ok()) return s;
  const double inverse_temperature = InverseTemperature(costs, n, k, options);
  if (!ScalingPlan(costs, n, k, inverse_temperature, options.iterations, plan)) {
    LogDomainPlan(costs, n, k, inverse_temperature, options.iterations, plan);
  }
  return absl::OkStatus();
}

absl::Status SinkhornAssign(const float* costs, int64_t n, int64_t k,
                            const SinkhornOptions& options, int32_t* labels,
                            std::vector<double>* scratch) {
  std::vector<double> own;
  std::vector<double>* plan = scratch == nullptr ? &own : scratch;
  if (absl::Status s = SinkhornPlanInto(costs, n, k, options, plan); !s.ok()) return s;
  for (int64_t i = 0; i < n; ++i) {
    const double* row = plan->data() + i * k;
    labels[i] = static_cast<int32_t>(std::max_element(row, row + k) - row);
  }
  return absl::OkStatus();
}

}  // namespace quantd
