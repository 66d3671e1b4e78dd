// Backups: consistent copies of the whole database (RocksDB checkpoints) written beside their
// final place and renamed into it, while other calls go on.
#ifndef QUANTD_SERVER_BACKUP_H_
#define QUANTD_SERVER_BACKUP_H_

#include <cstdint>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/db.h"

namespace quantd {

// Checks a backup name: one path component of 1-128 characters of [A-Za-z0-9._-], not "." or
// "..", and not containing ".partial-" (the marker of backups in progress).
absl::Status ValidateBackupName(absl::string_view name);

struct BackupResult {
  std::string path;       // <backup_dir>/<name>
  uint64_t bytes = 0;     // total size of its files
  uint64_t files = 0;     // number of its files
  double seconds = 0;     // duration
  uint64_t sequence = 0;  // latest sequence number in the copy
};

class Backups {
 public:
  explicit Backups(Db* db) : db_(db) {}  // `db` outlives the service

  // Writes a consistent copy of the whole database (one instant across all column families;
  // hard links on the same filesystem, copies otherwise) to <backup_dir>/<name>, creating
  // backup_dir if missing. The copy is made in a sibling <name>.partial-<random> and renamed
  // into place once complete and synced, so a crash never leaves a finished-looking backup;
  // stale partials of `name` are removed first. INVALID_ARGUMENT for a bad name, ALREADY_EXISTS
  // if the backup exists, ABORTED while another backup runs (one at a time: a second one is
  // refused rather than queued, so a client never waits unboundedly behind a long copy),
  // RESOURCE_EXHAUSTED when the disk is full, INTERNAL for other failures; a failure leaves
  // nothing under backup_dir.
  absl::StatusOr<BackupResult> Backup(const std::string& backup_dir, absl::string_view name);

 private:
  Db* db_;
  std::mutex mu_;  // held while a backup runs
};

}  // namespace quantd

#endif  // QUANTD_SERVER_BACKUP_H_
