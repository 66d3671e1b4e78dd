#include "core/scalar_quantizer.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_format.h"

namespace quantd {
namespace {

// The distance loops, cloned for AVX-512 / AVX2 and chosen at load time (no -march needed).
// Sixteen lane sums (lane t takes dimensions t, t + 16, ...) vectorise without reassociating
// float additions, so every clone returns the same value.
constexpr int kLanes = 16;

inline float SumLanes(const float* acc) {
  float sum = 0;
  for (int t = 0; t < kLanes; ++t) sum += acc[t];
  return sum;
}

// Lane t of acc takes the terms of dimensions t, t + 16, ...: the squared difference (kL2) or
// the product with the decoded value. Inlined into each target clone below.
template <bool kL2>
__attribute__((always_inline)) inline float ToCode(const float* __restrict q,
                                                   const uint8_t* __restrict code,
                                                   const float* __restrict lo,
                                                   const float* __restrict step, int64_t d) {
  float acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= d; j += kLanes) {
    for (int t = 0; t < kLanes; ++t) {
      const float y = lo[j + t] + static_cast<float>(code[j + t]) * step[j + t];
      if constexpr (kL2) {
        acc[t] += (q[j + t] - y) * (q[j + t] - y);
      } else {
        acc[t] += q[j + t] * y;
      }
    }
  }
  for (int t = 0; j < d; ++j, ++t) {
    const float y = lo[j] + static_cast<float>(code[j]) * step[j];
    acc[t] += kL2 ? (q[j] - y) * (q[j] - y) : q[j] * y;
  }
  return SumLanes(acc);
}

__attribute__((target_clones("avx512f", "avx2", "default"))) float L2ToCode(
    const float* __restrict q, const uint8_t* __restrict code, const float* __restrict lo,
    const float* __restrict step, int64_t d) {
  return ToCode<true>(q, code, lo, step, d);
}

__attribute__((target_clones("avx512f", "avx2", "default"))) float DotToCode(
    const float* __restrict q, const uint8_t* __restrict code, const float* __restrict lo,
    const float* __restrict step, int64_t d) {
  return ToCode<false>(q, code, lo, step, d);
}

}  // namespace

absl::StatusOr<ScalarQuantizer8> ScalarQuantizer8::Train(const float* x, int64_t n, int64_t d) {
  if (n < 1 || d < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("scalar quantizer needs n >= 1 and d >= 1 (got %d x %d)", n, d));
  }
  std::vector<float> lo(x, x + d), hi(x, x + d);
  for (int64_t i = 1; i < n; ++i) {
    const float* row = x + i * d;
    for (int64_t j = 0; j < d; ++j) {
      lo[j] = std::min(lo[j], row[j]);
      hi[j] = std::max(hi[j], row[j]);
    }
  }
  std::vector<float> step(static_cast<size_t>(d));
  for (int64_t j = 0; j < d; ++j) step[j] = (hi[j] - lo[j]) / 255.0f;
  return FromRanges(std::move(lo), std::move(step));
}

absl::StatusOr<ScalarQuantizer8> ScalarQuantizer8::FromRanges(std::vector<float> lo,
                                                              std::vector<float> step) {
  if (lo.empty() || lo.size() != step.size()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("scalar quantizer ranges: %d minima and %d steps", lo.size(), step.size()));
  }
  for (size_t j = 0; j < lo.size(); ++j) {
    if (!std::isfinite(lo[j]) || !std::isfinite(step[j]) || step[j] < 0 ||
        !std::isfinite(lo[j] + 255.0f * step[j])) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "scalar quantizer dimension %d: minimum %g, step %g is not a finite range", j, lo[j],
          step[j]));
    }
  }
  ScalarQuantizer8 sq;
  sq.lo_ = std::move(lo);
  sq.step_ = std::move(step);
  return sq;
}

void ScalarQuantizer8::Encode(const float* x, int64_t n, uint8_t* codes) const {
  const int64_t dim = d();
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < dim; ++j) {
      const float s = step_[j];
      const float t = s > 0 ? (x[i * dim + j] - lo_[j]) / s + 0.5f : 0.0f;
      // Clamped to the range (also a NaN, from nothing finite, to 0).
      codes[i * dim + j] = static_cast<uint8_t>(t >= 255.0f ? 255.0f : (t > 0 ? t : 0.0f));
    }
  }
}

void ScalarQuantizer8::Decode(const uint8_t* code, float* out) const {
  for (int64_t j = 0; j < d(); ++j) out[j] = lo_[j] + static_cast<float>(code[j]) * step_[j];
}

float ScalarQuantizer8::Distance(const float* q, const uint8_t* code, bool l2) const {
  return l2 ? L2ToCode(q, code, lo_.data(), step_.data(), d())
            : -DotToCode(q, code, lo_.data(), step_.data(), d());
}

}  // namespace quantd
