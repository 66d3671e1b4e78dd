#include "server/items.h"

#include <map>
#include <mutex>
#include <shared_mutex>
#include <unordered_set>

#include "absl/strings/str_format.h"
#include "server/index.h"
#include "server/keys.h"
#include "server/tokenizer.h"

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

// The index entries of upserting rows ids (n) with vectors (n x d): one per distinct id, from
// its last row (the vector that stays). INVALID_ARGUMENT if the index rejects a vector.
struct IndexUpdate {
  std::vector<uint64_t> ids;  // distinct
  std::vector<IvfPqEncoded> entries;
};
absl::StatusOr<IndexUpdate> EncodeIndexEntries(const IvfPqIndex& index, int64_t d,
                                               absl::Span<const uint64_t> ids,
                                               absl::Span<const float> vectors) {
  std::map<uint64_t, size_t> last_row;
  for (size_t i = 0; i < ids.size(); ++i) last_row[ids[i]] = i;
  IndexUpdate update;
  update.ids.reserve(last_row.size());
  update.entries.reserve(last_row.size());
  for (const auto& [id, row] : last_row) {
    auto encoded = index.EncodeForList(vectors.subspan(row * d, static_cast<size_t>(d)));
    if (!encoded.ok()) return encoded.status();
    update.ids.push_back(id);
    update.entries.push_back(std::move(*encoded));
  }
  return update;
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

absl::StatusOr<ItemService::ItemWrite> ItemService::BeginItemWrite(
    absl::string_view name, absl::Span<const uint64_t> ids) const {
  auto guard = registry_->LockForWrite(name);
  if (!guard.ok()) return guard.status();
  for (const absl::Status& error :
       {guard->collection().tokenizer.error(), guard->collection().index.error()}) {
    if (!error.ok()) return error;
  }
  std::vector<uint64_t> distinct = DistinctIds(ids);
  auto stored = items_->Contains(guard->info().id, distinct);
  if (!stored.ok()) return stored.status();
  return ItemWrite{std::move(*guard), std::move(distinct), std::move(*stored)};
}

absl::StatusOr<ItemService::UpsertResult> ItemService::Upsert(absl::string_view name,
                                                              absl::Span<const uint64_t> ids,
                                                              absl::Span<const float> vectors) {
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

  auto write = BeginItemWrite(name, ids);
  if (!write.ok()) return write.status();
  Collection& collection = write->guard.collection();
  const uint32_t cid = collection.info.id;
  // Which ids are new decides the item count written in the same batch.
  const auto inserted =
      static_cast<uint64_t>(std::count(write->stored.begin(), write->stored.end(), false));
  const uint64_t new_count = collection.item_count.load() + inserted;

  rocksdb::WriteBatch batch;
  items_->AddPuts(cid, d, ids, vectors, &batch);
  items_->AddCount(cid, new_count, &batch);
  if (std::shared_ptr<const Tokenizer> tokenizer = collection.tokenizer.get()) {
    std::vector<int32_t> codes(static_cast<size_t>(n * tokenizer->levels()));
    tokenizer->Encode(vectors.data(), n, codes.data());
    if (auto status = sids_->AddUpserts(cid, *tokenizer, ids, codes, &batch); !status.ok()) {
      return status;
    }
  }
  // The index entries (list, PQ code) go in the same batch; the in-memory lists follow the
  // write, so a search after the acknowledgement sees the new vectors. The lists change only
  // under the write guard, so reading the index here needs no lock of its own.
  std::shared_ptr<ServingIndex> index = collection.index.get();
  IndexUpdate index_update;
  if (index != nullptr) {
    auto update = EncodeIndexEntries(index->index, d, ids, vectors);
    if (!update.ok()) return update.status();
    index_update = std::move(*update);
    for (size_t i = 0; i < index_update.ids.size(); ++i) {
      ivf_->AddEntry(cid, index->record.version(), index_update.ids[i], index_update.entries[i],
                     &batch);
    }
  }
  if (auto status = db_->Write(batch, "write items"); !status.ok()) return status;
  write->guard.MarkWritten();

  collection.item_count = new_count;
  if (index != nullptr) {
    std::unique_lock lock(index->mu);
    index->index.Remove(index_update.ids);
    for (size_t i = 0; i < index_update.ids.size(); ++i) {
      const IvfPqEncoded& entry = index_update.entries[i];
      // Cannot fail: the entry was made by this index and its id was just removed.
      index->index.AddEncoded(index_update.ids[i], entry.list, entry.code).IgnoreError();
    }
  }
  return UpsertResult{inserted, new_count};
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

  rocksdb::WriteBatch batch;
  for (uint64_t id : deleted) {
    items_->AddDelete(cid, id, &batch);
    ivf_->AddDelete(cid, id, &batch);  // the item's index entry, if any
  }
  items_->AddCount(cid, result.item_count, &batch);
  if (std::shared_ptr<const Tokenizer> tokenizer = collection.tokenizer.get()) {
    if (auto status = sids_->AddDeletes(cid, tokenizer->levels(), deleted, &batch); !status.ok()) {
      return status;
    }
  }
  if (auto status = db_->Write(batch, "delete items"); !status.ok()) return status;
  write->guard.MarkWritten();

  collection.item_count = result.item_count;
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
  auto found = items_->Get(*info, DistinctIds(ids));
  if (!found.ok()) return found.status();
  return GetResult{info->dimension, std::move(found->ids), std::move(found->vectors),
                   std::move(found->missing)};
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
