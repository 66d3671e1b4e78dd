// JobStore: job records (meta "job/<id>" -> quantd.storage.JobRecord), the history behind
// GetJob/ListJobs and what tells an interrupted job at start-up.
#ifndef QUANTD_SERVER_JOB_STORE_H_
#define QUANTD_SERVER_JOB_STORE_H_

#include <vector>

#include "absl/status/statusor.h"
#include "quantd/storage/records.pb.h"
#include "server/db.h"

namespace quantd {

class JobStore {
 public:
  explicit JobStore(Db* db) : db_(db) {}

  // Writes (or overwrites) the record, durably.
  absl::Status Put(const storage::JobRecord& job);
  // Every stored record, in id order. DATA_LOSS for a corrupt one.
  absl::StatusOr<std::vector<storage::JobRecord>> LoadAll() const;

 private:
  Db* db_;
};

}  // namespace quantd

#endif  // QUANTD_SERVER_JOB_STORE_H_
