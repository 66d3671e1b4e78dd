// ItemService: the item writes and reads of the API (Upsert, DeleteItems, GetItems,
// DropCollection), free of gRPC. A write takes the collection's write guard, then composes one
// WriteBatch from the stores: the vectors and item count (ItemStore), the items' SIDs under the
// current tokenizer (SidStore), their IVF-PQ entries under the current index (IvfStore) and their
// attributes (AttributeStore). It is written atomically (fsynced when sync is on), and only then
// do the in-memory item count, index lists and attribute index change: a write is all or
// nothing, on disk and in memory.
#ifndef QUANTD_SERVER_ITEMS_H_
#define QUANTD_SERVER_ITEMS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "server/attribute_store.h"
#include "server/attributes.h"
#include "server/collections.h"
#include "server/db.h"
#include "server/item_store.h"
#include "server/ivf_store.h"
#include "server/sid_store.h"
#include "server/tokenizers.h"

namespace quantd {

// Largest number of ids an Upsert batch, a Delete or a Get may carry.
inline constexpr size_t kMaxIdsPerCall = 1 << 20;

// The distinct ids of `ids` in first-occurrence order.
std::vector<uint64_t> DistinctIds(absl::Span<const uint64_t> ids);

// ListItems pages: default and largest page size, and the most vector bytes in one page.
inline constexpr uint32_t kDefaultPageSize = 1000;
inline constexpr uint32_t kMaxPageSize = 10000;
inline constexpr int64_t kMaxPageVectorBytes = int64_t{48} << 20;

class ItemService {
 public:
  // Every pointer outlives the service.
  ItemService(Db* db, CollectionRegistry* registry, const ItemStore* items, const SidStore* sids,
              const Tokenizers* tokenizers, const IvfStore* ivf, const AttributeStore* attributes)
      : db_(db),
        registry_(registry),
        items_(items),
        sids_(sids),
        tokenizers_(tokenizers),
        ivf_(ivf),
        attributes_(attributes) {}

  // Loads every collection's attribute index from its stored rows (start-up). An unreadable one
  // fails only its collection's calls (DATA_LOSS); a RocksDB read error fails the load.
  absl::Status LoadAttributes();

  struct UpsertResult {
    uint64_t inserted = 0;    // ids that were not stored before
    uint64_t item_count = 0;  // after the write
  };
  // Writes n = ids.size() vectors; `vectors` is n x dimension, row-major. A later occurrence of
  // an id in the batch wins. Validates everything before writing anything. An item whose
  // vector is stored bit for bit as given is left as it is (vector, SID and index entry); the
  // others get their SID under the tokenizer's assignment rule and their index entry.
  // `attributes` is empty (stored attributes stay) or n entries (sorted keys): row i's replace
  // its item's stored ones (the last row of an id wins). INVALID_ARGUMENT for attributes past
  // the limits or of another type than the collection's key (server/attributes.h).
  absl::StatusOr<UpsertResult> Upsert(absl::string_view collection, absl::Span<const uint64_t> ids,
                                      absl::Span<const float> vectors,
                                      absl::Span<const ItemAttributes> attributes = {});

  struct DeleteResult {
    uint64_t deleted = 0;
    uint64_t missing = 0;
    uint64_t item_count = 0;
  };
  absl::StatusOr<DeleteResult> Delete(absl::string_view collection, absl::Span<const uint64_t> ids);

  struct GetResult {
    int64_t dimension = 0;
    std::vector<uint64_t> ids;               // found, in request order, each once
    std::vector<float> vectors;              // ids.size() x dimension
    std::vector<uint64_t> missing;           // not stored, in request order, each once
    std::vector<ItemAttributes> attributes;  // one per found id
  };
  absl::StatusOr<GetResult> Get(absl::string_view collection, absl::Span<const uint64_t> ids) const;

  // One page of ListItems: ids in ascending order after the position `page_token` names (empty:
  // the start), at most page_size (0: kDefaultPageSize; 1..kMaxPageSize; fewer when their
  // vectors would pass kMaxPageVectorBytes), with vectors and attributes when asked;
  // next_page_token is empty after the last item.
  struct Page {
    uint32_t collection_id = 0;
    int64_t dimension = 0;
    std::vector<uint64_t> ids;
    std::vector<float> vectors;              // with_vectors: ids.size() x dimension
    std::vector<ItemAttributes> attributes;  // with_attributes: one per id
    std::string next_page_token;
  };
  absl::StatusOr<Page> List(absl::string_view collection, uint32_t page_size,
                            absl::string_view page_token, bool with_vectors,
                            bool with_attributes = false) const;

  // The collection's attribute keys with their counts (none before its first attribute).
  absl::StatusOr<std::vector<AttributeIndex::KeyStats>> AttributeKeys(
      absl::string_view collection) const;

  // Every item of the collection from one consistent snapshot, in id order (training input).
  absl::StatusOr<ItemSet> LoadItems(absl::string_view collection) const;

  // Deletes the collection with its items, SIDs, index and models atomically; returns how many
  // items it held.
  absl::StatusOr<uint64_t> DropCollection(absl::string_view collection);

 private:
  // The collection's write guard for an item write; its models must be readable, else the
  // write would leave their SIDs or entries inconsistent (DATA_LOSS for this collection only).
  absl::StatusOr<WriteGuard> LockForItemWrite(absl::string_view collection) const;
  // The start of an item write: the collection's write guard (its models must be readable,
  // else the write would leave their SIDs or entries inconsistent: DATA_LOSS for this
  // collection only), the distinct ids of the request, and which of them are stored.
  struct ItemWrite {
    WriteGuard guard;
    std::vector<uint64_t> distinct;  // in first-occurrence order
    std::vector<bool> stored;        // per distinct id
  };
  absl::StatusOr<ItemWrite> BeginItemWrite(absl::string_view collection,
                                           absl::Span<const uint64_t> ids) const;

  Db* db_;
  CollectionRegistry* registry_;
  const ItemStore* items_;
  const SidStore* sids_;
  const Tokenizers* tokenizers_;
  const IvfStore* ivf_;
  const AttributeStore* attributes_;
};

}  // namespace quantd

#endif  // QUANTD_SERVER_ITEMS_H_
