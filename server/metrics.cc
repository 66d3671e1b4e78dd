#include "server/metrics.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/semantic_id.h"
#include "google/protobuf/descriptor.h"
#include "quantd/v1/quantd.grpc.pb.h"
#include "server/index.h"
#include "server/jobs.h"
#include "server/sid_service.h"
#include "server/storage.h"
#include "server/tokenizer.h"
#include "server/work_queue.h"

namespace quantd {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

// 50 us to 10 s, roughly x2.5 per bucket.
const prometheus::Histogram::BucketBoundaries kLatencyBuckets = {
    50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3,
    50e-3, 100e-3, 250e-3, 500e-3, 1.0,  2.5,    5.0,  10.0};
// Rows per call or message: 1 to 2^20, x4 per bucket.
const prometheus::Histogram::BucketBoundaries kRowBuckets = {
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576};
// Training job durations: 1 s to 4 h.
const std::vector<double> kJobSecondsBuckets = {1, 5, 15, 60, 300, 900, 3600, 14400};

constexpr absl::string_view kServicePrefix = "/quantd.v1.Quantd/";

// The quantd.v1 method name of a gRPC path, or "other" (health, reflection, unknown paths), so
// that a client cannot mint label values.
std::string MethodLabel(absl::string_view grpc_method) {
  if (absl::StartsWith(grpc_method, kServicePrefix)) {
    const absl::string_view name = grpc_method.substr(kServicePrefix.size());
    static const google::protobuf::ServiceDescriptor* service =
        google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
            v1::Quantd::service_full_name());
    if (service != nullptr && service->FindMethodByName(std::string(name)) != nullptr) {
      return std::string(name);
    }
  }
  return "other";
}

// The name gRPC gives `code` ("OK", "INVALID_ARGUMENT"), as the ecosystem's gRPC metrics label
// it; a number outside the 17 codes stays a number.
std::string CodeName(grpc::StatusCode code) {
  static constexpr const char* kNames[] = {"OK",
                                           "CANCELLED",
                                           "UNKNOWN",
                                           "INVALID_ARGUMENT",
                                           "DEADLINE_EXCEEDED",
                                           "NOT_FOUND",
                                           "ALREADY_EXISTS",
                                           "PERMISSION_DENIED",
                                           "RESOURCE_EXHAUSTED",
                                           "FAILED_PRECONDITION",
                                           "ABORTED",
                                           "OUT_OF_RANGE",
                                           "UNIMPLEMENTED",
                                           "INTERNAL",
                                           "UNAVAILABLE",
                                           "DATA_LOSS",
                                           "UNAUTHENTICATED"};
  const int value = static_cast<int>(code);
  if (value >= 0 && value < static_cast<int>(std::size(kNames))) return kNames[value];
  return std::to_string(value);
}

// Builders of scrape-time families.
MetricFamily Family(std::string name, std::string help, MetricType type) {
  MetricFamily family;
  family.name = std::move(name);
  family.help = std::move(help);
  family.type = type;
  return family;
}

void AddGauge(MetricFamily& family, std::vector<ClientMetric::Label> labels, double value) {
  ClientMetric metric;
  metric.label = std::move(labels);
  metric.gauge.value = value;
  family.metric.push_back(std::move(metric));
}

void AddCounter(MetricFamily& family, double value) {
  ClientMetric metric;
  metric.counter.value = value;
  family.metric.push_back(std::move(metric));
}

std::string StateName(v1::JobState state) {
  switch (state) {
    case v1::JOB_STATE_PENDING:
      return "pending";
    case v1::JOB_STATE_RUNNING:
      return "running";
    case v1::JOB_STATE_SUCCEEDED:
      return "succeeded";
    case v1::JOB_STATE_FAILED:
      return "failed";
    case v1::JOB_STATE_CANCELLED:
      return "cancelled";
    default:
      return "unspecified";
  }
}

// Process figures from /proc/self (Linux), as the Prometheus client libraries name them.
void AddProcessFamilies(std::vector<MetricFamily>& out) {
  std::ifstream stat_file("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
  // Fields after the command name in parentheses, which may contain spaces.
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return;
  std::istringstream fields(stat.substr(close + 2));
  std::vector<std::string> f;  // f[0] is field 3 (state)
  for (std::string token; fields >> token;) f.push_back(token);
  if (f.size() < 22) return;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  const double cpu = (std::stod(f[11]) + std::stod(f[12])) / ticks;  // utime + stime
  const double threads = std::stod(f[17]);
  const double start_ticks = std::stod(f[19]);
  const double virtual_bytes = std::stod(f[20]);
  const double resident_bytes = std::stod(f[21]) * page;
  double boot_time = 0;
  std::ifstream proc_stat("/proc/stat");
  for (std::string line; std::getline(proc_stat, line);) {
    if (absl::StartsWith(line, "btime ")) boot_time = std::stod(line.substr(6));
  }
  MetricFamily cpu_family =
      Family("process_cpu_seconds_total", "User and system CPU time spent, in seconds",
             MetricType::Counter);
  AddCounter(cpu_family, cpu);
  out.push_back(std::move(cpu_family));
  MetricFamily resident =
      Family("process_resident_memory_bytes", "Resident memory size in bytes", MetricType::Gauge);
  AddGauge(resident, {}, resident_bytes);
  out.push_back(std::move(resident));
  MetricFamily virt =
      Family("process_virtual_memory_bytes", "Virtual memory size in bytes", MetricType::Gauge);
  AddGauge(virt, {}, virtual_bytes);
  out.push_back(std::move(virt));
  MetricFamily start =
      Family("process_start_time_seconds",
             "Start time of the process since the Unix epoch, in seconds", MetricType::Gauge);
  AddGauge(start, {}, boot_time + start_ticks / ticks);
  out.push_back(std::move(start));
  MetricFamily thread_family =
      Family("process_threads", "Threads in the process", MetricType::Gauge);
  AddGauge(thread_family, {}, threads);
  out.push_back(std::move(thread_family));
  std::error_code error;
  double fds = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", error);
       !error && it != std::filesystem::directory_iterator(); it.increment(error)) {
    ++fds;
  }
  MetricFamily open_fds = Family("process_open_fds", "Open file descriptors", MetricType::Gauge);
  AddGauge(open_fds, {}, fds);
  out.push_back(std::move(open_fds));
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    MetricFamily max_fds =
        Family("process_max_fds", "Most open file descriptors allowed", MetricType::Gauge);
    AddGauge(max_fds, {}, static_cast<double>(limit.rlim_cur));
    out.push_back(std::move(max_fds));
  }
}

// Heap bytes of a tokenizer's codebooks: each level's K x d floats, kept plain and packed for
// the product kernels, plus K norms.
double TokenizerBytes(const Tokenizer& tokenizer) {
  double bytes = 0;
  for (int64_t l = 0; l < tokenizer.levels(); ++l) {
    const double k = static_cast<double>(tokenizer.quantizer().codebook_size(l));
    bytes += k * static_cast<double>(tokenizer.dimension()) * sizeof(float) * 2 + k * sizeof(float);
  }
  return bytes;
}

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
      rows_(prometheus::BuildHistogram()
                .Name("quantd_request_rows")
                .Help("Rows (items, vectors or queries) per call, or per message of a stream, by "
                      "method")
                .Register(*registry_)),
      in_flight_(prometheus::BuildGauge()
                     .Name("quantd_requests_in_flight")
                     .Help("RPCs started and not yet finished, by method")
                     .Register(*registry_)),
      upserted_rows_(prometheus::BuildCounter()
                         .Name("quantd_upserted_rows_total")
                         .Help("Rows acknowledged by Upsert")
                         .Register(*registry_)
                         .Add({})) {}

void Metrics::RecordRequest(absl::string_view grpc_method, grpc::StatusCode code, double seconds) {
  const std::string name = MethodLabel(grpc_method);
  requests_.Add({{"method", name}, {"code", std::string(CodeName(code))}}).Increment();
  latency_.Add({{"method", name}}, kLatencyBuckets).Observe(seconds);
}

void Metrics::RecordRows(absl::string_view method, double rows) {
  rows_.Add({{"method", std::string(method)}}, kRowBuckets).Observe(rows);
}

prometheus::Gauge& Metrics::InFlight(absl::string_view grpc_method) {
  return in_flight_.Add({{"method", MethodLabel(grpc_method)}});
}

std::vector<MetricFamily> StateCollector::Collect() const {
  std::vector<MetricFamily> out;
  const std::vector<CollectionInfo> collections = storage_->collections().List();

  MetricFamily count = Family("quantd_collections", "Collections", MetricType::Gauge);
  AddGauge(count, {}, static_cast<double>(collections.size()));
  out.push_back(std::move(count));
  MetricFamily items = Family("quantd_collection_items", "Items per collection", MetricType::Gauge);
  MetricFamily tokenizer_bytes = Family(
      "quantd_tokenizer_memory_bytes",
      "Heap bytes of the kept tokenizer versions' codebooks, per collection", MetricType::Gauge);
  MetricFamily versions_kept = Family("quantd_tokenizer_versions_kept",
                                      "Tokenizer versions kept, per collection", MetricType::Gauge);
  MetricFamily active_version =
      Family("quantd_tokenizer_active_version",
             "The active tokenizer version, per collection (0: none active)", MetricType::Gauge);
  MetricFamily index_bytes =
      Family("quantd_index_memory_bytes", "Heap bytes of the serving IVF-PQ index, per collection",
             MetricType::Gauge);
  MetricFamily collision = Family(
      "quantd_sid_collision_rate",
      "Share of items whose code tuple another item has too (1 - unique tuples / items), per "
      "collection; refreshed at most once a minute",
      MetricType::Gauge);
  MetricFamily usage =
      Family("quantd_codebook_usage_ratio", "Codes used / codebook size, per collection and level",
             MetricType::Gauge);
  MetricFamily perplexity =
      Family("quantd_codebook_perplexity",
             "exp(entropy) of the code distribution, per collection and level (K when uniform)",
             MetricType::Gauge);
  MetricFamily assigned = Family(
      "quantd_sid_assigned_since_training",
      "Items given codes since the tokenizer was trained (upserts of new or changed vectors)",
      MetricType::Gauge);
  MetricFamily displaced = Family(
      "quantd_sid_displaced_ratio",
      "Share of the items assigned since training that capacity moved off their nearest codes",
      MetricType::Gauge);
  MetricFamily overflow = Family(
      "quantd_sid_overflow_ratio",
      "Share of the items assigned since training that found no tuple with room (over capacity)",
      MetricType::Gauge);
  MetricFamily mse_ratio =
      Family("quantd_sid_assigned_mse_ratio",
             "Mean quantization error of the items assigned since training / the training MSE",
             MetricType::Gauge);
  MetricFamily growth =
      Family("quantd_sid_growth_ratio", "Items now / items when the tokenizer was trained",
             MetricType::Gauge);
  MetricFamily over_bound =
      Family("quantd_sid_clusters_over_bound",
             "Codes holding more items than their size bound in force, per collection and level",
             MetricType::Gauge);
  MetricFamily largest_suffix = Family(
      "quantd_sid_largest_suffix", "Largest dedup suffix held, per collection", MetricType::Gauge);
  MetricFamily retrain = Family(
      "quantd_tokenizer_retrain_recommended",
      "1 when the retraining rule holds (see TokenizerDrift in quantd.proto), per collection",
      MetricType::Gauge);

  for (const CollectionInfo& info : collections) {
    AddGauge(items, {{"collection", info.name}}, static_cast<double>(info.item_count));
    auto index = storage_->indexes().GetIndex(info.name);
    if (index.ok()) {
      AddGauge(index_bytes, {{"collection", info.name}},
               static_cast<double>((*index)->index.Stats().memory_bytes));
    }
    auto set = storage_->tokenizers().GetVersions(info.name);
    if (!set.ok() || *set == nullptr) continue;
    double bytes = 0;
    for (const auto& [version, kept] : (*set)->versions) bytes += TokenizerBytes(*kept);
    AddGauge(tokenizer_bytes, {{"collection", info.name}}, bytes);
    AddGauge(versions_kept, {{"collection", info.name}},
             static_cast<double>((*set)->versions.size()));
    AddGauge(active_version, {{"collection", info.name}},
             static_cast<double>((*set)->record.active()));
    std::shared_ptr<const Tokenizer> tokenizer = (*set)->active();
    if (tokenizer == nullptr) continue;
    auto figures = sids_->GetFigures(info, *tokenizer, SidService::Freshness::kWithinAMinute);
    if (!figures.ok()) continue;  // e.g. ABORTED by a retraining: next scrape
    AddGauge(collision, {{"collection", info.name}}, (*figures)->collisions.collision_rate);
    const SidService::Drift drift = SidService::DriftOf(*tokenizer);
    for (size_t l = 0; l < (*figures)->levels.size(); ++l) {
      const LevelUsage& level = (*figures)->levels[l];
      const std::vector<ClientMetric::Label> labels = {{"collection", info.name},
                                                       {"level", std::to_string(l)}};
      AddGauge(usage, labels,
               static_cast<double>(level.codes_used) / static_cast<double>(level.codebook_size));
      AddGauge(perplexity, labels, level.perplexity);
      AddGauge(over_bound, labels, static_cast<double>(drift.clusters_over_bound[l]));
    }
    const std::vector<ClientMetric::Label> labels = {{"collection", info.name}};
    AddGauge(assigned, labels, static_cast<double>(drift.assigned));
    AddGauge(displaced, labels, drift.displaced_fraction);
    AddGauge(overflow, labels, drift.overflow_fraction);
    AddGauge(mse_ratio, labels,
             drift.training_mse > 0 ? drift.assigned_mse / drift.training_mse : 0);
    AddGauge(growth, labels, drift.growth);
    AddGauge(largest_suffix, labels, static_cast<double>((*figures)->largest_suffix));
    AddGauge(retrain, labels, drift.retrain_recommended ? 1 : 0);
  }
  sids_->KeepFiguresOf(collections);  // dropped collections leave the cache
  out.push_back(std::move(items));
  out.push_back(std::move(tokenizer_bytes));
  out.push_back(std::move(versions_kept));
  out.push_back(std::move(active_version));
  out.push_back(std::move(index_bytes));
  out.push_back(std::move(collision));
  out.push_back(std::move(usage));
  for (MetricFamily* family : {&perplexity, &assigned, &displaced, &overflow, &mse_ratio, &growth,
                               &over_bound, &largest_suffix, &retrain}) {
    out.push_back(std::move(*family));
  }

  // Jobs.
  MetricFamily by_state =
      Family("quantd_jobs", "Training jobs by state (kept history)", MetricType::Gauge);
  MetricFamily progress =
      Family("quantd_job_progress_ratio", "Progress (0..1) of running jobs, by collection and kind",
             MetricType::Gauge);
  MetricFamily running =
      Family("quantd_job_running_seconds", "Elapsed time of running jobs, by collection and kind",
             MetricType::Gauge);
  MetricFamily durations =
      Family("quantd_job_duration_seconds", "Durations of finished jobs (kept history), by kind",
             MetricType::Histogram);
  std::map<std::string, double> states;
  for (v1::JobState state : {v1::JOB_STATE_PENDING, v1::JOB_STATE_RUNNING, v1::JOB_STATE_SUCCEEDED,
                             v1::JOB_STATE_FAILED, v1::JOB_STATE_CANCELLED}) {
    states[StateName(state)] = 0;
  }
  std::map<std::string, std::vector<double>> finished;  // by kind
  for (const JobKind* kind : JobKinds()) finished[std::string(kind->kind)];
  for (const v1::Job& job : jobs_->List("", 0)) {
    ++states[StateName(job.state())];
    if (job.state() == v1::JOB_STATE_RUNNING) {
      const std::vector<ClientMetric::Label> labels = {{"collection", job.collection()},
                                                       {"kind", job.kind()}};
      AddGauge(progress, labels, job.progress());
      AddGauge(running, labels, job.elapsed_seconds());
    } else if (job.state() != v1::JOB_STATE_PENDING && finished.contains(job.kind())) {
      finished[job.kind()].push_back(job.elapsed_seconds());
    }
  }
  for (const auto& [state, jobs] : states) AddGauge(by_state, {{"state", state}}, jobs);
  for (const auto& [kind, seconds] : finished) {
    ClientMetric metric;
    metric.label = {{"kind", kind}};
    metric.histogram.sample_count = seconds.size();
    for (double s : seconds) metric.histogram.sample_sum += s;
    for (double bound : kJobSecondsBuckets) {
      const auto below =
          std::count_if(seconds.begin(), seconds.end(), [bound](double s) { return s <= bound; });
      metric.histogram.bucket.push_back({static_cast<uint64_t>(below), bound});
    }
    metric.histogram.bucket.push_back({seconds.size(), std::numeric_limits<double>::infinity()});
    durations.metric.push_back(std::move(metric));
  }
  out.push_back(std::move(by_state));
  out.push_back(std::move(progress));
  out.push_back(std::move(running));
  out.push_back(std::move(durations));

  // RocksDB.
  const Db::Figures db = storage_->db().GetFigures();
  const std::pair<const char*, std::pair<const char*, double>> db_gauges[] = {
      {"quantd_rocksdb_live_sst_bytes", {"Bytes of live SST files", db.live_sst_bytes}},
      {"quantd_rocksdb_memtable_bytes", {"Bytes of all memtables", db.memtable_bytes}},
      {"quantd_rocksdb_pending_compaction_bytes",
       {"Estimated bytes compaction still has to rewrite", db.pending_compaction_bytes}},
      {"quantd_rocksdb_running_compactions", {"Compactions running", db.running_compactions}},
  };
  for (const auto& [name, help_value] : db_gauges) {
    MetricFamily family = Family(name, help_value.first, MetricType::Gauge);
    AddGauge(family, {}, help_value.second);
    out.push_back(std::move(family));
  }

  // Serving queue.
  if (pool_ != nullptr) {
    MetricFamily waiting =
        Family("quantd_serving_queue_waiting", "Search/Encode/GetStats calls waiting for a worker",
               MetricType::Gauge);
    AddGauge(waiting, {}, static_cast<double>(pool_->waiting()));
    out.push_back(std::move(waiting));
    MetricFamily busy = Family("quantd_serving_workers_busy",
                               "Search/Encode/GetStats workers running a call", MetricType::Gauge);
    AddGauge(busy, {}, static_cast<double>(pool_->running()));
    out.push_back(std::move(busy));
    MetricFamily capacity = Family(
        "quantd_serving_queue_capacity",
        "Most Search/Encode/GetStats calls that may wait (--search_queue)", MetricType::Gauge);
    AddGauge(capacity, {}, static_cast<double>(pool_->capacity()));
    out.push_back(std::move(capacity));
  }

  AddProcessFamilies(out);
  return out;
}

}  // namespace quantd
