#include "server/metrics.h"

#include "prometheus/counter.h"

namespace quantd {
namespace {

// 50 us to 10 s, roughly x2.5 per bucket.
const prometheus::Histogram::BucketBoundaries kLatencyBuckets = {
    50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3,
    50e-3, 100e-3, 250e-3, 500e-3, 1.0,  2.5,    5.0,  10.0};

}  // namespace

Metrics::Metrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      requests_(prometheus::BuildCounter()
                    .Name("quantd_requests_total")
                    .Help("Finished RPCs by method and gRPC status code")
                    .Register(*registry_)),
      latency_(prometheus::BuildHistogram()
                   .Name("quantd_request_duration_seconds")
                   .Help("RPC latency by method, from first byte to status")
                   .Register(*registry_)),
      upserted_rows_(prometheus::BuildCounter()
                         .Name("quantd_upserted_rows_total")
                         .Help("Rows acknowledged by Upsert")
                         .Register(*registry_)
                         .Add({})) {}

void Metrics::RecordRequest(absl::string_view method, int status_code, double seconds) {
  const std::string name(method);
  requests_.Add({{"method", name}, {"code", std::to_string(status_code)}}).Increment();
  latency_.Add({{"method", name}}, kLatencyBuckets).Observe(seconds);
}

}  // namespace quantd
