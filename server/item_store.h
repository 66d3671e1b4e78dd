// ItemStore: the items' vectors (family `vectors`, key <cid><item id>) and item counts (meta
// "count/<cid>"). Writers add their rows to the caller's WriteBatch under the collection's
// write lock (server/collections.h); readers read without it.
#ifndef QUANTD_SERVER_ITEM_STORE_H_
#define QUANTD_SERVER_ITEM_STORE_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "rocksdb/write_batch.h"
#include "server/collections.h"
#include "server/db.h"

namespace quantd {

// All items of a collection read from one snapshot, in id order.
struct ItemSet {
  CollectionInfo info;  // item_count = ids.size()
  std::vector<uint64_t> ids;
  std::vector<float> vectors;  // ids.size() x dimension, as stored
};

class ItemStore {
 public:
  explicit ItemStore(Db* db) : db_(db) {}

  // Whether each of `ids` is stored (one MultiGet).
  absl::StatusOr<std::vector<bool>> Contains(uint32_t cid, absl::Span<const uint64_t> ids) const;
  // How each of `ids` (n) stands against vectors (n x d): not stored, stored bit for bit as
  // given, or stored with another vector (one MultiGet).
  enum class Stored { kAbsent, kSame, kDifferent };
  absl::StatusOr<std::vector<Stored>> CompareStored(uint32_t cid, int64_t d,
                                                    absl::Span<const uint64_t> ids,
                                                    absl::Span<const float> vectors) const;

  // Puts rows ids (n) with vectors (n x d); a later row of the same id wins.
  void AddPuts(uint32_t cid, int64_t d, absl::Span<const uint64_t> ids,
               absl::Span<const float> vectors, rocksdb::WriteBatch* batch) const;
  void AddDelete(uint32_t cid, uint64_t id, rocksdb::WriteBatch* batch) const;
  void AddCount(uint32_t cid, uint64_t count, rocksdb::WriteBatch* batch) const;
  // The collection's meta row (its vectors go with Db::AddDeleteRows).
  void AddDropCollection(uint32_t cid, rocksdb::WriteBatch* batch) const;

  struct Found {
    std::vector<uint64_t> ids;      // found, in request order, each once
    std::vector<float> vectors;     // ids.size() x dimension
    std::vector<uint64_t> missing;  // not stored, in request order, each once
  };
  // The vectors of `ids` (distinct), as `view` sees them (null: now). DATA_LOSS for a stored
  // vector of the wrong size.
  absl::StatusOr<Found> Get(const CollectionInfo& info, absl::Span<const uint64_t> ids,
                            const rocksdb::Snapshot* view = nullptr) const;

  // Up to `limit` items with ids above `after` (all when nullopt), ascending, with their
  // vectors when `with_vectors`, as `view` sees them (null: now); `*more` tells whether items
  // follow. DATA_LOSS for a vector of the wrong size.
  absl::StatusOr<Found> Page(const CollectionInfo& info, std::optional<uint64_t> after,
                             int64_t limit, bool with_vectors, bool* more,
                             const rocksdb::Snapshot* view = nullptr) const;

  // The vector of item `id` into out (d floats); false if it is not stored (or malformed).
  bool Fetch(uint32_t cid, int64_t d, uint64_t id, float* out) const;

  // Every item of the collection from one snapshot.
  absl::StatusOr<ItemSet> LoadAll(const CollectionInfo& info) const;

  // Visits every stored item of the collection in id order with its vector (d floats, valid
  // during the call). DATA_LOSS for a vector of the wrong size.
  using VectorVisitor = absl::FunctionRef<absl::Status(uint64_t id, const float* vector)>;
  absl::Status ScanVectors(const CollectionInfo& info, VectorVisitor visit) const;

 private:
  Db* db_;
};

// A training job computes per-item results (codes, index entries) over a snapshot of the items;
// by the time it commits, items may have been upserted, changed or deleted. Called under the
// collection's write lock, visits every item stored now in id order: `snapshot_row` is the
// item's row in `snapshot` when its stored vector is bit-identical to the one trained on (reuse
// the job's result), else -1 and `vector` (d floats, valid during the call) is to be encoded
// anew. Items deleted since the snapshot are not visited.
using ReconcileVisitor =
    absl::FunctionRef<absl::Status(uint64_t id, int64_t snapshot_row, const float* vector)>;
absl::Status ReconcileWithSnapshot(const ItemStore& items, const ItemSet& snapshot,
                                   ReconcileVisitor visit);

}  // namespace quantd

#endif  // QUANTD_SERVER_ITEM_STORE_H_
