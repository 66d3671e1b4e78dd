// AttributeStore: item attributes on disk (family `attrs`, key <cid:be32><item id:be64> ->
// quantd.storage.AttributesRecord; no row for an item without attributes) and each collection's
// attribute schema (meta "attr_keys/<cid:be32>" -> quantd.storage.AttributeKeysRecord). Writers
// add their rows to the caller's WriteBatch under the collection's write lock, in the same batch
// as the item's vector; the in-memory AttributeIndex (server/attributes.h) follows the write.
#ifndef QUANTD_SERVER_ATTRIBUTE_STORE_H_
#define QUANTD_SERVER_ATTRIBUTE_STORE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "rocksdb/write_batch.h"
#include "server/attributes.h"
#include "server/collections.h"
#include "server/db.h"

namespace quantd {

class AttributeStore {
 public:
  explicit AttributeStore(Db* db) : db_(db) {}

  // The stored attributes of `ids` (one MultiGet) as `view` sees them (null: now): entry i for
  // ids[i], empty when it has none. DATA_LOSS (naming `collection`) for an unreadable row.
  absl::StatusOr<std::vector<ItemAttributes>> Get(uint32_t cid, absl::string_view collection,
                                                  absl::Span<const uint64_t> ids,
                                                  const rocksdb::Snapshot* view = nullptr) const;

  // Sets item `id`'s attributes (empty: removes its row).
  void AddPut(uint32_t cid, uint64_t id, const ItemAttributes& attributes,
              rocksdb::WriteBatch* batch) const;
  void AddDelete(uint32_t cid, uint64_t id, rocksdb::WriteBatch* batch) const;
  // Rewrites the collection's schema row.
  void AddSchema(uint32_t cid, const AttributeSchema& schema, rocksdb::WriteBatch* batch) const;
  // The collection's schema row (its attribute rows go with Db::AddDeleteRows).
  void AddDropCollection(uint32_t cid, rocksdb::WriteBatch* batch) const;

  // The collection's index built from its stored schema and rows; null when it never had an
  // attribute. DATA_LOSS for an unreadable row or a row that disagrees with the schema.
  absl::StatusOr<std::shared_ptr<AttributeIndex>> Load(const CollectionInfo& info) const;

 private:
  Db* db_;
};

}  // namespace quantd

#endif  // QUANTD_SERVER_ATTRIBUTE_STORE_H_
