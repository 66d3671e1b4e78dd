// SidStore: tokenizer versions and semantic IDs on disk: the current version (meta
// "tokenizer/<cid>"), the tokenizer blobs (models <cid><version>), every item's SID (codes
// <cid><item id>) and the SID index (sids <cid><version><codes...><suffix> -> item id). Writers
// add their rows to the caller's WriteBatch under the collection's write lock.
//
// Invariant (kept by every writer): an item has a SID iff it is stored and the collection has a
// tokenizer; its codes row and its sids row agree and carry the current version; within one
// code tuple suffixes are distinct.
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

  // The collection's current tokenizer: null if none was trained; DATA_LOSS (naming
  // `collection`) if its stored blob is missing or unreadable.
  absl::StatusOr<std::shared_ptr<const Tokenizer>> LoadCurrent(uint32_t cid,
                                                               absl::string_view collection) const;
  // The current version, 0 if none.
  absl::StatusOr<uint32_t> CurrentVersion(uint32_t cid) const;

  // The stored SIDs of `ids` (any version), nullopt for ids without one. DATA_LOSS for a
  // malformed row.
  absl::StatusOr<std::vector<std::optional<StoredSid>>> ReadStored(
      uint32_t cid, int64_t levels, absl::Span<const uint64_t> ids) const;
  // The SID changes of giving items ids (n, distinct) the codes (n x L) under `tokenizer`
  // (current), whose stored SIDs are `stored` (ReadStored): an item whose codes did not change
  // keeps its SID (suffix included), else it takes the lowest free suffix of its new tuple.
  absl::Status AddUpserts(uint32_t cid, const Tokenizer& tokenizer, absl::Span<const uint64_t> ids,
                          absl::Span<const int32_t> codes,
                          absl::Span<const std::optional<StoredSid>> stored,
                          rocksdb::WriteBatch* batch) const;
  // The removal of the SIDs `stored` (ReadStored) of `ids`; ids without one are skipped.
  void AddDeletes(uint32_t cid, absl::Span<const uint64_t> ids,
                  absl::Span<const std::optional<StoredSid>> stored,
                  rocksdb::WriteBatch* batch) const;
  // A new version replacing `old_version` (0: none): its blob, the version key, zeroed drift
  // counters, and the SIDs of every item, ids (n, the collection's every item) with codes
  // (n x L) and suffixes (n); all SIDs of the old version go.
  void AddCommit(uint32_t cid, uint32_t old_version, const Tokenizer& tokenizer,
                 absl::Span<const uint64_t> ids, absl::Span<const int32_t> codes,
                 absl::Span<const uint32_t> suffixes, rocksdb::WriteBatch* batch) const;
  // The drift counters of the current version (meta "sid_drift/<cid>"); zero for `version`
  // when none are stored (databases of earlier releases) or they belong to another version.
  absl::StatusOr<storage::SidDriftRecord> ReadDrift(uint32_t cid, uint32_t version) const;
  void AddDrift(uint32_t cid, const storage::SidDriftRecord& drift,
                rocksdb::WriteBatch* batch) const;
  // The collection's meta row (its rows in the other families go with Db::AddDeleteRows).
  void AddDropCollection(uint32_t cid, rocksdb::WriteBatch* batch) const;

  // Readers under `tokenizer` (the caller's snapshot of the current one): a SID of another
  // version means a retraining committed during the call: ABORTED (retry), not a mix.
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

}  // namespace quantd

#endif  // QUANTD_SERVER_SID_STORE_H_
