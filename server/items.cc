#include "server/items.h"

#include <map>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <unordered_set>

#include "absl/strings/str_format.h"
#include "server/index.h"
#include "server/keys.h"
#include "server/page_token.h"
#include "server/tokenizer.h"
#include "server/tokenizers.h"

namespace quantd {
namespace {

absl::Status CheckIdCount(size_t n, absl::string_view collection) {
  if (n == 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ids is empty: name at least one item of collection '%s'", collection));
  }
  if (n > kMaxIdsPerCall) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ids has %d entries, more than the %d allowed per call", n, kMaxIdsPerCall));
  }
  return absl::OkStatus();
}

// The index entries of items ids (n, distinct) with vectors (n x d). INVALID_ARGUMENT if the
// index rejects a vector.
absl::StatusOr<std::vector<IvfPqEncoded>> EncodeIndexEntries(const IvfPqIndex& index, int64_t d,
                                                             absl::Span<const uint64_t> ids,
                                                             absl::Span<const float> vectors) {
  std::vector<IvfPqEncoded> entries;
  entries.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    auto encoded = index.EncodeForList(vectors.subspan(i * d, static_cast<size_t>(d)));
    if (!encoded.ok()) return encoded.status();
    entries.push_back(std::move(*encoded));
  }
  return entries;
}

// The rows an upsert writes: one per distinct id whose vector differs from the stored one (an
// item upserted bit for bit as stored keeps everything: vector, SID, index entry), from the
// id's last row in the batch (the vector that stays), in id order.
struct ChangedRows {
  std::vector<uint64_t> ids;
  std::vector<float> vectors;  // ids.size() x d
  uint64_t inserted = 0;       // of them, ids not stored before
};
absl::StatusOr<ChangedRows> ChangedRowsOf(const ItemStore& items, uint32_t cid, int64_t d,
                                          absl::Span<const uint64_t> ids,
                                          absl::Span<const float> vectors) {
  std::map<uint64_t, size_t> last_row;
  for (size_t i = 0; i < ids.size(); ++i) last_row[ids[i]] = i;
  std::vector<uint64_t> distinct;
  std::vector<float> rows;
  distinct.reserve(last_row.size());
  rows.reserve(last_row.size() * static_cast<size_t>(d));
  for (const auto& [id, row] : last_row) {
    distinct.push_back(id);
    rows.insert(rows.end(), vectors.begin() + row * d, vectors.begin() + (row + 1) * d);
  }
  auto stored = items.CompareStored(cid, d, distinct, rows);
  if (!stored.ok()) return stored.status();
  ChangedRows changed;
  for (size_t i = 0; i < distinct.size(); ++i) {
    if ((*stored)[i] == ItemStore::Stored::kSame) continue;
    if ((*stored)[i] == ItemStore::Stored::kAbsent) ++changed.inserted;
    changed.ids.push_back(distinct[i]);
    changed.vectors.insert(changed.vectors.end(), rows.begin() + i * d, rows.begin() + (i + 1) * d);
  }
  return changed;
}

// The attribute writes of an upsert: for each distinct id, its last row's attributes when they
// differ from the stored ones (before: stored, after: the row's), in id order.
absl::StatusOr<std::vector<AttributeIndex::Change>> AttributeChangesOf(
    const AttributeStore& store, uint32_t cid, absl::string_view collection,
    absl::Span<const uint64_t> ids, absl::Span<const ItemAttributes> attributes) {
  std::map<uint64_t, size_t> last_row;
  for (size_t i = 0; i < attributes.size(); ++i) last_row[ids[i]] = i;
  std::vector<uint64_t> distinct;
  distinct.reserve(last_row.size());
  for (const auto& entry : last_row) distinct.push_back(entry.first);
  auto stored = store.Get(cid, collection, distinct);
  if (!stored.ok()) return stored.status();
  std::vector<AttributeIndex::Change> changes;
  size_t i = 0;
  for (const auto& [id, row] : last_row) {
    ItemAttributes& before = (*stored)[i++];
    if (before == attributes[row]) continue;
    changes.push_back({id, std::move(before), attributes[row]});
  }
  return changes;
}

}  // namespace

std::vector<uint64_t> DistinctIds(absl::Span<const uint64_t> ids) {
  std::vector<uint64_t> out;
  out.reserve(ids.size());
  std::unordered_set<uint64_t> seen;
  seen.reserve(ids.size() * 2);
  for (uint64_t id : ids) {
    if (seen.insert(id).second) out.push_back(id);
  }
  return out;
}

absl::StatusOr<WriteGuard> ItemService::LockForItemWrite(absl::string_view name) const {
  auto guard = registry_->LockForWrite(name);
  if (!guard.ok()) return guard.status();
  for (const absl::Status& error :
       {guard->collection().tokenizers.error(), guard->collection().index.error(),
        guard->collection().attributes.error()}) {
    if (!error.ok()) return error;
  }
  return guard;
}

absl::StatusOr<ItemService::ItemWrite> ItemService::BeginItemWrite(
    absl::string_view name, absl::Span<const uint64_t> ids) const {
  auto guard = LockForItemWrite(name);
  if (!guard.ok()) return guard.status();
  std::vector<uint64_t> distinct = DistinctIds(ids);
  auto stored = items_->Contains(guard->info().id, distinct);
  if (!stored.ok()) return stored.status();
  return ItemWrite{std::move(*guard), std::move(distinct), std::move(*stored)};
}

absl::Status ItemService::LoadAttributes() {
  for (const std::shared_ptr<Collection>& collection : registry_->All()) {
    if (auto status = collection->attributes.TakeLoaded(attributes_->Load(collection->info));
        !status.ok()) {
      return status;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ItemService::UpsertResult> ItemService::Upsert(
    absl::string_view name, absl::Span<const uint64_t> ids, absl::Span<const float> vectors,
    absl::Span<const ItemAttributes> attributes) {
  auto info = registry_->Describe(name);
  if (!info.ok()) return info.status();
  const int64_t n = static_cast<int64_t>(ids.size());
  const int64_t d = info->dimension;
  if (n == 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ids is empty: a batch for collection '%s' needs at least one row", name));
  }
  if (ids.size() > kMaxIdsPerCall) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ids has %d rows, more than the %d allowed per batch", ids.size(), kMaxIdsPerCall));
  }
  if (static_cast<int64_t>(vectors.size()) != n * d) {
    return absl::InvalidArgumentError(
        absl::StrFormat("vectors has %d values; %d ids x dimension %d of collection '%s' needs %d",
                        vectors.size(), n, d, name, n * d));
  }
  if (auto status = CheckVectors(vectors.data(), n, d, info->metric); !status.ok()) return status;
  if (!attributes.empty() && attributes.size() != ids.size()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("attributes has %d entries for %d rows: give none or exactly one per row",
                        attributes.size(), ids.size()));
  }
  for (size_t i = 0; i < attributes.size(); ++i) {
    if (auto status = CheckItemAttributes(attributes[i],
                                          absl::StrFormat("attributes[%d] (id %d)", i, ids[i]));
        !status.ok()) {
      return status;
    }
  }

  auto guard = LockForItemWrite(name);
  if (!guard.ok()) return guard.status();
  Collection& collection = guard->collection();
  const uint32_t cid = collection.info.id;
  // Attributes first: a type conflict refuses the batch before anything else is read.
  std::shared_ptr<AttributeIndex> attribute_index = collection.attributes.get();
  AttributeSchema schema = attribute_index ? attribute_index->schema() : AttributeSchema();
  auto new_keys = NewAttributeKeys(schema, ids, attributes, name);
  if (!new_keys.ok()) return new_keys.status();
  std::vector<AttributeIndex::Change> attribute_changes;
  if (!attributes.empty()) {
    auto changes = AttributeChangesOf(*attributes_, cid, name, ids, attributes);
    if (!changes.ok()) return changes.status();
    attribute_changes = std::move(*changes);
  }
  auto changed = ChangedRowsOf(*items_, cid, d, ids, vectors);
  if (!changed.ok()) return changed.status();
  const uint64_t new_count = collection.item_count.load() + changed->inserted;
  if (changed->ids.empty() && attribute_changes.empty()) {
    return UpsertResult{0, new_count};  // nothing differs: no write
  }

  rocksdb::WriteBatch batch;
  for (const AttributeIndex::Change& change : attribute_changes) {
    attributes_->AddPut(cid, change.id, change.after, &batch);
  }
  if (!new_keys->empty()) {
    schema.insert(new_keys->begin(), new_keys->end());
    attributes_->AddSchema(cid, schema, &batch);
  }
  items_->AddPuts(cid, d, changed->ids, changed->vectors, &batch);
  items_->AddCount(cid, new_count, &batch);
  SidChanges sid_changes;
  std::shared_ptr<const TokenizerSet> tokenizers = collection.tokenizers.get();
  if (tokenizers != nullptr && !changed->ids.empty()) {
    if (auto status =
            tokenizers_->AddItemUpserts(cid, *tokenizers, changed->ids, changed->vectors,
                                        static_cast<int64_t>(new_count), &sid_changes, &batch);
        !status.ok()) {
      return status;
    }
  }
  // The index entries (list, PQ code) go in the same batch; the in-memory lists follow the
  // write, so a search after the acknowledgement sees the new vectors. The lists change only
  // under the write guard, so reading the index here needs no lock of its own.
  std::shared_ptr<ServingIndex> index = collection.index.get();
  std::vector<IvfPqEncoded> entries;
  if (index != nullptr && !changed->ids.empty()) {
    auto encoded = EncodeIndexEntries(index->index, d, changed->ids, changed->vectors);
    if (!encoded.ok()) return encoded.status();
    entries = std::move(*encoded);
    for (size_t i = 0; i < entries.size(); ++i) {
      ivf_->AddEntry(cid, index->record.version(), changed->ids[i], entries[i], &batch);
    }
  }
  if (auto status = db_->Write(batch, "write items"); !status.ok()) return status;
  sid_changes.Keep();
  Tokenizers::LogItemWrites(collection, changed->ids);
  guard->MarkWritten();

  collection.item_count = new_count;
  if (!attribute_changes.empty() || !new_keys->empty()) {
    const bool first = attribute_index == nullptr;
    if (first) attribute_index = std::make_shared<AttributeIndex>();
    attribute_index->Apply(*new_keys, attribute_changes);
    if (first) collection.attributes.Set(attribute_index);
  }
  if (index != nullptr && !changed->ids.empty()) {
    std::unique_lock lock(index->mu);
    index->index.Remove(changed->ids);
    for (size_t i = 0; i < entries.size(); ++i) {
      // Cannot fail: the entry was made by this index and its id was just removed.
      index->index
          .AddEncoded(changed->ids[i], entries[i].list, entries[i].code, entries[i].refine_code)
          .IgnoreError();
    }
  }
  return UpsertResult{changed->inserted, new_count};
}

absl::StatusOr<ItemService::DeleteResult> ItemService::Delete(absl::string_view name,
                                                              absl::Span<const uint64_t> ids) {
  if (auto status = registry_->Find(name); !status.ok()) return status.status();
  if (auto status = CheckIdCount(ids.size(), name); !status.ok()) return status;
  auto write = BeginItemWrite(name, ids);
  if (!write.ok()) return write.status();
  Collection& collection = write->guard.collection();
  const uint32_t cid = collection.info.id;
  std::vector<uint64_t> deleted;
  for (size_t i = 0; i < write->distinct.size(); ++i) {
    if (write->stored[i]) deleted.push_back(write->distinct[i]);
  }
  DeleteResult result;
  result.deleted = deleted.size();
  result.missing = write->distinct.size() - deleted.size();
  result.item_count = collection.item_count.load() - result.deleted;
  if (deleted.empty()) return result;

  // The deleted items' attributes leave the attribute index (none without one).
  std::shared_ptr<AttributeIndex> attribute_index = collection.attributes.get();
  std::vector<AttributeIndex::Change> attribute_changes;
  if (attribute_index != nullptr) {
    auto stored = attributes_->Get(cid, name, deleted);
    if (!stored.ok()) return stored.status();
    for (size_t i = 0; i < deleted.size(); ++i) {
      if (!(*stored)[i].empty()) {
        attribute_changes.push_back({deleted[i], std::move((*stored)[i]), ItemAttributes()});
      }
    }
  }
  rocksdb::WriteBatch batch;
  for (uint64_t id : deleted) {
    items_->AddDelete(cid, id, &batch);
    ivf_->AddDelete(cid, id, &batch);  // the item's index entry, if any
  }
  for (const AttributeIndex::Change& change : attribute_changes) {
    attributes_->AddDelete(cid, change.id, &batch);
  }
  items_->AddCount(cid, result.item_count, &batch);
  SidChanges sid_changes;
  if (std::shared_ptr<const TokenizerSet> tokenizers = collection.tokenizers.get()) {
    if (auto status = tokenizers_->AddItemDeletes(cid, *tokenizers, deleted, &sid_changes, &batch);
        !status.ok()) {
      return status;
    }
  }
  if (auto status = db_->Write(batch, "delete items"); !status.ok()) return status;
  sid_changes.Keep();
  Tokenizers::LogItemWrites(collection, deleted);
  write->guard.MarkWritten();

  collection.item_count = result.item_count;
  if (!attribute_changes.empty()) attribute_index->Apply({}, attribute_changes);
  if (std::shared_ptr<ServingIndex> index = collection.index.get()) {
    std::unique_lock lock(index->mu);
    index->index.Remove(deleted);
  }
  return result;
}

absl::StatusOr<ItemService::GetResult> ItemService::Get(absl::string_view name,
                                                        absl::Span<const uint64_t> ids) const {
  auto info = registry_->Describe(name);
  if (!info.ok()) return info.status();
  if (auto status = CheckIdCount(ids.size(), name); !status.ok()) return status;
  // Vectors and attributes from one moment: a write between the two reads cannot pair an
  // item's vector with another state's attributes.
  const Db::ReadView view = db_->TakeReadView();
  auto found = items_->Get(*info, DistinctIds(ids), view.get());
  if (!found.ok()) return found.status();
  auto attributes = attributes_->Get(info->id, name, found->ids, view.get());
  if (!attributes.ok()) return attributes.status();
  return GetResult{info->dimension, std::move(found->ids), std::move(found->vectors),
                   std::move(found->missing), std::move(*attributes)};
}

absl::StatusOr<ItemService::Page> ItemService::List(absl::string_view name, uint32_t page_size,
                                                    absl::string_view page_token, bool with_vectors,
                                                    bool with_attributes) const {
  auto info = registry_->Describe(name);
  if (!info.ok()) return info.status();
  if (page_size > kMaxPageSize) {
    return absl::InvalidArgumentError(absl::StrFormat("page_size %d is outside 1..%d (0: %d)",
                                                      page_size, kMaxPageSize, kDefaultPageSize));
  }
  std::optional<uint64_t> after;
  if (!page_token.empty()) {
    auto last = DecodePageToken(page_token, info->id, name);
    if (!last.ok()) return last.status();
    after = *last;
  }
  int64_t limit = page_size == 0 ? kDefaultPageSize : page_size;
  if (with_vectors) {
    const int64_t row_bytes = info->dimension * static_cast<int64_t>(sizeof(float));
    limit = std::max<int64_t>(1, std::min(limit, kMaxPageVectorBytes / row_bytes));
  }
  bool more = false;
  const Db::ReadView view = db_->TakeReadView();  // the page's ids and attributes together
  auto found = items_->Page(*info, after, limit, with_vectors, &more, view.get());
  if (!found.ok()) return found.status();
  Page page;
  page.collection_id = info->id;
  page.dimension = info->dimension;
  page.ids = std::move(found->ids);
  page.vectors = std::move(found->vectors);
  if (with_attributes) {
    auto attributes = attributes_->Get(info->id, name, page.ids, view.get());
    if (!attributes.ok()) return attributes.status();
    page.attributes = std::move(*attributes);
  }
  if (more && !page.ids.empty()) page.next_page_token = EncodePageToken(info->id, page.ids.back());
  return page;
}

absl::StatusOr<std::vector<AttributeIndex::KeyStats>> ItemService::AttributeKeys(
    absl::string_view name) const {
  auto collection = registry_->Find(name);
  if (!collection.ok()) return collection.status();
  if (absl::Status error = (*collection)->attributes.error(); !error.ok()) return error;
  std::shared_ptr<AttributeIndex> index = (*collection)->attributes.get();
  if (index == nullptr) return std::vector<AttributeIndex::KeyStats>();
  return index->Stats();
}

absl::StatusOr<ItemSet> ItemService::LoadItems(absl::string_view name) const {
  auto info = registry_->Describe(name);
  if (!info.ok()) return info.status();
  return items_->LoadAll(*info);
}

absl::StatusOr<uint64_t> ItemService::DropCollection(absl::string_view name) {
  auto guard = registry_->LockForWrite(name, /*expected_id=*/0);
  if (!guard.ok()) {
    // A drop that lost the race to another drop: the collection is gone either way.
    if (absl::IsNotFound(guard.status())) {
      return absl::NotFoundError(absl::StrFormat("collection '%s' does not exist", name));
    }
    return guard.status();
  }
  const CollectionInfo& info = guard->info();
  const uint32_t cid = info.id;
  rocksdb::WriteBatch batch;
  registry_->AddDrop(info, &batch);
  items_->AddDropCollection(cid, &batch);
  sids_->AddDropCollection(cid, &batch);
  ivf_->AddDropCollection(cid, &batch);
  attributes_->AddDropCollection(cid, &batch);
  const std::string begin = keys::CollectionBegin(cid);
  const std::string end = keys::CollectionEnd(cid);
  db_->AddDeleteRows(begin, end, &batch);
  if (auto status = db_->Write(batch, "drop collection"); !status.ok()) return status;
  const uint64_t items = guard->collection().item_count.load();
  registry_->Forget(*guard);
  // Reclaim the space of the dropped rows in the background of RocksDB's own compactions.
  db_->SuggestCompaction(begin, end);
  return items;
}

}  // namespace quantd
