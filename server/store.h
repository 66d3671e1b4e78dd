// Store: collections and their items in one RocksDB database.
//
// Business rules of collections and items live here, free of gRPC, so tests drive them directly.
// Every mutation is one RocksDB WriteBatch (all of it or none of it); with `sync` on the batch is
// fsynced to the WAL before the call returns, so an acknowledged write survives a crash.
//
// Layout (column families by role; keys big-endian so a prefix scan walks one collection):
//   meta     "collection/<name>"      -> quantd.storage.CollectionRecord
//            "count/<cid:be32>"        -> item count, uint64 little-endian
//            "next_collection_id"      -> uint32 little-endian; collection ids are never reused
//            "tokenizer/<cid:be32>"    -> current tokenizer version, uint32 little-endian
//            "job/<id>"                -> quantd.storage.JobRecord
//   vectors  <cid:be32><item id:be64>  -> dimension float32 values, little-endian
//   models   <cid:be32><version:be32>  -> tokenizer blob (server/tokenizer.h)
//   codes    <cid:be32><item id:be64>  -> uint32 LE: version, L codes, suffix (the item's SID)
//   sids     <cid:be32><version:be32><code:be32 x L><suffix:be32> -> item id, uint64 LE
//            (the SID index: prefix scans answer Lookup and find the lowest free suffix)
//   meta     "index/<cid:be32>"        -> current IVF-PQ index version, uint32 little-endian
//   models   <cid:be32>"ivf"<version:be32> -> IVF-PQ index blob (server/index.h)
//   ivf      <cid:be32><item id:be64>  -> the item's index entry: version, list, PQ code
//            (server/index.h); the in-memory inverted lists are rebuilt from it at start-up
//
// Once a collection has a tokenizer, every write keeps vectors, codes and sids consistent in one
// WriteBatch: an upserted item gets its SID (keeping its suffix if its codes did not change, else
// the lowest free suffix of its new tuple), a deleted item loses it. Likewise, once it has an
// index, an upserted item's (list, code) is written with its vector and a deleted item's entry
// removed with it; the in-memory lists follow right after the write, before the call returns.
//
// Thread safety: all methods are safe to call concurrently. Writes to one collection are
// serialised by a per-collection mutex (the item count is maintained in the same batch).
#ifndef QUANTD_SERVER_STORE_H_
#define QUANTD_SERVER_STORE_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/ivf_pq.h"
#include "core/residual_quantizer.h"
#include "core/vectors.h"
#include "quantd/storage/records.pb.h"

namespace rocksdb {
class DB;
class ColumnFamilyHandle;
class WriteBatch;
}  // namespace rocksdb

namespace quantd {

class Tokenizer;
struct ServingIndex;

// Longest accepted collection name.
inline constexpr size_t kMaxCollectionNameLength = 128;

// Checks a collection name: 1-128 characters of [A-Za-z0-9_.-], first a letter or digit.
absl::Status ValidateCollectionName(absl::string_view name, absl::string_view field = "name");

// Checks a backup name: one path component of 1-128 characters of [A-Za-z0-9._-], not "." or
// "..", and not containing ".partial-" (the marker of backups in progress).
absl::Status ValidateBackupName(absl::string_view name);

struct CollectionInfo {
  std::string name;
  uint32_t id = 0;  // internal key prefix
  int64_t dimension = 0;
  Metric metric = Metric::kL2;
  int64_t create_time_ms = 0;
  uint64_t item_count = 0;
};

class Store {
 public:
  struct Options {
    std::string path;  // database directory; created if missing
    bool sync = true;  // fsync the WAL before acknowledging a write
    // CreateCollection refuses (RESOURCE_EXHAUSTED) once this many collections exist.
    int64_t max_collections = 1000;
  };

  static absl::StatusOr<std::unique_ptr<Store>> Open(const Options& options);
  ~Store();  // flushes the WAL and closes the database
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  absl::StatusOr<CollectionInfo> CreateCollection(absl::string_view name, int64_t dimension,
                                                  Metric metric);
  std::vector<CollectionInfo> ListCollections() const;  // sorted by name
  absl::StatusOr<CollectionInfo> DescribeCollection(absl::string_view name) const;
  // Deletes the collection and all its items; returns how many items it held.
  absl::StatusOr<uint64_t> DropCollection(absl::string_view name);

  struct UpsertResult {
    uint64_t inserted = 0;    // ids that were not stored before
    uint64_t item_count = 0;  // after the write
  };
  // Writes n = ids.size() vectors; `vectors` is n x dimension, row-major. A later occurrence of
  // an id in the batch wins. Validates everything before writing anything.
  absl::StatusOr<UpsertResult> Upsert(absl::string_view collection, absl::Span<const uint64_t> ids,
                                      absl::Span<const float> vectors);

  struct DeleteResult {
    uint64_t deleted = 0;
    uint64_t missing = 0;
    uint64_t item_count = 0;
  };
  absl::StatusOr<DeleteResult> Delete(absl::string_view collection, absl::Span<const uint64_t> ids);

  struct GetResult {
    int64_t dimension = 0;
    std::vector<uint64_t> ids;      // found, in request order, each once
    std::vector<float> vectors;     // ids.size() x dimension
    std::vector<uint64_t> missing;  // not stored, in request order, each once
  };
  absl::StatusOr<GetResult> Get(absl::string_view collection, absl::Span<const uint64_t> ids) const;

  // Largest number of ids an Upsert batch, a Delete or a Get may carry.
  static constexpr size_t kMaxIdsPerCall = 1 << 20;

  // --- Semantic IDs ------------------------------------------------------------------------

  // All items of a collection from one consistent snapshot, in id order.
  struct ItemSet {
    CollectionInfo info;
    std::vector<uint64_t> ids;
    std::vector<float> vectors;  // ids.size() x dimension, as stored
  };
  absl::StatusOr<ItemSet> LoadItems(absl::string_view collection) const;

  // Commits a new tokenizer version: `record` (metadata; version is assigned here), the trained
  // `quantizer`, and codes (items.ids.size() x L) computed for `items`. Under the collection's
  // write lock, items upserted or changed since `items` was loaded are encoded anew and deleted
  // ones skipped; suffixes are assigned fresh in id order; the old version's SIDs are replaced.
  // One WriteBatch. Returns the new version.
  absl::StatusOr<uint32_t> CommitTokenizer(absl::string_view collection,
                                           storage::TokenizerRecord record,
                                           ResidualQuantizer quantizer, const ItemSet& items,
                                           const std::vector<int32_t>& codes);

  // The collection's current tokenizer: FAILED_PRECONDITION if none was trained, DATA_LOSS if
  // its stored blob is corrupt.
  absl::StatusOr<std::shared_ptr<const Tokenizer>> GetTokenizer(absl::string_view collection) const;

  struct SidList {
    int64_t levels = 0;
    uint32_t version = 0;
    std::vector<uint64_t> ids;
    std::vector<int32_t> codes;      // ids.size() x levels
    std::vector<uint32_t> suffixes;  // ids.size()
    std::vector<uint64_t> missing;   // GetSids: requested ids without a SID
    bool truncated = false;          // Lookup: more matched than the limit
  };
  // Readers of SIDs under `tokenizer` (the caller's one snapshot of GetTokenizer). If a
  // retraining commits meanwhile they return ABORTED (retry) rather than mix versions.
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
  // Number of stored items having exactly each code tuple of `codes` (n x L of `tokenizer`).
  absl::StatusOr<std::vector<uint64_t>> CountTuples(absl::string_view collection,
                                                    const Tokenizer& tokenizer,
                                                    const int32_t* codes, int64_t n) const;

  // --- IVF-PQ index -------------------------------------------------------------------------

  // Commits a new index version: `record` (metadata; version assigned here), the `trained`
  // index (no items), and the entries computed for `items`: lists (n) and codes (n x
  // code_size) for n = items.ids.size(). Under the collection's write lock, items upserted or
  // changed since `items` was loaded are encoded anew and deleted ones skipped; the previous
  // version and its entries are replaced. One WriteBatch; the new version serves from the
  // moment it returns. Returns the new version.
  absl::StatusOr<uint32_t> CommitIndex(absl::string_view collection, storage::IndexRecord record,
                                       IvfPqIndex trained, const ItemSet& items,
                                       const std::vector<int32_t>& lists,
                                       const std::vector<uint8_t>& codes);

  // The collection's current index: FAILED_PRECONDITION if none was trained, DATA_LOSS if its
  // stored blob or entries are corrupt.
  absl::StatusOr<std::shared_ptr<const ServingIndex>> GetIndex(absl::string_view collection) const;

  struct SearchResult {
    uint32_t index_version = 0;
    int64_t nprobe = 0;  // used, after the default and the clamp to nlist
    std::vector<std::vector<IvfPqNeighbor>> neighbors;  // one per query, nearest first
  };
  // The k nearest items of each of the nq = queries.size() / dimension queries (nq x
  // dimension). nprobe 0 is the default max(1, nlist / 8), above nlist is clamped; refine 0 or
  // 1 is none, else refine * k candidates are re-ranked against the stored vectors. Limits in
  // server/index.h; INVALID_ARGUMENT naming the field and value.
  absl::StatusOr<SearchResult> Search(absl::string_view collection, absl::Span<const float> queries,
                                      int64_t k, int64_t nprobe, int64_t refine) const;

  // --- Backups ------------------------------------------------------------------------------

  struct BackupResult {
    std::string path;       // <backup_dir>/<name>
    uint64_t bytes = 0;     // total size of its files
    uint64_t files = 0;     // number of its files
    double seconds = 0;     // duration
    uint64_t sequence = 0;  // latest sequence number in the copy
  };
  // Writes a consistent copy of the whole database (a RocksDB checkpoint: one instant across all
  // column families; hard links on the same filesystem, copies otherwise) to
  // <backup_dir>/<name>, creating backup_dir if missing, while other calls go on. The copy is
  // made in a sibling <name>.partial-<random> and renamed into place once complete and synced,
  // so a crash never leaves a finished-looking backup; stale partials of `name` are removed
  // first. INVALID_ARGUMENT for a bad name, ALREADY_EXISTS if the backup exists, ABORTED while
  // another backup runs (one at a time: a second one is refused rather than queued, so a
  // client never waits unboundedly behind a long copy), RESOURCE_EXHAUSTED when the disk is
  // full, INTERNAL for other failures; a failure leaves nothing under backup_dir.
  absl::StatusOr<BackupResult> Backup(const std::string& backup_dir, absl::string_view name);

  // --- Jobs ----------------------------------------------------------------------------------
  absl::Status PutJob(const storage::JobRecord& job);
  // Every stored job record.
  absl::StatusOr<std::vector<storage::JobRecord>> LoadJobs() const;

  // --- Monitoring ----------------------------------------------------------------------------
  struct DbFigures {
    double live_sst_bytes = 0;
    double memtable_bytes = 0;
    double pending_compaction_bytes = 0;
    double running_compactions = 0;
  };
  // RocksDB's figures summed over the column families.
  DbFigures GetDbFigures() const;

 private:
  struct Collection;
  struct SidBatch;
  Store() = default;
  absl::Status Load();
  absl::Status LoadTokenizer(Collection& collection);
  // Adds to `batch` the SID changes of upserting rows ids (n) with codes (n x L) under
  // `tokenizer`; rows in order, a later row of the same id wins.
  absl::Status AddSidUpdates(const Collection& collection, const Tokenizer& tokenizer,
                             absl::Span<const uint64_t> ids, const std::vector<int32_t>& codes,
                             rocksdb::WriteBatch* batch) const;
  // Adds to `batch` the removal of the SIDs of `ids` (distinct).
  absl::Status AddSidDeletes(const Collection& collection, absl::Span<const uint64_t> ids,
                             rocksdb::WriteBatch* batch) const;
  std::shared_ptr<const Tokenizer> CurrentTokenizer(const Collection& collection) const;
  absl::Status LoadIndex(Collection& collection);
  // The collection's serving index (null if none); a writer holding write_mu sees a stable one.
  std::shared_ptr<ServingIndex> CurrentIndex(const Collection& collection) const;
  // Index entries of upserting rows ids (n) with vectors (n x d) under `index`: adds their
  // puts to `batch` and returns the entries (last row of each id) to apply in memory after
  // the write. INVALID_ARGUMENT if the index rejects a vector.
  struct IndexUpdate {
    std::vector<uint64_t> ids;  // distinct
    std::vector<IvfPqEncoded> entries;
  };
  absl::StatusOr<IndexUpdate> AddIndexUpdates(const Collection& collection,
                                              const ServingIndex& index,
                                              absl::Span<const uint64_t> ids,
                                              absl::Span<const float> vectors,
                                              rocksdb::WriteBatch* batch) const;
  std::shared_ptr<Collection> Find(absl::string_view name) const;
  absl::StatusOr<std::shared_ptr<Collection>> FindOrNotFound(absl::string_view name) const;

  Options options_;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  rocksdb::ColumnFamilyHandle* meta_ = nullptr;
  rocksdb::ColumnFamilyHandle* vectors_ = nullptr;
  rocksdb::ColumnFamilyHandle* models_ = nullptr;
  rocksdb::ColumnFamilyHandle* codes_ = nullptr;
  rocksdb::ColumnFamilyHandle* sids_ = nullptr;
  rocksdb::ColumnFamilyHandle* ivf_ = nullptr;

  std::mutex backup_mu_;          // held while a backup runs
  mutable std::shared_mutex mu_;  // guards collections_ and next_collection_id_
  std::map<std::string, std::shared_ptr<Collection>, std::less<>> collections_;
  uint32_t next_collection_id_ = 1;
};

}  // namespace quantd

#endif  // QUANTD_SERVER_STORE_H_
