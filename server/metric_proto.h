// quantd.v1.Metric <-> core's Metric: the one conversion, used by the RPC layer and by the
// collection records (which hold the quantd.v1.Metric value).
#ifndef QUANTD_SERVER_METRIC_PROTO_H_
#define QUANTD_SERVER_METRIC_PROTO_H_

#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "core/vectors.h"
#include "quantd/v1/quantd.pb.h"

namespace quantd {

// INVALID_ARGUMENT for METRIC_UNSPECIFIED and unknown values, naming them.
inline absl::StatusOr<Metric> MetricFromProto(int value) {
  switch (value) {
    case v1::METRIC_L2:
      return Metric::kL2;
    case v1::METRIC_INNER_PRODUCT:
      return Metric::kInnerProduct;
    case v1::METRIC_COSINE:
      return Metric::kCosine;
    default:
      return absl::InvalidArgumentError(absl::StrFormat(
          "metric %d is not one of METRIC_L2 (1), METRIC_INNER_PRODUCT (2), METRIC_COSINE (3)",
          value));
  }
}

inline v1::Metric MetricToProto(Metric metric) {
  switch (metric) {
    case Metric::kL2:
      return v1::METRIC_L2;
    case Metric::kInnerProduct:
      return v1::METRIC_INNER_PRODUCT;
    case Metric::kCosine:
      return v1::METRIC_COSINE;
  }
  return v1::METRIC_UNSPECIFIED;
}

}  // namespace quantd

#endif  // QUANTD_SERVER_METRIC_PROTO_H_
