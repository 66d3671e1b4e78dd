// Prometheus metrics of the server. Families are registered once at start-up and their
// references kept; labels are low-cardinality: RPC method (the quantd.v1 methods, or "other"),
// status code, job state and kind, and collection (at most --max_collections of them).
//
// Two kinds: event metrics updated as calls run (Metrics), and state read from the storage, the
// jobs and the process when Prometheus scrapes (StateCollector), so that a dropped collection
// or a finished job leaves no stale series behind.
#ifndef QUANTD_SERVER_METRICS_H_
#define QUANTD_SERVER_METRICS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "grpcpp/support/status.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace quantd {

class JobManager;
class SidService;
class Storage;
class WorkQueue;

class Metrics {
 public:
  Metrics();
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  // One finished call to `grpc_method` ("/quantd.v1.Quantd/Search"): counts it by method and
  // gRPC status code name ("OK", "INVALID_ARGUMENT") and observes its latency.
  void RecordRequest(absl::string_view grpc_method, grpc::StatusCode code, double seconds);
  // Rows (items, vectors or queries) one call or one streamed message carried.
  void RecordRows(absl::string_view method, double rows);
  void AddUpsertedRows(double rows) { upserted_rows_.Increment(rows); }
  // The in-flight gauge of a call to `grpc_method` ("/quantd.v1.Quantd/Search").
  prometheus::Gauge& InFlight(absl::string_view grpc_method);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& latency_;
  prometheus::Family<prometheus::Histogram>& rows_;
  prometheus::Family<prometheus::Gauge>& in_flight_;
  prometheus::Counter& upserted_rows_;
};

// Scrape-time figures: collections (items, model bytes in memory, SID collision rate and
// codebook usage per level), training jobs (by state; progress and elapsed time of running
// ones; durations of finished ones), RocksDB, the serving queue and the process.
class StateCollector : public prometheus::Collectable {
 public:
  // All pointers outlive the collector; `pool` may be null. SID figures come from `sids`'s
  // cache (recomputed when the tokenizer version or item count changed, at most once a minute).
  StateCollector(const Storage* storage, const JobManager* jobs, const WorkQueue* pool,
                 const SidService* sids)
      : storage_(storage), jobs_(jobs), pool_(pool), sids_(sids) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const Storage* storage_;
  const JobManager* jobs_;
  const WorkQueue* pool_;
  const SidService* sids_;
};

}  // namespace quantd

#endif  // QUANTD_SERVER_METRICS_H_
