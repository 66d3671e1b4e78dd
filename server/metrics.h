// Prometheus metrics of the server: families are registered once at start-up and their
// references kept; labels are low-cardinality (RPC method and status code only).
#ifndef QUANTD_SERVER_METRICS_H_
#define QUANTD_SERVER_METRICS_H_

#include <memory>
#include <string>

#include "absl/strings/string_view.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace quantd {

class Metrics {
 public:
  Metrics();
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  // One finished RPC: counts it by method and gRPC status code and observes its latency.
  void RecordRequest(absl::string_view method, int status_code, double seconds);
  void AddUpsertedRows(double rows) { upserted_rows_.Increment(rows); }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& latency_;
  prometheus::Counter& upserted_rows_;
};

}  // namespace quantd

#endif  // QUANTD_SERVER_METRICS_H_
