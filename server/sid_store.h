// SidStore: tokenizer versions and semantic IDs on disk: the versions record (meta
// "tokenizer_versions/<cid>": active, kept, pinned, pending), the tokenizer blobs (models
// <cid><version>), every item's SID under every kept version (codes <cid><version><item id>)
// and the SID index (sids <cid><version><codes...><suffix> -> item id), and each version's drift
// counters. Writers add their rows to the caller's WriteBatch under the collection's write lock
// (pending versions' rows excepted: only their job writes them).
//
// Invariant (kept by every writer): under each kept version, an item has a SID iff it is
// stored; its codes row and its sids row agree; within one code tuple suffixes are distinct.
// Rows of versions neither kept nor pending do not exist.
#ifndef QUANTD_SERVER_SID_STORE_H_
#define QUANTD_SERVER_SID_STORE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "quantd/storage/records.pb.h"
#include "rocksdb/write_batch.h"
#include "server/db.h"

namespace quantd {

class Tokenizer;

// One item's SID as stored.
struct StoredSid {
  uint32_t version = 0;
  std::vector<int32_t> codes;  // L
  uint32_t suffix = 0;
};

// SIDs read for one tokenizer version.
struct SidList {
  int64_t levels = 0;
  uint32_t version = 0;
  std::vector<uint64_t> ids;
  std::vector<int32_t> codes;      // ids.size() x levels
  std::vector<uint32_t> suffixes;  // ids.size()
  uint32_t largest_suffix = 0;     // Export: the largest of `suffixes`
  std::vector<uint64_t> missing;   // Get: requested ids without a SID
  bool truncated = false;          // Lookup: more matched than the limit
};

class SidStore {
 public:
  explicit SidStore(Db* db) : db_(db) {}

  // The collection's versions record; an empty one (next_version 1) if none is stored.
  // DATA_LOSS if it is corrupt.
  absl::StatusOr<storage::TokenizerVersionsRecord> ReadVersions(uint32_t cid) const;
  void AddVersions(uint32_t cid, const storage::TokenizerVersionsRecord& record,
                   rocksdb::WriteBatch* batch) const;
  // Tokenizer `version`'s blob parsed; DATA_LOSS (naming `collection`) if missing or unreadable.
  absl::StatusOr<std::shared_ptr<const Tokenizer>> LoadVersion(uint32_t cid, uint32_t version,
                                                               absl::string_view collection) const;
  // A version's blob.
  void AddModel(uint32_t cid, const Tokenizer& tokenizer, rocksdb::WriteBatch* batch) const;
  // The removal of every row of `version` (blob, SIDs, drift counters).
  void AddDropVersion(uint32_t cid, uint32_t version, rocksdb::WriteBatch* batch) const;

  // The stored SIDs of `ids` under `version` (levels codes each), nullopt for ids without one.
  // DATA_LOSS for a malformed row.
  absl::StatusOr<std::vector<std::optional<StoredSid>>> ReadStored(
      uint32_t cid, uint32_t version, int64_t levels, absl::Span<const uint64_t> ids) const;
  // The SID changes under `tokenizer` of giving items ids (n, distinct) the codes (n x L),
  // whose stored SIDs under it are `stored` (ReadStored): an item whose codes did not change
  // keeps its SID (suffix included); else it takes suffix preferred[i] (when preferred is not
  // empty, preferred[i] >= 0 and that suffix is free in its new tuple) or the lowest free one.
  absl::Status AddUpserts(uint32_t cid, const Tokenizer& tokenizer, absl::Span<const uint64_t> ids,
                          absl::Span<const int32_t> codes,
                          absl::Span<const std::optional<StoredSid>> stored,
                          absl::Span<const int64_t> preferred, rocksdb::WriteBatch* batch) const;
  // The removal of the SIDs `stored` (ReadStored) of `ids`; ids without one are skipped.
  void AddDeletes(uint32_t cid, absl::Span<const uint64_t> ids,
                  absl::Span<const std::optional<StoredSid>> stored,
                  rocksdb::WriteBatch* batch) const;
  // The SIDs of items ids (n) under `version`: codes (n x levels) and suffixes (n), for items
  // that have none under it yet (a version being written).
  void AddSids(uint32_t cid, uint32_t version, int64_t levels, absl::Span<const uint64_t> ids,
               absl::Span<const int32_t> codes, absl::Span<const uint32_t> suffixes,
               rocksdb::WriteBatch* batch) const;

  // A version's drift counters; zero (for `version`) when none are stored.
  absl::StatusOr<storage::SidDriftRecord> ReadDrift(uint32_t cid, uint32_t version) const;
  // Stored under drift.version().
  void AddDrift(uint32_t cid, const storage::SidDriftRecord& drift,
                rocksdb::WriteBatch* batch) const;
  // The collection's meta rows (its rows in the other families go with Db::AddDeleteRows).
  void AddDropCollection(uint32_t cid, rocksdb::WriteBatch* batch) const;

  // Readers of one version's SIDs (`tokenizer`: the caller's snapshot of a kept version). A
  // version dropped during the call reads as ABORTED when it shows (a row of another version,
  // checked by the caller for scans).
  //
  // SIDs of `ids` (distinct), found ones in request order.
  absl::StatusOr<SidList> Get(uint32_t cid, absl::string_view collection,
                              const Tokenizer& tokenizer, absl::Span<const uint64_t> ids) const;
  // Items whose SID starts with `prefix` (codes, validated by the caller), in SID order, at most
  // `limit`.
  absl::StatusOr<SidList> Lookup(uint32_t cid, const Tokenizer& tokenizer,
                                 absl::Span<const int64_t> prefix, int64_t limit) const;
  // Every SID, in item-id order.
  absl::StatusOr<SidList> Export(uint32_t cid, absl::string_view collection,
                                 const Tokenizer& tokenizer) const;

 private:
  Db* db_;
};

// Rewrites a schema-2 collection's tokenizer rows into schema 3 (server/keys.h): codes keyed
// by version, the versions record, drift per version. Idempotent: a migration cut short by a
// crash is finished by the next start. Called by the registry's schema upgrade.
absl::Status MigrateTokenizerRowsToSchema3(Db* db, uint32_t cid);

}  // namespace quantd

#endif  // QUANTD_SERVER_SID_STORE_H_
