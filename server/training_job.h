// One training job kind behind one interface: the JobManager (server/jobs.h) queues, cancels and
// records jobs; a TrainingJob owns its request, the rules that check it, and the training that
// commits a new model version. A kind is one file (tokenizer_job.cc, index_job.cc) plus its line
// in JobKinds() (jobs.cc).
#ifndef QUANTD_SERVER_TRAINING_JOB_H_
#define QUANTD_SERVER_TRAINING_JOB_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "quantd/storage/records.pb.h"
#include "server/storage.h"

namespace quantd {

// What a running job sees of its manager. Set up by the JobManager for one run.
class JobContext {
 public:
  JobContext(Storage* storage, const storage::JobRecord& record, const std::atomic<bool>& cancel,
             std::function<void(const std::string&, double)> set_phase)
      : storage_(storage), record_(record), cancel_(cancel), set_phase_(std::move(set_phase)) {}

  Storage* storage() const { return storage_; }
  const std::string& job_id() const { return record_.id(); }
  const std::string& collection() const { return record_.collection(); }
  uint32_t collection_id() const { return record_.collection_id(); }

  // Reports the job's phase ("training level 2/3") and progress (0..1); a new phase is written
  // to the job's record, so a crash leaves the phase it was in.
  void SetPhase(const std::string& phase, double progress) const { set_phase_(phase, progress); }
  // True once the job was asked to stop (CancelJob, a dropped collection, a shutdown): Run then
  // returns CANCELLED at its next check.
  bool cancelled() const { return cancel_.load(); }

  // Every item of the job's collection; NOT_FOUND if the collection was dropped (or dropped and
  // re-created) since the job was queued.
  absl::StatusOr<ItemSet> LoadItems() const;

 private:
  Storage* storage_;
  const storage::JobRecord& record_;
  const std::atomic<bool>& cancel_;
  std::function<void(const std::string&, double)> set_phase_;
};

// What a succeeded job committed.
struct JobResult {
  uint32_t version = 0;
  // Tokenizer jobs: whether the version became the active one, and why (v1::Job.decision).
  bool activated = false;
  std::string decision;
};

class TrainingJob {
 public:
  virtual ~TrainingJob() = default;

  // The kind recorded in the job ("train_tokenizer"), one of JobKinds().
  virtual absl::string_view kind() const = 0;
  virtual const std::string& collection() const = 0;
  virtual std::string SerializeRequest() const = 0;
  // Checks the request against a collection of `info` (INVALID_ARGUMENT naming the field and
  // value). The JobManager calls it before queuing; Run re-checks what can change meanwhile
  // (the item count) through the same rules.
  virtual absl::Status Validate(const CollectionInfo& info) const = 0;
  // Trains and commits; returns what it committed, CANCELLED when context.cancelled().
  virtual absl::StatusOr<JobResult> Run(const JobContext& context) = 0;
};

// The part of a job that comes from its request message (a quantd.v1 Train*Request, which
// names the collection).
template <typename Request>
class JobWithRequest : public TrainingJob {
 public:
  explicit JobWithRequest(Request request) : request_(std::move(request)) {}
  const std::string& collection() const override { return request_.collection(); }
  std::string SerializeRequest() const override { return request_.SerializeAsString(); }

 protected:
  Request request_;
};

// What the JobManager knows of a kind without a request: its name, the model a run replaces,
// and the version a job committed (0: none), for a job found active after a crash (the commit
// and the job record are separate writes).
struct JobKind {
  absl::string_view kind;   // "train_tokenizer"
  absl::string_view model;  // "tokenizer"
  std::function<uint32_t(const Storage&, const storage::JobRecord&)> committed_version;
};

}  // namespace quantd

#endif  // QUANTD_SERVER_TRAINING_JOB_H_
