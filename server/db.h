// Db: the RocksDB engine and nothing else: open/close, the column families as an enum-indexed
// handle table, status conversion, point reads, prefix scans, atomic writes, checkpoints and
// engine figures. It knows no collection, item or model; key spellings live in server/keys.h,
// and each store (server/*_store.h) adds its rows to the caller's WriteBatch, so one user write
// is one atomic Write composed from several stores.
//
// Thread safety: every method is safe to call concurrently (RocksDB's guarantees).
#ifndef QUANTD_SERVER_DB_H_
#define QUANTD_SERVER_DB_H_

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "rocksdb/db.h"
#include "rocksdb/write_batch.h"

namespace quantd {

// Column families by role (see server/keys.h for what each holds).
enum class ColumnFamily : int { kMeta, kVectors, kModels, kCodes, kSids, kIvf, kAttrs };
inline constexpr int kFamilyCount = 7;
absl::string_view FamilyName(ColumnFamily family);

// A RocksDB status as ours: corruption is DATA_LOSS, a bad argument INTERNAL (our bug), other
// I/O trouble UNAVAILABLE. `what` says what was being done.
absl::Status FromRocks(const rocksdb::Status& status, absl::string_view what);

// A RocksDB slice as an absl::string_view (Debian's Abseil does not alias std::string_view).
inline absl::string_view View(const rocksdb::Slice& slice) {
  return absl::string_view(slice.data(), slice.size());
}

class Db {
 public:
  struct Options {
    std::string path;  // database directory; created if missing
    bool sync = true;  // fsync the WAL before Write returns
  };
  // FAILED_PRECONDITION if another process holds the database.
  static absl::StatusOr<std::unique_ptr<Db>> Open(const Options& options);
  ~Db();  // flushes the WAL and closes the database
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  rocksdb::ColumnFamilyHandle* handle(ColumnFamily family) const {
    return handles_[static_cast<int>(family)];
  }

  // Applies `batch` atomically (fsynced when options.sync).
  absl::Status Write(rocksdb::WriteBatch& batch, absl::string_view what);
  // Applies `batch` atomically without waiting for the WAL to reach the disk: durable once a
  // later Write returns (the WAL is one sequence, and that fsync covers everything before it).
  // For bulk rows that a later Write makes visible (a tokenizer version's SIDs).
  absl::Status WriteUnsynced(rocksdb::WriteBatch& batch, absl::string_view what);

  // A consistent view of the whole database for several reads (items and their attributes from
  // the same moment); released when its last copy goes. Null in a read: the current state.
  using ReadView = std::shared_ptr<const rocksdb::Snapshot>;
  ReadView TakeReadView() const;

  // The value of `key`, nullopt if absent.
  absl::StatusOr<std::optional<std::string>> Get(ColumnFamily family, absl::string_view key,
                                                 absl::string_view what) const;

  // The values of `keys` read with one MultiGet (one consistent snapshot): values[i] and
  // statuses[i] belong to keys[i] (status NotFound for an absent key).
  struct PointReads {
    std::vector<rocksdb::PinnableSlice> values;
    std::vector<rocksdb::Status> statuses;
  };
  PointReads MultiGet(ColumnFamily family, const std::vector<std::string>& keys,
                      const rocksdb::Snapshot* view = nullptr) const;

  // Visits, in key order and from one snapshot, every entry of `family` whose key starts with
  // `prefix`. A visitor's non-OK status ends the scan and is returned. With `limit`, at most
  // that many entries are visited and `*truncated` tells whether more matched.
  using Visitor = absl::FunctionRef<absl::Status(absl::string_view key, absl::string_view value)>;
  absl::Status ScanPrefix(ColumnFamily family, absl::string_view prefix, Visitor visit) const;
  absl::Status ScanPrefix(ColumnFamily family, absl::string_view prefix, size_t limit,
                          bool* truncated, Visitor visit) const;
  // As ScanPrefix, from the first key >= `start` (keys under `prefix` only).
  absl::Status ScanPrefixFrom(ColumnFamily family, absl::string_view prefix,
                              absl::string_view start, size_t limit, bool* truncated, Visitor visit,
                              const rocksdb::Snapshot* view = nullptr) const;

  // Adds to `batch` the removal of [begin, end) in every family except meta.
  void AddDeleteRows(absl::string_view begin, absl::string_view end,
                     rocksdb::WriteBatch* batch) const;
  // Hints RocksDB to compact [begin, end) of every family except meta (after a range delete).
  void SuggestCompaction(absl::string_view begin, absl::string_view end);

  // Writes a consistent copy of the whole database to `dir` (which must not exist): hard links
  // on the same filesystem, copies otherwise. Returns the latest sequence number in the copy.
  absl::StatusOr<uint64_t> Checkpoint(const std::string& dir);

  // Flushes `family`'s memtable and compacts all of it, waiting for the end (benchmarks and
  // maintenance: sizes after it are what the data takes at rest).
  absl::Status CompactFamily(ColumnFamily family) const;
  // Bytes of `family`'s live SST files.
  uint64_t SstBytes(ColumnFamily family) const;

  struct Figures {
    double live_sst_bytes = 0;
    double memtable_bytes = 0;
    double pending_compaction_bytes = 0;
    double running_compactions = 0;
  };
  // RocksDB's figures summed over the column families.
  Figures GetFigures() const;

 private:
  Db() = default;

  Options options_;
  std::unique_ptr<rocksdb::DB> db_;
  std::array<rocksdb::ColumnFamilyHandle*, kFamilyCount> handles_{};
  std::vector<rocksdb::ColumnFamilyHandle*> all_handles_;  // ours plus any a newer server added
};

}  // namespace quantd

#endif  // QUANTD_SERVER_DB_H_
