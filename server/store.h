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
//   vectors  <cid:be32><item id:be64>  -> dimension float32 values, little-endian
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
#include "core/vectors.h"

namespace rocksdb {
class DB;
class ColumnFamilyHandle;
}  // namespace rocksdb

namespace quantd {

// Longest accepted collection name.
inline constexpr size_t kMaxCollectionNameLength = 128;

// Checks a collection name: 1-128 characters of [A-Za-z0-9_.-], first a letter or digit.
absl::Status ValidateCollectionName(absl::string_view name, absl::string_view field = "name");

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

  // Largest number of ids a Delete or Get may name in one call.
  static constexpr size_t kMaxIdsPerCall = 1 << 20;

 private:
  struct Collection;
  Store() = default;
  absl::Status Load();
  std::shared_ptr<Collection> Find(absl::string_view name) const;
  absl::StatusOr<std::shared_ptr<Collection>> FindOrNotFound(absl::string_view name) const;

  Options options_;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  rocksdb::ColumnFamilyHandle* meta_ = nullptr;
  rocksdb::ColumnFamilyHandle* vectors_ = nullptr;

  mutable std::shared_mutex mu_;  // guards collections_ and next_collection_id_
  std::map<std::string, std::shared_ptr<Collection>, std::less<>> collections_;
  uint32_t next_collection_id_ = 1;
};

}  // namespace quantd

#endif  // QUANTD_SERVER_STORE_H_
