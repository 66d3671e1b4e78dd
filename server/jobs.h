// JobManager: runs training jobs (tokenizer: kind "train_tokenizer", IVF-PQ index: kind
// "train_index") one at a time on its own thread (so training never
// starves the RPC threads), keeps their state in memory for progress queries and in RocksDB for
// history. A job found PENDING or RUNNING at start-up was interrupted by a crash or a stop: it
// is recorded as FAILED, and since a job commits in one WriteBatch, the previous tokenizer or
// index version is intact. One collection runs at most one job at a time, of either kind.
#ifndef QUANTD_SERVER_JOBS_H_
#define QUANTD_SERVER_JOBS_H_

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "core/residual_quantizer.h"
#include "quantd/storage/records.pb.h"
#include "quantd/v1/quantd.pb.h"
#include "server/storage.h"

namespace quantd {

// Checks a TrainTokenizer request against a collection of `items` items and turns it into
// residual-quantizer options (defaults filled in). INVALID_ARGUMENT naming the field and value.
absl::StatusOr<RqOptions> TrainOptionsFromRequest(const v1::TrainTokenizerRequest& request,
                                                  int64_t items);

class JobManager {
 public:
  // Loads job history from `storage` (which outlives the manager) and fails interrupted jobs.
  static absl::StatusOr<std::unique_ptr<JobManager>> Create(Storage* storage);
  // Stop() and joins the worker.
  ~JobManager();

  // Cancels the running job (recorded as FAILED, interrupted) and accepts no new ones. Called
  // first on shutdown, so no job commits while RPCs drain.
  void Stop();

  absl::StatusOr<v1::Job> StartTrainTokenizer(const v1::TrainTokenizerRequest& request);
  // Checks the request against the collection now (INVALID_ARGUMENT, FAILED_PRECONDITION for
  // an empty collection) and queues the job.
  absl::StatusOr<v1::Job> StartTrainIndex(const v1::TrainIndexRequest& request);
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
    // The request of the job's kind (the other stays empty).
    v1::TrainTokenizerRequest request;
    v1::TrainIndexRequest index_request;
    std::atomic<bool> cancel{false};
  };
  explicit JobManager(Storage* storage) : storage_(storage) {}
  void WorkerLoop();
  // Records and queues a new job of `kind` on collection `info`; `entry` carries its request.
  absl::StatusOr<v1::Job> Enqueue(std::shared_ptr<Entry> entry, const CollectionInfo& info,
                                  absl::string_view kind, std::string serialized_request);
  // Run one job of each kind; return the version committed.
  // Every item of the job's collection; NOT_FOUND if the collection was dropped (or dropped and
  // re-created) since the job was queued.
  absl::StatusOr<ItemSet> LoadJobItems(const Entry& entry, const std::string& collection) const;
  absl::StatusOr<uint32_t> RunTrainTokenizer(Entry& entry);
  absl::StatusOr<uint32_t> RunTrainIndex(Entry& entry);
  void SetPhase(Entry& entry, const std::string& phase, double progress);
  // Asks `entry` (active) to stop; a pending one is dequeued and recorded CANCELLED with
  // `reason` at once. Needs mu_.
  absl::Status CancelLocked(const std::shared_ptr<Entry>& entry, absl::string_view reason);
  void Finish(Entry& entry, const absl::StatusOr<uint32_t>& result);
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
