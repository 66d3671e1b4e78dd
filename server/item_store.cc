#include "server/item_store.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_format.h"
#include "server/keys.h"

namespace quantd {
namespace {

size_t RowBytes(int64_t d) { return static_cast<size_t>(d) * sizeof(float); }

absl::Status WrongSize(const CollectionInfo& info, uint64_t id, size_t bytes) {
  return absl::DataLossError(
      absl::StrFormat("item %d of collection '%s' holds %d bytes, expected %d", id, info.name,
                      bytes, RowBytes(info.dimension)));
}

}  // namespace

absl::StatusOr<std::vector<bool>> ItemStore::Contains(uint32_t cid,
                                                      absl::Span<const uint64_t> ids) const {
  std::vector<std::string> item_keys;
  item_keys.reserve(ids.size());
  for (uint64_t id : ids) item_keys.push_back(keys::ItemKey(cid, id));
  auto [values, statuses] = db_->MultiGet(ColumnFamily::kVectors, item_keys);
  std::vector<bool> stored(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!statuses[i].ok() && !statuses[i].IsNotFound()) {
      return FromRocks(statuses[i], "read items");
    }
    stored[i] = statuses[i].ok();
  }
  return stored;
}

absl::StatusOr<std::vector<ItemStore::Stored>> ItemStore::CompareStored(
    uint32_t cid, int64_t d, absl::Span<const uint64_t> ids,
    absl::Span<const float> vectors) const {
  std::vector<std::string> item_keys;
  item_keys.reserve(ids.size());
  for (uint64_t id : ids) item_keys.push_back(keys::ItemKey(cid, id));
  auto [values, statuses] = db_->MultiGet(ColumnFamily::kVectors, item_keys);
  const size_t row_bytes = RowBytes(d);
  std::vector<Stored> stored(ids.size(), Stored::kAbsent);
  for (size_t i = 0; i < ids.size(); ++i) {
    if (statuses[i].IsNotFound()) continue;
    if (!statuses[i].ok()) return FromRocks(statuses[i], "read items");
    const bool same = values[i].size() == row_bytes &&
                      std::memcmp(values[i].data(), vectors.data() + i * d, row_bytes) == 0;
    stored[i] = same ? Stored::kSame : Stored::kDifferent;
  }
  return stored;
}

void ItemStore::AddPuts(uint32_t cid, int64_t d, absl::Span<const uint64_t> ids,
                        absl::Span<const float> vectors, rocksdb::WriteBatch* batch) const {
  const size_t row_bytes = RowBytes(d);
  for (size_t i = 0; i < ids.size(); ++i) {
    batch->Put(db_->handle(ColumnFamily::kVectors), keys::ItemKey(cid, ids[i]),
               rocksdb::Slice(reinterpret_cast<const char*>(vectors.data() + i * d), row_bytes));
  }
}

void ItemStore::AddDelete(uint32_t cid, uint64_t id, rocksdb::WriteBatch* batch) const {
  batch->Delete(db_->handle(ColumnFamily::kVectors), keys::ItemKey(cid, id));
}

void ItemStore::AddCount(uint32_t cid, uint64_t count, rocksdb::WriteBatch* batch) const {
  batch->Put(db_->handle(ColumnFamily::kMeta), keys::CountKey(cid), keys::EncodeU64(count));
}

void ItemStore::AddDropCollection(uint32_t cid, rocksdb::WriteBatch* batch) const {
  batch->Delete(db_->handle(ColumnFamily::kMeta), keys::CountKey(cid));
}

absl::StatusOr<ItemStore::Found> ItemStore::Get(const CollectionInfo& info,
                                                absl::Span<const uint64_t> ids,
                                                const rocksdb::Snapshot* view) const {
  std::vector<std::string> item_keys;
  item_keys.reserve(ids.size());
  for (uint64_t id : ids) item_keys.push_back(keys::ItemKey(info.id, id));
  auto [values, statuses] = db_->MultiGet(ColumnFamily::kVectors, item_keys, view);
  Found found;
  const size_t row_bytes = RowBytes(info.dimension);
  for (size_t i = 0; i < ids.size(); ++i) {
    if (statuses[i].IsNotFound()) {
      found.missing.push_back(ids[i]);
      continue;
    }
    if (!statuses[i].ok()) return FromRocks(statuses[i], "read items");
    if (values[i].size() != row_bytes) return WrongSize(info, ids[i], values[i].size());
    found.ids.push_back(ids[i]);
    const size_t offset = found.vectors.size();
    found.vectors.resize(offset + static_cast<size_t>(info.dimension));
    std::memcpy(found.vectors.data() + offset, values[i].data(), row_bytes);
  }
  return found;
}

absl::StatusOr<ItemStore::Found> ItemStore::Page(const CollectionInfo& info,
                                                 std::optional<uint64_t> after, int64_t limit,
                                                 bool with_vectors, bool* more,
                                                 const rocksdb::Snapshot* view) const {
  Found found;
  *more = false;
  if (after == UINT64_MAX) return found;  // nothing can follow the largest id
  const std::string start = keys::ItemKey(info.id, after ? *after + 1 : 0);
  const size_t row_bytes = RowBytes(info.dimension);
  absl::Status status = db_->ScanPrefixFrom(
      ColumnFamily::kVectors, keys::CollectionBegin(info.id), start, static_cast<size_t>(limit),
      more,
      [&](absl::string_view key, absl::string_view value) -> absl::Status {
        const uint64_t id = keys::ItemIdOf(key);
        if (value.size() != row_bytes) return WrongSize(info, id, value.size());
        found.ids.push_back(id);
        if (with_vectors) {
          const size_t offset = found.vectors.size();
          found.vectors.resize(offset + static_cast<size_t>(info.dimension));
          std::memcpy(found.vectors.data() + offset, value.data(), row_bytes);
        }
        return absl::OkStatus();
      },
      view);
  if (!status.ok()) return status;
  return found;
}

bool ItemStore::Fetch(uint32_t cid, int64_t d, uint64_t id, float* out) const {
  auto value = db_->Get(ColumnFamily::kVectors, keys::ItemKey(cid, id), "read item");
  if (!value.ok() || !value->has_value() || (*value)->size() != RowBytes(d)) return false;
  std::memcpy(out, (*value)->data(), RowBytes(d));
  return true;
}

absl::Status ItemStore::ScanVectors(const CollectionInfo& info, VectorVisitor visit) const {
  const size_t row_bytes = RowBytes(info.dimension);
  std::vector<float> vector(static_cast<size_t>(info.dimension));  // aligned copy of the value
  return db_->ScanPrefix(ColumnFamily::kVectors, keys::CollectionBegin(info.id),
                         [&](absl::string_view key, absl::string_view value) -> absl::Status {
                           const uint64_t id = keys::ItemIdOf(key);
                           if (value.size() != row_bytes) return WrongSize(info, id, value.size());
                           std::memcpy(vector.data(), value.data(), row_bytes);
                           return visit(id, vector.data());
                         });
}

absl::StatusOr<ItemSet> ItemStore::LoadAll(const CollectionInfo& info) const {
  ItemSet items;
  items.info = info;
  const auto d = static_cast<size_t>(info.dimension);
  items.ids.reserve(info.item_count);
  items.vectors.reserve(info.item_count * d);
  absl::Status status = ScanVectors(info, [&](uint64_t id, const float* vector) {
    items.ids.push_back(id);
    items.vectors.insert(items.vectors.end(), vector, vector + d);
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  items.info.item_count = items.ids.size();
  return items;
}

absl::Status ReconcileWithSnapshot(const ItemStore& items, const ItemSet& snapshot,
                                   ReconcileVisitor visit) {
  const int64_t d = snapshot.info.dimension;
  const size_t row_bytes = RowBytes(d);
  return items.ScanVectors(snapshot.info, [&](uint64_t id, const float* vector) {
    const auto it = std::lower_bound(snapshot.ids.begin(), snapshot.ids.end(), id);
    const int64_t row = it - snapshot.ids.begin();
    const bool unchanged = it != snapshot.ids.end() && *it == id &&
                           std::memcmp(vector, snapshot.vectors.data() + row * d, row_bytes) == 0;
    return visit(id, unchanged ? row : -1, vector);
  });
}

}  // namespace quantd
