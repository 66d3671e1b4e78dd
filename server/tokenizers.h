// Tokenizers: each collection's kept tokenizer versions (loaded into its `tokenizers` slot as a
// TokenizerSet), their management (activate, drop, pin, retention), the commit of a new
// version, the SID side of item writes, and the reads of SIDs, free of gRPC.
//
// A new version is made in three steps so that writers wait only for the last one:
// BeginVersion (under the write lock: reserve a version number, record it as pending, start
// logging the items written from now on), WriteVersionRows (no lock: the SIDs of the job's
// snapshot, in bounded batches, under the pending version, which no reader sees), and
// CommitVersion (under the write lock: re-assign only the items written since the snapshot,
// make the version kept, maybe active, drop what retention says, one WriteBatch).
#ifndef QUANTD_SERVER_TOKENIZERS_H_
#define QUANTD_SERVER_TOKENIZERS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/residual_quantizer.h"
#include "quantd/storage/records.pb.h"
#include "server/collections.h"
#include "server/db.h"
#include "server/item_store.h"
#include "server/sid_ledger.h"
#include "server/sid_store.h"
#include "server/tokenizer.h"

namespace quantd {

// The kept tokenizer versions of a collection, as loaded. Immutable: replaced whole, under the
// collection's write lock, when a version commits or is activated, dropped or pinned.
struct TokenizerSet {
  storage::TokenizerVersionsRecord record;  // active, kept, pinned (pending: not used here)
  std::map<uint32_t, std::shared_ptr<const Tokenizer>> versions;  // every kept version

  // The active version; null when none is active.
  std::shared_ptr<const Tokenizer> active() const;
  bool pinned(uint32_t version) const;
};

// Item ids written since a tokenizer job took its snapshot (Collection::change_logs).
struct ItemChangeLog {
  absl::flat_hash_set<uint64_t> ids;
};

// The ledger changes of one item write, one per kept version (server/sid_ledger.h): applied
// at once, undone unless Keep() is called once the write is committed.
class SidChanges {
 public:
  LedgerChange* For(const Tokenizer& tokenizer);
  void Keep() {
    for (auto& change : changes_) change->Keep();
  }

 private:
  std::vector<std::unique_ptr<LedgerChange>> changes_;
};

class Tokenizers {
 public:
  // Every pointer outlives the service. `default_keep`: versions kept by collections that set
  // none (--keep_tokenizer_versions), 1..kMaxKeptTokenizerVersions.
  Tokenizers(Db* db, CollectionRegistry* registry, const ItemStore* items, const SidStore* sids,
             uint32_t default_keep)
      : db_(db), registry_(registry), items_(items), sids_(sids), default_keep_(default_keep) {}

  // Loads every collection's kept versions and their ledgers (start-up), and removes the rows
  // of versions left pending by jobs a stop interrupted. An unreadable version fails only its
  // collection's calls (DATA_LOSS); a RocksDB read error fails the load.
  absl::Status LoadAll();

  // Versions the collection keeps: its own setting or the default.
  uint32_t KeepOf(const CollectionInfo& info) const {
    return info.keep_tokenizer_versions > 0 ? info.keep_tokenizer_versions : default_keep_;
  }

  // The kept versions; null when the collection has none. DATA_LOSS if one is unreadable.
  absl::StatusOr<std::shared_ptr<const TokenizerSet>> GetVersions(
      absl::string_view collection) const;
  // Kept version `version` (0: the active one). FAILED_PRECONDITION when the collection has no
  // tokenizer (or, for 0, none is active); NOT_FOUND for a version that is not kept.
  absl::StatusOr<std::shared_ptr<const Tokenizer>> GetTokenizer(absl::string_view collection,
                                                                uint32_t version = 0) const;

  // Version management, under the collection's write guard; each returns the versions after.
  // NOT_FOUND for a version not kept; FAILED_PRECONDITION for dropping the active or a pinned
  // version; INVALID_ARGUMENT for a keep outside 0..kMaxKeptTokenizerVersions.
  absl::StatusOr<std::shared_ptr<const TokenizerSet>> Activate(absl::string_view collection,
                                                               uint32_t version);
  absl::StatusOr<std::shared_ptr<const TokenizerSet>> Drop(absl::string_view collection,
                                                           uint32_t version);
  absl::StatusOr<std::shared_ptr<const TokenizerSet>> Pin(absl::string_view collection,
                                                          uint32_t version, bool pinned);
  absl::StatusOr<std::shared_ptr<const TokenizerSet>> SetRetention(absl::string_view collection,
                                                                   uint32_t keep);

  // A version being made by a job; abandoned (its rows removed, its number never reused) when
  // destroyed uncommitted.
  class PendingVersion {
   public:
    ~PendingVersion();
    PendingVersion(const PendingVersion&) = delete;
    PendingVersion& operator=(const PendingVersion&) = delete;
    uint32_t version() const { return version_; }
    // The version active at BeginVersion (0: none): suffixes carry over from it.
    uint32_t parent_version() const { return parent_version_; }

   private:
    friend class Tokenizers;
    PendingVersion() = default;
    Tokenizers* owner_ = nullptr;
    std::string collection_;
    uint32_t cid_ = 0;
    uint32_t version_ = 0;
    uint32_t parent_version_ = 0;
    std::shared_ptr<ItemChangeLog> changes_;
    bool done_ = false;
  };
  // Reserves the next version of collection `name` (id `cid`, 0: any) and starts logging item
  // writes. Call before loading the snapshot the version is made from. FAILED_PRECONDITION
  // when no room can be made for it: every kept version is pinned or active (the current
  // active one stays so unless the new version `activates` for sure).
  absl::StatusOr<std::unique_ptr<PendingVersion>> BeginVersion(absl::string_view name, uint32_t cid,
                                                               bool activates);
  // Writes the SIDs of the snapshot items ids (n) under the pending version: codes (n x L),
  // suffixes (n). Bounded batches; no lock. `progress(done, n)` after each batch.
  // Writers are not held back; rows written after a drop of the collection are removed.
  absl::Status WriteVersionRows(const PendingVersion& pending, int64_t levels,
                                absl::Span<const uint64_t> ids, absl::Span<const int32_t> codes,
                                absl::Span<const uint32_t> suffixes,
                                const std::function<void(int64_t, int64_t)>& progress) const;
  // What a commit did.
  struct Committed {
    uint32_t version = 0;
    bool activated = false;
    std::string decision;
  };
  // How the commit decides activation.
  struct Activation {
    bool activate = true;
    // Activate only if the active version is still the parent.
    bool only_if_parent_active = false;
    std::string decision;  // why; completed by the commit when it overrides
  };
  // Commits the pending version: `record` (metadata; version and decision are set here) and
  // `model`, made from `snapshot` whose codes (n x L) and suffixes WriteVersionRows wrote.
  // Items written since the snapshot get SIDs anew (removed ones lose theirs; others take codes
  // under the version's rule after the snapshot items, keeping their suffix under the parent
  // where their tuple equals it): in catch-up rounds without the lock while many are left, the
  // rest under the write guard with the version's record, one WriteBatch.
  absl::StatusOr<Committed> CommitVersion(PendingVersion& pending, storage::TokenizerRecord record,
                                          TokenizerModel model, const ItemSet& snapshot,
                                          absl::Span<const int32_t> codes, Activation activation);

  // The SID side of item writes, under the collection's write guard (cid), for every kept
  // version of `set`, ledgers held through `changes`, rows added to `batch`.
  //
  // Items ids (n, distinct) get codes for their new vectors (n x d, each differing from the
  // stored one) under each version's assignment rule for a collection of `items_after` items:
  // their previous tuples free their capacity first, then each row in order takes the tuple
  // the rule gives. The drift counters count them. An item whose codes come out unchanged
  // keeps its suffix.
  absl::Status AddItemUpserts(uint32_t cid, const TokenizerSet& set, absl::Span<const uint64_t> ids,
                              absl::Span<const float> vectors, int64_t items_after,
                              SidChanges* changes, rocksdb::WriteBatch* batch) const;
  // The removal of the SIDs of `ids` (distinct; ids without one are skipped), freeing capacity.
  absl::Status AddItemDeletes(uint32_t cid, const TokenizerSet& set, absl::Span<const uint64_t> ids,
                              SidChanges* changes, rocksdb::WriteBatch* batch) const;
  // Appends the written ids to the change logs of running tokenizer jobs (under the guard,
  // after the write).
  static void LogItemWrites(Collection& collection, absl::Span<const uint64_t> ids);

  // Readers of SIDs under `tokenizer` (the caller's snapshot of a kept version). If the version
  // is dropped during the call they return ABORTED rather than partial answers.
  //
  // SIDs of stored items (found ones in request order, each once).
  absl::StatusOr<SidList> GetSids(absl::string_view collection, const Tokenizer& tokenizer,
                                  absl::Span<const uint64_t> ids) const;
  // Items whose SID starts with `prefix` (1..L codes, or L codes and a suffix), in SID order.
  absl::StatusOr<SidList> LookupSids(absl::string_view collection, const Tokenizer& tokenizer,
                                     absl::Span<const int64_t> prefix, int64_t limit) const;
  // Every SID of the collection, in item-id order.
  absl::StatusOr<SidList> ExportSids(absl::string_view collection,
                                     const Tokenizer& tokenizer) const;

 private:
  // Loads the kept versions of a collection (start-up).
  absl::StatusOr<std::shared_ptr<const TokenizerSet>> LoadSet(const CollectionInfo& info) const;
  // Fills the ledger of `tokenizer` (collection cid's kept version) from its stored SIDs and
  // drift counters.
  absl::Status LoadLedger(const CollectionInfo& info, const Tokenizer& tokenizer) const;
  // The collection's write guard and versions record, NOT_FOUND unless `version` is kept.
  struct LockedVersions {
    WriteGuard guard;
    storage::TokenizerVersionsRecord record;
  };
  absl::StatusOr<LockedVersions> LockKeptVersion(absl::string_view name, uint32_t version);
  // Removes a pending version's rows and record entry (a job that did not commit).
  void Abandon(PendingVersion& pending);
  // Writes rows of the pending version without the write lock; if the collection turns out
  // dropped meanwhile, removes them again (NOT_FOUND).
  absl::Status WritePendingRows(const PendingVersion& pending, rocksdb::WriteBatch* batch) const;
  // The ids (sorted) logged for `pending` since the last call; the log starts empty again.
  static std::vector<uint64_t> TakeWritten(const WriteGuard& guard, const PendingVersion& pending);
  // SIDs under the pending version for items `written` (sorted) since the snapshot: removed
  // items lose theirs; an item whose vector is the snapshot's keeps its; the others take codes
  // under `tokenizer`'s rule for `items_now` items, in id order, against `occupancy` (updated),
  // keeping their parent suffix where their tuple is the parent's. Rows go to `batch`.
  absl::Status ReassignWritten(const PendingVersion& pending, const Tokenizer& tokenizer,
                               const ItemSet& snapshot, const CollectionInfo& info,
                               int64_t items_now, absl::Span<const uint64_t> written,
                               SidOccupancy* occupancy, rocksdb::WriteBatch* batch) const;
  // ABORTED unless `version` is still kept by the collection.
  absl::Status CheckStillKept(absl::string_view collection, uint32_t version) const;
  // The versions a collection keeping `keep` drops to hold `record` (oldest first, never the
  // active or a pinned one), and whether that is enough.
  // `keep_also`: a version never dropped (the one being committed).
  static std::vector<uint32_t> VersionsToDrop(const storage::TokenizerVersionsRecord& record,
                                              uint32_t keep, uint32_t keep_also, bool* enough);
  // Writes `record` (dropping `dropped` versions' rows) and installs the set built from the
  // current one plus `added` minus the dropped versions.
  absl::StatusOr<std::shared_ptr<const TokenizerSet>> Install(
      const WriteGuard& guard, storage::TokenizerVersionsRecord record,
      const std::vector<uint32_t>& dropped, std::shared_ptr<const Tokenizer> added,
      rocksdb::WriteBatch* batch);

  Db* db_;
  CollectionRegistry* registry_;
  const ItemStore* items_;
  const SidStore* sids_;
  uint32_t default_keep_;
};

}  // namespace quantd

#endif  // QUANTD_SERVER_TOKENIZERS_H_
