// JobManager: queues training jobs (server/training_job.h; kinds listed in JobKinds()) and runs
// them one at a time on its own thread (so training never starves the RPC threads), keeps their
// state in memory for progress queries and in RocksDB for history; a job's phase is written as
// it changes. A job found PENDING or RUNNING at start-up was interrupted by a crash: it is
// recorded as FAILED in phase "interrupted", its error naming the phase and progress it had, as
// a job stopped by a clean shutdown is; since a job commits in one WriteBatch, the previous model
// version is intact. One collection runs at most one job at a time, of any kind.
#ifndef QUANTD_SERVER_JOBS_H_
#define QUANTD_SERVER_JOBS_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "quantd/storage/records.pb.h"
#include "quantd/v1/quantd.pb.h"
#include "server/storage.h"
#include "server/training_job.h"

namespace quantd {

// Every job kind the server runs.
const std::vector<const JobKind*>& JobKinds();

class JobManager {
 public:
  // Loads job history from `storage` (which outlives the manager) and fails interrupted jobs.
  static absl::StatusOr<std::unique_ptr<JobManager>> Create(Storage* storage);
  // Stop() and joins the worker.
  ~JobManager();

  // Cancels the running job (recorded as FAILED, interrupted) and accepts no new ones. Called
  // first on shutdown, so no job commits while RPCs drain.
  void Stop();

  // Checks `job` against its collection now (Validate: INVALID_ARGUMENT; NOT_FOUND for a
  // missing collection) and queues it; FAILED_PRECONDITION if the collection has an active job.
  absl::StatusOr<v1::Job> Start(std::unique_ptr<TrainingJob> job);
  absl::StatusOr<v1::Job> Get(const std::string& id) const;
  // Jobs of the collection with internal id `collection_id` (all jobs if `collection` is
  // empty), newest first.
  std::vector<v1::Job> List(const std::string& collection, uint32_t collection_id) const;
  absl::StatusOr<v1::Job> Cancel(const std::string& id);
  // Cancels the pending and running jobs of a dropped collection.
  void CancelCollection(uint32_t collection_id);

 private:
  struct Entry {
    storage::JobRecord record;  // guarded by JobManager::mu_
    // The job to run; null for the history loaded at start-up.
    std::unique_ptr<TrainingJob> job;
    std::atomic<bool> cancel{false};
    // When SetPhase last wrote the record; guarded by JobManager::mu_.
    std::chrono::steady_clock::time_point record_written;
  };
  explicit JobManager(Storage* storage) : storage_(storage) {}
  void WorkerLoop();
  // Sets the running job's phase and progress; a phase other than the recorded one is written.
  void SetPhase(Entry& entry, const std::string& phase, double progress);
  // Asks `entry` (active) to stop; a pending one is dequeued and recorded CANCELLED with
  // `reason` at once. Needs mu_.
  absl::Status CancelLocked(const std::shared_ptr<Entry>& entry, absl::string_view reason);
  void Finish(Entry& entry, const absl::StatusOr<JobResult>& result);
  v1::Job ToProto(const storage::JobRecord& record) const;

  Storage* storage_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::shared_ptr<Entry>> jobs_;
  std::deque<std::shared_ptr<Entry>> queue_;
  int64_t next_job_number_ = 1;
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace quantd

#endif  // QUANTD_SERVER_JOBS_H_
