#include "server/jobs.h"

#include <algorithm>
#include <chrono>
#include <numeric>
#include <random>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "server/heap.h"
#include "server/index.h"
#include "server/log.h"
#include "server/tokenizer.h"

namespace quantd {
namespace {

constexpr char kTrainTokenizer[] = "train_tokenizer";
constexpr char kTrainIndex[] = "train_index";
constexpr uint32_t kDefaultIterations = 25;
constexpr uint32_t kMaxIterations = 1000;
constexpr int64_t kMaxCodebookSize = 65536;
constexpr double kDefaultSlack = 0.1;

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool Active(const storage::JobRecord& record) {
  return record.state() == v1::JOB_STATE_PENDING || record.state() == v1::JOB_STATE_RUNNING;
}

}  // namespace

absl::StatusOr<RqOptions> TrainOptionsFromRequest(const v1::TrainTokenizerRequest& request,
                                                  int64_t items) {
  RqOptions options;
  std::vector<int64_t> sizes(request.codebook_sizes().begin(), request.codebook_sizes().end());
  if (sizes.empty()) sizes = {256, 256, 256};
  if (sizes.size() > 16) {
    return absl::InvalidArgumentError(
        absl::StrFormat("codebook_sizes has %d levels, at most 16", sizes.size()));
  }
  const int64_t training_items =
      request.sample_size() > 0 && request.sample_size() < static_cast<uint64_t>(items)
          ? static_cast<int64_t>(request.sample_size())
          : items;
  for (size_t l = 0; l < sizes.size(); ++l) {
    if (sizes[l] < 1 || sizes[l] > kMaxCodebookSize) {
      return absl::InvalidArgumentError(absl::StrFormat("codebook_sizes[%d] = %d is outside 1..%d",
                                                        l, sizes[l], kMaxCodebookSize));
    }
    if (sizes[l] > training_items) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "codebook_sizes[%d] = %d exceeds the %d training items", l, sizes[l], training_items));
    }
  }
  if (!request.balanced() && (request.size_bounds_size() > 0 || request.has_balance_slack())) {
    return absl::InvalidArgumentError("size_bounds and balance_slack need balanced = true");
  }
  if (request.size_bounds_size() > 0 && request.has_balance_slack()) {
    return absl::InvalidArgumentError("give size_bounds or balance_slack, not both");
  }
  if (request.size_bounds_size() > 0 &&
      request.size_bounds_size() != static_cast<int>(sizes.size())) {
    return absl::InvalidArgumentError(absl::StrFormat("size_bounds has %d entries for %d levels",
                                                      request.size_bounds_size(), sizes.size()));
  }
  options.balance_slack = request.has_balance_slack() ? request.balance_slack() : kDefaultSlack;
  if (!(options.balance_slack >= 0 && options.balance_slack <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("balance_slack %g is outside 0..1", options.balance_slack));
  }
  for (size_t l = 0; l < sizes.size(); ++l) {
    RqLevelOptions level;
    level.k = sizes[l];
    level.balanced = request.balanced();
    if (request.size_bounds_size() > 0) {
      const v1::SizeBounds& bounds = request.size_bounds(static_cast<int>(l));
      if (bounds.size_max() > static_cast<uint64_t>(training_items) ||
          bounds.size_min() > bounds.size_max()) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "size_bounds[%d] = [%d, %d]: need size_min <= size_max <= %d training items", l,
            bounds.size_min(), bounds.size_max(), training_items));
      }
      level.bounds.size_min = static_cast<int64_t>(bounds.size_min());
      level.bounds.size_max = static_cast<int64_t>(bounds.size_max());
      if (auto status = CheckBoundsFeasible(training_items, level.k, level.bounds); !status.ok()) {
        return absl::InvalidArgumentError(
            absl::StrFormat("size_bounds[%d]: %s", l, status.message()));
      }
    }
    options.levels.push_back(level);
  }
  const uint32_t iterations =
      request.max_iterations() == 0 ? kDefaultIterations : request.max_iterations();
  if (iterations > kMaxIterations) {
    return absl::InvalidArgumentError(
        absl::StrFormat("max_iterations %d exceeds %d", request.max_iterations(), kMaxIterations));
  }
  options.kmeans.max_iterations = static_cast<int>(iterations);
  options.kmeans.seed = request.seed();
  options.kmeans.num_threads = 0;
  return options;
}

absl::StatusOr<std::unique_ptr<JobManager>> JobManager::Create(Store* store) {
  auto manager = std::unique_ptr<JobManager>(new JobManager(store));
  auto records = store->LoadJobs();
  if (!records.ok()) return records.status();
  for (storage::JobRecord& record : *records) {
    if (Active(record)) {
      // The commit and the job record are separate writes: a job whose version is the
      // collection's current one did commit before the crash.
      auto info = store->DescribeCollection(record.collection());
      const bool same_collection = info.ok() && info->id == record.collection_id();
      const bool index_job = record.kind() == kTrainIndex;
      uint32_t committed = 0;
      if (same_collection && index_job) {
        auto index = store->GetIndex(record.collection());
        if (index.ok() && (*index)->record.job_id() == record.id()) {
          committed = (*index)->record.version();
        }
      } else if (same_collection) {
        auto tokenizer = store->GetTokenizer(record.collection());
        if (tokenizer.ok() && (*tokenizer)->record().job_id() == record.id()) {
          committed = (*tokenizer)->version();
        }
      }
      if (committed > 0) {
        record.set_state(v1::JOB_STATE_SUCCEEDED);
        record.set_phase("done");
        record.set_progress(1.0);
        record.set_result_version(committed);
      } else {
        record.set_state(v1::JOB_STATE_FAILED);
        record.set_error(absl::StrFormat(
            "interrupted: the server stopped before the job finished; the previous %s version "
            "is unchanged",
            index_job ? "index" : "tokenizer"));
      }
      record.set_end_time_ms(NowMs());
      if (auto status = store->PutJob(record); !status.ok()) return status;
    }
    int64_t number = 0;
    if (absl::SimpleAtoi(absl::StripPrefix(record.id(), "job-"), &number)) {
      manager->next_job_number_ = std::max(manager->next_job_number_, number + 1);
    }
    auto entry = std::make_shared<Entry>();
    entry->record = record;
    manager->jobs_[record.id()] = std::move(entry);
  }
  manager->worker_ = std::thread([m = manager.get()] { m->WorkerLoop(); });
  return manager;
}

void JobManager::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    for (auto& [id, entry] : jobs_) entry->cancel = true;
  }
  cv_.notify_all();
}

JobManager::~JobManager() {
  Stop();
  if (worker_.joinable()) worker_.join();
}

absl::StatusOr<v1::Job> JobManager::StartTrainTokenizer(const v1::TrainTokenizerRequest& request) {
  auto info = store_->DescribeCollection(request.collection());
  if (!info.ok()) return info.status();
  if (auto options = TrainOptionsFromRequest(request, static_cast<int64_t>(info->item_count));
      !options.ok()) {
    return options.status();
  }
  auto entry = std::make_shared<Entry>();
  entry->request = request;
  return Enqueue(std::move(entry), *info, kTrainTokenizer, request.SerializeAsString());
}

absl::StatusOr<v1::Job> JobManager::StartTrainIndex(const v1::TrainIndexRequest& request) {
  auto info = store_->DescribeCollection(request.collection());
  if (!info.ok()) return info.status();
  if (auto options = IndexOptionsFromRequest(request, static_cast<int64_t>(info->item_count),
                                             info->dimension, info->metric);
      !options.ok()) {
    return options.status();
  }
  auto entry = std::make_shared<Entry>();
  entry->index_request = request;
  return Enqueue(std::move(entry), *info, kTrainIndex, request.SerializeAsString());
}

absl::StatusOr<v1::Job> JobManager::Enqueue(std::shared_ptr<Entry> entry,
                                            const CollectionInfo& info, absl::string_view kind,
                                            std::string serialized_request) {
  std::lock_guard lock(mu_);
  if (stopping_) return absl::UnavailableError("the server is shutting down");
  for (const auto& [id, other] : jobs_) {
    if (other->record.collection_id() == info.id && Active(other->record)) {
      return absl::FailedPreconditionError(
          absl::StrFormat("job %s (%s) is already training collection '%s'; wait for it or "
                          "cancel it",
                          id, other->record.kind(), info.name));
    }
  }
  storage::JobRecord& record = entry->record;
  record.set_id(absl::StrFormat("job-%06d", next_job_number_++));
  record.set_collection(info.name);
  record.set_collection_id(info.id);
  record.set_kind(std::string(kind));
  record.set_state(v1::JOB_STATE_PENDING);
  record.set_phase("queued");
  record.set_create_time_ms(NowMs());
  record.set_request(std::move(serialized_request));
  if (auto status = store_->PutJob(record); !status.ok()) return status;
  jobs_[record.id()] = entry;
  queue_.push_back(entry);
  cv_.notify_all();
  return ToProto(record);
}

absl::StatusOr<v1::Job> JobManager::Get(const std::string& id) const {
  std::lock_guard lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrFormat("job '%s' does not exist", id));
  return ToProto(it->second->record);
}

std::vector<v1::Job> JobManager::List(const std::string& collection, uint32_t collection_id) const {
  std::lock_guard lock(mu_);
  std::vector<v1::Job> jobs;
  for (auto it = jobs_.rbegin(); it != jobs_.rend(); ++it) {
    if (collection.empty() || it->second->record.collection_id() == collection_id) {
      jobs.push_back(ToProto(it->second->record));
    }
  }
  return jobs;
}

absl::Status JobManager::CancelLocked(const std::shared_ptr<Entry>& entry,
                                      absl::string_view reason) {
  entry->cancel = true;  // a running job stops at its next progress check
  if (entry->record.state() != v1::JOB_STATE_PENDING) return absl::OkStatus();
  queue_.erase(std::remove(queue_.begin(), queue_.end(), entry), queue_.end());
  entry->record.set_state(v1::JOB_STATE_CANCELLED);
  entry->record.set_phase("cancelled");
  entry->record.set_error(std::string(reason));
  entry->record.set_end_time_ms(NowMs());
  return store_->PutJob(entry->record);
}

void JobManager::CancelCollection(uint32_t collection_id) {
  std::lock_guard lock(mu_);
  for (auto& [id, entry] : jobs_) {
    if (entry->record.collection_id() != collection_id || !Active(entry->record)) continue;
    CancelLocked(entry, "the collection was dropped").IgnoreError();
  }
}

absl::StatusOr<v1::Job> JobManager::Cancel(const std::string& id) {
  std::unique_lock lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrFormat("job '%s' does not exist", id));
  std::shared_ptr<Entry> entry = it->second;
  if (!Active(entry->record)) {
    return absl::FailedPreconditionError(
        absl::StrFormat("job %s already ended (%s)", id, v1::JobState_Name(entry->record.state())));
  }
  if (auto status = CancelLocked(entry, "cancelled before it started"); !status.ok()) {
    return status;
  }
  return ToProto(entry->record);
}

v1::Job JobManager::ToProto(const storage::JobRecord& record) const {
  v1::Job job;
  job.set_id(record.id());
  job.set_collection(record.collection());
  job.set_kind(record.kind());
  job.set_state(static_cast<v1::JobState>(record.state()));
  job.set_phase(record.phase());
  job.set_progress(record.progress());
  job.set_create_time_ms(record.create_time_ms());
  job.set_start_time_ms(record.start_time_ms());
  job.set_end_time_ms(record.end_time_ms());
  if (record.start_time_ms() > 0) {
    const int64_t end = record.end_time_ms() > 0 ? record.end_time_ms() : NowMs();
    job.set_elapsed_seconds(static_cast<double>(end - record.start_time_ms()) / 1000.0);
  }
  job.set_error(record.error());
  job.set_result_version(record.result_version());
  return job;
}

void JobManager::WorkerLoop() {
  while (true) {
    std::shared_ptr<Entry> entry;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      entry = queue_.front();
      queue_.pop_front();
      entry->record.set_state(v1::JOB_STATE_RUNNING);
      entry->record.set_phase("loading");
      entry->record.set_start_time_ms(NowMs());
      store_->PutJob(entry->record).IgnoreError();
    }
    const bool index_job = entry->record.kind() == kTrainIndex;
    LogInfo("job %s: training %s of collection '%s'", entry->record.id(),
            index_job ? "index" : "tokenizer", entry->record.collection());
    Finish(*entry, index_job ? RunTrainIndex(*entry) : RunTrainTokenizer(*entry));
    ReleaseFreeHeap();  // training's peak memory goes back to the kernel
  }
}

void JobManager::SetPhase(Entry& entry, const std::string& phase, double progress) {
  std::lock_guard lock(mu_);
  entry.record.set_phase(phase);
  entry.record.set_progress(progress);
}

void JobManager::Finish(Entry& entry, const absl::StatusOr<uint32_t>& result) {
  std::lock_guard lock(mu_);
  storage::JobRecord& record = entry.record;
  record.set_end_time_ms(NowMs());
  if (result.ok()) {
    record.set_state(v1::JOB_STATE_SUCCEEDED);
    record.set_phase("done");
    record.set_progress(1.0);
    record.set_result_version(*result);
    LogInfo("job %s: committed %s version %d of '%s'", record.id(),
            record.kind() == kTrainIndex ? "index" : "tokenizer", *result, record.collection());
  } else if (result.status().code() == absl::StatusCode::kCancelled) {
    record.set_state(stopping_ ? v1::JOB_STATE_FAILED : v1::JOB_STATE_CANCELLED);
    record.set_phase(stopping_ ? "interrupted" : "cancelled");
    record.set_error(stopping_ ? "interrupted: the server stopped before the job finished"
                               : std::string(result.status().message()));
    LogInfo("job %s: %s", record.id(), record.error());
  } else {
    record.set_state(v1::JOB_STATE_FAILED);
    record.set_error(std::string(result.status().ToString()));
    LogWarning("job %s failed: %s", record.id(), record.error());
  }
  store_->PutJob(record).IgnoreError();
}

absl::StatusOr<Store::ItemSet> JobManager::LoadJobItems(const Entry& entry,
                                                        const std::string& collection) const {
  auto items = store_->LoadItems(collection);
  if (!items.ok()) return items.status();
  if (items->info.id != entry.record.collection_id()) {
    return absl::NotFoundError(
        absl::StrFormat("collection '%s' was dropped after the job was queued", collection));
  }
  return items;
}

absl::StatusOr<uint32_t> JobManager::RunTrainTokenizer(Entry& entry) {
  const v1::TrainTokenizerRequest& request = entry.request;
  const auto start = std::chrono::steady_clock::now();
  auto items = LoadJobItems(entry, request.collection());
  if (!items.ok()) return items.status();
  const int64_t n = static_cast<int64_t>(items->ids.size());
  const int64_t d = items->info.dimension;
  auto options = TrainOptionsFromRequest(request, n);
  if (!options.ok()) return options.status();
  if (entry.cancel) return absl::CancelledError("cancelled");

  // Training rows: all items or a seeded sample; normalised for cosine collections.
  const bool normalize = items->info.metric == Metric::kCosine;
  const int64_t m = request.sample_size() > 0 && request.sample_size() < static_cast<uint64_t>(n)
                        ? static_cast<int64_t>(request.sample_size())
                        : n;
  std::vector<int64_t> rows;
  std::vector<float> train;
  if (m < n) {
    rows = SampleRows(n, m, request.seed() ^ 0x5851f42d4c957f2dull);
    train.resize(static_cast<size_t>(m * d));
    for (int64_t i = 0; i < m; ++i) {
      std::copy_n(items->vectors.data() + rows[i] * d, d, train.data() + i * d);
    }
  } else {
    train = items->vectors;
  }
  if (normalize) NormalizeRows(train.data(), m, d);

  const int levels = static_cast<int>(options->levels.size());
  const int max_iterations = options->kmeans.max_iterations;
  options->on_progress = [&](int level, int iteration, double) {
    SetPhase(entry, absl::StrFormat("training level %d/%d", level + 1, levels),
             0.02 + 0.83 * (level + std::min(1.0, (iteration + 1.0) / max_iterations)) / levels);
    return !entry.cancel.load();
  };
  SetPhase(entry, absl::StrFormat("training level 1/%d", levels), 0.02);
  auto trained = TrainResidualQuantizer(train.data(), m, d, *options);
  if (!trained.ok()) return trained.status();
  if (entry.cancel) return absl::CancelledError("cancelled");

  // Codes of every item: the training labels for trained rows, nearest codes for the others.
  SetPhase(entry, "encoding", 0.86);
  std::vector<int32_t> codes(static_cast<size_t>(n * levels));
  if (m == n) {
    codes = trained->codes;
  } else {
    std::vector<float> all =
        normalize ? NormalizedRows(items->vectors.data(), n, d) : std::vector<float>();
    trained->quantizer.Encode(normalize ? all.data() : items->vectors.data(), n, codes.data());
    for (int64_t i = 0; i < m; ++i) {
      std::copy_n(trained->codes.data() + i * levels, levels, codes.data() + rows[i] * levels);
    }
  }
  if (entry.cancel) return absl::CancelledError("cancelled");

  storage::TokenizerRecord record;
  record.set_dimension(static_cast<uint32_t>(d));
  for (const RqLevelOptions& level : options->levels) {
    record.add_codebook_sizes(static_cast<uint32_t>(level.k));
  }
  record.set_normalize(normalize);
  record.set_balanced(request.balanced());
  record.set_seed(request.seed());
  record.set_max_iterations(static_cast<uint32_t>(max_iterations));
  record.set_trained_items(static_cast<uint64_t>(m));
  record.set_create_time_ms(NowMs());
  record.set_job_id(entry.record.id());
  for (const RqLevelReport& report : trained->levels) {
    storage::TokenizerRecord::Level* level = record.add_levels();
    level->set_balanced(report.balanced);
    level->set_size_min(static_cast<uint64_t>(report.bounds.size_min));
    level->set_size_max(static_cast<uint64_t>(report.bounds.size_max));
    level->set_iterations(static_cast<uint32_t>(report.iterations));
    level->set_mse_after(report.mse_after);
  }
  record.set_train_seconds(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  SetPhase(entry, "committing", 0.95);
  return store_->CommitTokenizer(request.collection(), std::move(record),
                                 std::move(trained->quantizer), *items, codes);
}

absl::StatusOr<uint32_t> JobManager::RunTrainIndex(Entry& entry) {
  const v1::TrainIndexRequest& request = entry.index_request;
  const auto start = std::chrono::steady_clock::now();
  auto items = LoadJobItems(entry, request.collection());
  if (!items.ok()) return items.status();
  const int64_t n = static_cast<int64_t>(items->ids.size());
  const int64_t d = items->info.dimension;
  // Items may have been deleted since the request was checked: check again on what is loaded.
  auto options = IndexOptionsFromRequest(request, n, d, items->info.metric);
  if (!options.ok()) return options.status();
  if (entry.cancel) return absl::CancelledError("cancelled");

  // Training rows: all items or a seeded sample (the index normalises cosine rows itself).
  const int64_t rows = IndexTrainingRows(request, n);
  std::vector<float> sample;
  const float* train = items->vectors.data();
  if (rows < n) {
    const std::vector<int64_t> picked = SampleRows(n, rows, request.seed() ^ 0x2545f4914f6cdd1dull);
    sample.resize(static_cast<size_t>(rows * d));
    for (int64_t i = 0; i < rows; ++i) {
      std::copy_n(items->vectors.data() + picked[i] * d, d, sample.data() + i * d);
    }
    train = sample.data();
  }
  // Training reports its progress (coarse k-means iterations, then PQ sub-quantizers) and stops
  // within one of those steps of a cancel.
  SetPhase(entry, "training", 0.05);
  options->on_progress = [this, &entry](double done) {
    SetPhase(entry, "training", 0.05 + 0.55 * done);
    return !entry.cancel;
  };
  auto trained = IvfPqIndex::Train(train, rows, d, *options);
  if (!trained.ok()) return trained.status();
  sample = std::vector<float>();
  if (entry.cancel) return absl::CancelledError("cancelled");

  // Every item's (list, code): lists is n, codes n x code_size; batched, in blocks so that
  // cancellation and progress are checked as it goes.
  SetPhase(entry, "encoding", 0.6);
  const int64_t code_size = trained->code_size();
  std::vector<int32_t> lists(static_cast<size_t>(n));
  std::vector<uint8_t> codes(static_cast<size_t>(n * code_size));
  constexpr int64_t kEncodeBlock = 16384;
  for (int64_t first = 0; first < n; first += kEncodeBlock) {
    if (entry.cancel) return absl::CancelledError("cancelled");
    SetPhase(entry, "encoding", 0.6 + 0.35 * static_cast<double>(first) / static_cast<double>(n));
    const int64_t block = std::min(kEncodeBlock, n - first);
    if (auto status = trained->EncodeBatch(
            absl::MakeConstSpan(items->vectors.data() + first * d, static_cast<size_t>(block * d)),
            lists.data() + first, codes.data() + first * code_size);
        !status.ok()) {
      return status;
    }
  }
  if (entry.cancel) return absl::CancelledError("cancelled");

  storage::IndexRecord record;
  record.set_nlist(static_cast<uint64_t>(options->nlist));
  record.set_m(static_cast<uint32_t>(options->m));
  record.set_nbits(static_cast<uint32_t>(options->nbits));
  record.set_seed(request.seed());
  record.set_trained_items(static_cast<uint64_t>(rows));
  record.set_coarse_iterations(static_cast<uint32_t>(options->coarse_iterations));
  record.set_pq_iterations(static_cast<uint32_t>(options->pq_iterations));
  record.set_create_time_ms(NowMs());
  record.set_job_id(entry.record.id());
  record.set_train_seconds(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  SetPhase(entry, "committing", 0.95);
  return store_->CommitIndex(request.collection(), std::move(record), std::move(*trained), *items,
                             lists, codes);
}

}  // namespace quantd
