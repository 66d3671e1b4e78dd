// The collection registry: every collection's record (meta "collection/<name>"), its
// in-memory state, and the one write guard that every writer of a collection takes.
//
// A collection's in-memory state holds its info, its item count, and two model slots (the
// current tokenizer and the current IVF-PQ index, each null until trained or in error when its
// stored form is unreadable). Writers of a collection's rows (upserts, deletes, commits, drop)
// hold its write lock through a WriteGuard, which also proves the collection was not dropped
// meanwhile; readers take the models from the slots without that lock.
#ifndef QUANTD_SERVER_COLLECTIONS_H_
#define QUANTD_SERVER_COLLECTIONS_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/vectors.h"
#include "rocksdb/write_batch.h"
#include "server/db.h"

namespace quantd {

struct TokenizerSet;
struct ItemChangeLog;
struct ServingIndex;
class AttributeIndex;

// Most tokenizer versions a collection may keep.
inline constexpr uint32_t kMaxKeptTokenizerVersions = 16;

// Longest accepted collection name.
inline constexpr size_t kMaxCollectionNameLength = 128;

// Checks a collection name: 1-128 characters of [A-Za-z0-9_.-], first a letter or digit.
// Errors name `field`.
absl::Status ValidateCollectionName(absl::string_view name, absl::string_view field = "name");

struct CollectionInfo {
  std::string name;
  uint32_t id = 0;  // internal key prefix, never reused
  int64_t dimension = 0;
  Metric metric = Metric::kL2;
  int64_t create_time_ms = 0;
  // Tokenizer versions to keep; 0: the server's default.
  uint32_t keep_tokenizer_versions = 0;
  uint64_t item_count = 0;
  // Changes with every committed write to the collection's items or models: a key for caches
  // of figures computed from them.
  uint64_t generation = 0;
};

// A model a collection may hold: none (null), one, or an error (its stored form is
// unreadable: DATA_LOSS for this collection's calls only). Replaced only by a holder of the
// collection's write lock, so such a holder sees a stable one; read by anyone.
template <typename T>
class ModelSlot {
 public:
  // The model, or null when there is none or it is unreadable.
  std::shared_ptr<T> get() const {
    std::lock_guard lock(mu_);
    return model_;
  }
  absl::Status error() const {
    std::lock_guard lock(mu_);
    return error_;
  }
  // The model; its error if unreadable; `if_none` when there is none.
  absl::StatusOr<std::shared_ptr<T>> GetOr(absl::Status if_none) const {
    std::lock_guard lock(mu_);
    if (!error_.ok()) return error_;
    if (model_ == nullptr) return if_none;
    return model_;
  }
  void Set(std::shared_ptr<T> model) {
    std::lock_guard lock(mu_);
    model_ = std::move(model);
    error_ = absl::OkStatus();
  }
  // Takes a model read at start-up: a DATA_LOSS error fails only this slot (its collection's
  // calls) and returns OK; any other error is returned, for the start-up to fail.
  absl::Status TakeLoaded(absl::StatusOr<std::shared_ptr<T>> loaded) {
    if (loaded.ok()) {
      Set(std::move(*loaded));
    } else if (absl::IsDataLoss(loaded.status())) {
      Fail(loaded.status());
    } else {
      return loaded.status();
    }
    return absl::OkStatus();
  }
  void Fail(absl::Status error) {
    std::lock_guard lock(mu_);
    model_ = nullptr;
    error_ = std::move(error);
  }

 private:
  mutable std::mutex mu_;
  std::shared_ptr<T> model_;
  absl::Status error_;
};

// In-memory state of one collection. `info` is immutable but for item_count, which lives in
// `item_count` and changes under write_mu; `dropped` (under write_mu) tells writers that raced
// with a drop to give up.
struct Collection {
  CollectionInfo info;
  std::mutex write_mu;
  bool dropped = false;
  std::atomic<uint64_t> item_count{0};
  std::atomic<uint64_t> generation{0};               // see CollectionInfo::generation
  std::atomic<uint32_t> keep_tokenizer_versions{0};  // changes under write_mu
  // The kept tokenizer versions (null until one is trained).
  ModelSlot<const TokenizerSet> tokenizers;
  // Item ids written since each running tokenizer job took its snapshot (server/tokenizers.h);
  // under write_mu.
  std::vector<std::shared_ptr<ItemChangeLog>> change_logs;
  ModelSlot<ServingIndex> index;
  // The attribute index (server/attributes.h): null until the collection's first attribute;
  // set and changed by writers under write_mu, read by searches.
  ModelSlot<AttributeIndex> attributes;

  // info with the current item count.
  CollectionInfo Snapshot() const {
    CollectionInfo out = info;
    out.item_count = item_count.load();
    out.keep_tokenizer_versions = keep_tokenizer_versions.load();
    out.generation = generation.load();
    return out;
  }
};

// Exclusive write access to one live collection: holds its write lock.
class WriteGuard {
 public:
  Collection& collection() const { return *collection_; }
  const CollectionInfo& info() const { return collection_->info; }
  // Called once a write under this guard is committed (see CollectionInfo::generation).
  void MarkWritten() const { collection_->generation.fetch_add(1); }

 private:
  friend class CollectionRegistry;
  explicit WriteGuard(std::shared_ptr<Collection> collection)
      : collection_(std::move(collection)), lock_(collection_->write_mu) {}
  std::shared_ptr<Collection> collection_;
  std::unique_lock<std::mutex> lock_;
};

class CollectionRegistry {
 public:
  // Loads every collection record (converting a 0.1.0 database's records on the way, see
  // server/keys.h kSchemaVersion) and item count. `db` outlives the registry. DATA_LOSS for a
  // corrupt record; FAILED_PRECONDITION for a database of a newer schema.
  static absl::StatusOr<std::unique_ptr<CollectionRegistry>> Load(Db* db, int64_t max_collections);

  // INVALID_ARGUMENT for a bad name or dimension, ALREADY_EXISTS, RESOURCE_EXHAUSTED past
  // max_collections.
  // keep_tokenizer_versions: 0 (the server's default) or 1..kMaxKeptTokenizerVersions.
  absl::StatusOr<CollectionInfo> Create(absl::string_view name, int64_t dimension, Metric metric,
                                        uint32_t keep_tokenizer_versions = 0);
  // Rewrites the collection's record with a new keep_tokenizer_versions.
  absl::Status SetKeepTokenizerVersions(const WriteGuard& guard, uint32_t keep);
  std::vector<CollectionInfo> List() const;  // sorted by name
  // INVALID_ARGUMENT for a bad name (errors name `field`), NOT_FOUND.
  absl::StatusOr<CollectionInfo> Describe(absl::string_view name,
                                          absl::string_view field = "collection") const;
  absl::StatusOr<std::shared_ptr<Collection>> Find(absl::string_view name,
                                                   absl::string_view field = "collection") const;
  // Every live collection (start-up loading, monitoring).
  std::vector<std::shared_ptr<Collection>> All() const;

  // Find, then take the collection's write lock; NOT_FOUND if it was dropped meanwhile, or
  // (expected_id > 0) if it is no longer the collection with that id (dropped and re-created
  // since a job read it).
  absl::StatusOr<WriteGuard> LockForWrite(absl::string_view name, uint32_t expected_id = 0) const;

  // Adds the removal of the collection's meta rows (record, item count) to `batch`; after the
  // batch is written, Forget() takes it out of memory.
  void AddDrop(const CollectionInfo& info, rocksdb::WriteBatch* batch) const;
  void Forget(WriteGuard& guard);

 private:
  explicit CollectionRegistry(Db* db, int64_t max_collections)
      : db_(db), max_collections_(max_collections) {}
  absl::Status LoadAll();

  Db* db_;
  int64_t max_collections_;
  mutable std::shared_mutex mu_;  // guards collections_ and next_collection_id_
  std::map<std::string, std::shared_ptr<Collection>, std::less<>> collections_;
  uint32_t next_collection_id_ = 1;
};

}  // namespace quantd

#endif  // QUANTD_SERVER_COLLECTIONS_H_
