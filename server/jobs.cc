#include "server/jobs.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "server/clock.h"
#include "server/heap.h"
#include "server/index_job.h"
#include "server/log.h"
#include "server/tokenizer_job.h"

namespace quantd {
namespace {

// A running job's record is written at least this often while its phase stays the same, so a
// crash leaves a recent progress.
constexpr std::chrono::seconds kProgressWriteInterval(1);

bool Active(const storage::JobRecord& record) {
  return record.state() == v1::JOB_STATE_PENDING || record.state() == v1::JOB_STATE_RUNNING;
}

const JobKind* FindKind(absl::string_view kind) {
  for (const JobKind* known : JobKinds()) {
    if (known->kind == kind) return known;
  }
  return nullptr;
}

// Records an active job that a stop (clean or a crash) ended before it committed: FAILED in
// phase "interrupted", the error naming the phase and progress it had reached.
void MarkInterrupted(storage::JobRecord& record) {
  const JobKind* kind = FindKind(record.kind());
  record.set_error(absl::StrFormat(
      "interrupted in phase '%s' at %d%%: the server stopped before the job finished; the "
      "previous %s version is unchanged",
      record.phase(), static_cast<int>(std::floor(record.progress() * 100)),
      kind != nullptr ? kind->model : "model"));
  record.set_state(v1::JOB_STATE_FAILED);
  record.set_phase("interrupted");
  record.set_end_time_ms(NowMs());
}

}  // namespace

const std::vector<const JobKind*>& JobKinds() {
  static const auto* kinds = new std::vector<const JobKind*>{
      &TokenizerJob::Kind(),
      &ImportTokenizerJob::Kind(),
      &IndexJob::Kind(),
  };
  return *kinds;
}

absl::StatusOr<ItemSet> JobContext::LoadItems() const {
  auto items = storage_->items().LoadItems(record_.collection());
  if (!items.ok()) return items.status();
  if (items->info.id != record_.collection_id()) {
    return absl::NotFoundError(absl::StrFormat(
        "collection '%s' was dropped after the job was queued", record_.collection()));
  }
  return items;
}

absl::StatusOr<std::unique_ptr<JobManager>> JobManager::Create(Storage* storage) {
  auto manager = std::unique_ptr<JobManager>(new JobManager(storage));
  auto records = storage->jobs().LoadAll();
  if (!records.ok()) return records.status();
  for (storage::JobRecord& record : *records) {
    if (Active(record)) {
      // The commit and the job record are separate writes: a job whose version is the
      // collection's current one did commit before the crash.
      auto info = storage->collections().Describe(record.collection());
      const bool same_collection = info.ok() && info->id == record.collection_id();
      const JobKind* kind = FindKind(record.kind());
      const uint32_t committed =
          same_collection && kind != nullptr ? kind->committed_version(*storage, record) : 0;
      if (committed > 0) {
        record.set_state(v1::JOB_STATE_SUCCEEDED);
        record.set_phase("done");
        record.set_progress(1.0);
        record.set_result_version(committed);
        record.set_end_time_ms(NowMs());
      } else {
        MarkInterrupted(record);
      }
      if (auto status = storage->jobs().Put(record); !status.ok()) return status;
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

absl::StatusOr<v1::Job> JobManager::Start(std::unique_ptr<TrainingJob> job) {
  auto info = storage_->collections().Describe(job->collection());
  if (!info.ok()) return info.status();
  if (absl::Status status = job->Validate(*info); !status.ok()) return status;
  std::lock_guard lock(mu_);
  if (stopping_) return absl::UnavailableError("the server is shutting down");
  for (const auto& [id, other] : jobs_) {
    if (other->record.collection_id() == info->id && Active(other->record)) {
      return absl::FailedPreconditionError(
          absl::StrFormat("job %s (%s) is already training collection '%s'; wait for it or "
                          "cancel it",
                          id, other->record.kind(), info->name));
    }
  }
  auto entry = std::make_shared<Entry>();
  storage::JobRecord& record = entry->record;
  record.set_id(absl::StrFormat("job-%06d", next_job_number_++));
  record.set_collection(info->name);
  record.set_collection_id(info->id);
  record.set_kind(std::string(job->kind()));
  record.set_state(v1::JOB_STATE_PENDING);
  record.set_phase("queued");
  record.set_create_time_ms(NowMs());
  record.set_request(job->SerializeRequest());
  if (auto status = storage_->jobs().Put(record); !status.ok()) return status;
  entry->job = std::move(job);
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
  return storage_->jobs().Put(entry->record);
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
  job.set_activated(record.activated());
  job.set_decision(record.decision());
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
      storage_->jobs().Put(entry->record).IgnoreError();
    }
    LogInfo("job %s: %s of collection '%s'", entry->record.id(), entry->record.kind(),
            entry->record.collection());
    // The context refers to entry->record, read by the job only for fields set before it runs
    // (id, collection), which nothing changes while it runs.
    const JobContext context(storage_, entry->record, entry->cancel,
                             [this, &entry = *entry](const std::string& phase, double progress) {
                               SetPhase(entry, phase, progress);
                             });
    Finish(*entry, entry->job->Run(context));
    entry->job.reset();
    ReleaseFreeHeap();  // training's peak memory goes back to the kernel
  }
}

void JobManager::SetPhase(Entry& entry, const std::string& phase, double progress) {
  std::lock_guard lock(mu_);
  const bool new_phase = entry.record.phase() != phase;
  entry.record.set_phase(phase);
  entry.record.set_progress(progress);
  const auto now = std::chrono::steady_clock::now();
  if (new_phase || now - entry.record_written >= kProgressWriteInterval) {
    entry.record_written = now;
    // Best effort: a failed write only leaves an older phase for a crash to report.
    storage_->jobs().Put(entry.record).IgnoreError();
  }
}

void JobManager::Finish(Entry& entry, const absl::StatusOr<JobResult>& result) {
  std::lock_guard lock(mu_);
  storage::JobRecord& record = entry.record;
  record.set_end_time_ms(NowMs());
  if (result.ok()) {
    record.set_state(v1::JOB_STATE_SUCCEEDED);
    record.set_phase("done");
    record.set_progress(1.0);
    record.set_result_version(result->version);
    record.set_activated(result->activated);
    record.set_decision(result->decision);
    const JobKind* kind = FindKind(record.kind());
    LogInfo("job %s: committed %s version %d of '%s'%s", record.id(),
            kind != nullptr ? kind->model : record.kind(), result->version, record.collection(),
            result->decision.empty() ? "" : absl::StrCat(" (", result->decision, ")"));
  } else if (result.status().code() == absl::StatusCode::kCancelled && stopping_) {
    MarkInterrupted(record);
    LogInfo("job %s: %s", record.id(), record.error());
  } else if (result.status().code() == absl::StatusCode::kCancelled) {
    record.set_state(v1::JOB_STATE_CANCELLED);
    record.set_phase("cancelled");
    record.set_error(std::string(result.status().message()));
    LogInfo("job %s: %s", record.id(), record.error());
  } else {
    record.set_state(v1::JOB_STATE_FAILED);
    record.set_error(std::string(result.status().ToString()));
    LogWarning("job %s failed: %s", record.id(), record.error());
  }
  storage_->jobs().Put(record).IgnoreError();
}

}  // namespace quantd
