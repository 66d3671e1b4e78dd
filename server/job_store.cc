#include "server/job_store.h"

#include "absl/strings/str_cat.h"
#include "server/keys.h"

namespace quantd {

absl::Status JobStore::Put(const storage::JobRecord& job) {
  rocksdb::WriteBatch batch;
  batch.Put(db_->handle(ColumnFamily::kMeta), keys::JobKey(job.id()), job.SerializeAsString());
  return db_->Write(batch, "write job");
}

absl::StatusOr<std::vector<storage::JobRecord>> JobStore::LoadAll() const {
  std::vector<storage::JobRecord> jobs;
  absl::Status status = db_->ScanPrefix(
      ColumnFamily::kMeta, keys::kJobPrefix,
      [&](absl::string_view key, absl::string_view value) -> absl::Status {
        storage::JobRecord job;
        if (!job.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
          return absl::DataLossError(absl::StrCat("job record ", key, " is corrupt"));
        }
        jobs.push_back(std::move(job));
        return absl::OkStatus();
      });
  if (!status.ok()) return status;
  return jobs;
}

}  // namespace quantd
