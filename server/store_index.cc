// Store: the IVF-PQ index (versions, per-item entries, the serving in-memory index, Search).
#include <algorithm>
#include <cstring>
#include <map>

#include "absl/strings/str_format.h"
#include "rocksdb/db.h"
#include "rocksdb/write_batch.h"
#include "server/index.h"
#include "server/store.h"
#include "server/store_internal.h"

namespace quantd {

using namespace store_internal;  // NOLINT: the key encodings shared with store.cc

namespace {

// Builds the serving index of `record` (model bytes included; cleared here) from its stored
// entries under prefix `cid`. DATA_LOSS on any inconsistency.
absl::StatusOr<std::shared_ptr<ServingIndex>> BuildServingIndex(rocksdb::DB* db,
                                                                rocksdb::ColumnFamilyHandle* ivf,
                                                                uint32_t cid,
                                                                storage::IndexRecord record) {
  auto index = IvfPqIndex::Deserialize(record.model());
  if (!index.ok()) {
    return absl::DataLossError(absl::StrCat("index model: ", index.status().message()));
  }
  auto serving = std::make_shared<ServingIndex>();
  serving->index = std::move(*index);
  record.clear_model();
  serving->record = std::move(record);
  const int64_t code_size = serving->index.code_size();
  const uint32_t version = serving->record.version();
  absl::Status entry_status;
  absl::Status status = ScanPrefix(
      db, ivf, CollectionPrefix(cid), [&](const rocksdb::Slice& key, const rocksdb::Slice& value) {
        const uint64_t id = ReadBigEndian64(key.data() + 4);
        uint32_t entry_version = 0;
        uint32_t list = 0;
        if (value.size() == static_cast<size_t>(8 + code_size)) {
          std::memcpy(&entry_version, value.data(), 4);
          std::memcpy(&list, value.data() + 4, 4);
        }
        if (value.size() != static_cast<size_t>(8 + code_size) || entry_version != version) {
          entry_status = absl::DataLossError(absl::StrFormat(
              "index entry of item %d is corrupt (%d bytes, version %d; expected %d bytes, "
              "version %d)",
              id, value.size(), entry_version, 8 + code_size, version));
          return false;
        }
        const auto* code = reinterpret_cast<const uint8_t*>(value.data() + 8);
        entry_status = serving->index.AddEncoded(
            id, list, absl::MakeConstSpan(code, static_cast<size_t>(code_size)));
        if (!entry_status.ok()) {
          entry_status = absl::DataLossError(
              absl::StrFormat("index entry of item %d: %s", id, entry_status.message()));
          return false;
        }
        return true;
      });
  if (!entry_status.ok()) return entry_status;
  if (!status.ok()) return status;
  return serving;
}

}  // namespace

absl::Status Store::LoadIndex(Collection& collection) {
  const uint32_t cid = collection.info.id;
  std::string version_bytes;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), meta_, IndexKey(cid), &version_bytes);
  if (s.IsNotFound()) return absl::OkStatus();
  if (!s.ok()) return FromRocks(s, "read index version");
  uint32_t version = 0;
  if (version_bytes.size() == 4) std::memcpy(&version, version_bytes.data(), 4);
  std::string blob;
  s = db_->Get(rocksdb::ReadOptions(), models_, IndexModelKey(cid, version), &blob);
  absl::StatusOr<std::shared_ptr<ServingIndex>> serving =
      absl::DataLossError(absl::StrFormat("index version %d is missing", version));
  if (s.ok()) {
    auto record = ParseIndexBlob(blob);
    serving = record.ok() ? BuildServingIndex(db_.get(), ivf_, cid, std::move(*record))
                          : absl::StatusOr<std::shared_ptr<ServingIndex>>(record.status());
  }
  std::lock_guard lock(collection.index_mu);
  if (serving.ok()) {
    collection.index = std::move(*serving);
  } else {
    // Only this collection's index calls (and its writes) fail; everything else keeps serving.
    collection.index_error =
        absl::DataLossError(absl::StrFormat("index of collection '%s' is unreadable: %s",
                                            collection.info.name, serving.status().message()));
  }
  return absl::OkStatus();
}

std::shared_ptr<ServingIndex> Store::CurrentIndex(const Collection& collection) const {
  std::lock_guard lock(collection.index_mu);
  return collection.index;
}

absl::StatusOr<std::shared_ptr<const ServingIndex>> Store::GetIndex(absl::string_view name) const {
  auto collection = FindOrNotFound(name);
  if (!collection.ok()) return collection.status();
  std::lock_guard lock((*collection)->index_mu);
  if (!(*collection)->index_error.ok()) return (*collection)->index_error;
  if ((*collection)->index == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrFormat("collection '%s' has no index yet: train one with TrainIndex", name));
  }
  return std::shared_ptr<const ServingIndex>((*collection)->index);
}

absl::StatusOr<Store::IndexUpdate> Store::AddIndexUpdates(const Collection& collection,
                                                          const ServingIndex& index,
                                                          absl::Span<const uint64_t> ids,
                                                          absl::Span<const float> vectors,
                                                          rocksdb::WriteBatch* batch) const {
  const int64_t d = collection.info.dimension;
  const uint32_t version = index.record.version();
  // Only the last row of an id counts (it is the vector that stays).
  std::map<uint64_t, size_t> last_row;
  for (size_t i = 0; i < ids.size(); ++i) last_row[ids[i]] = i;
  IndexUpdate update;
  update.ids.reserve(last_row.size());
  update.entries.reserve(last_row.size());
  for (const auto& [id, row] : last_row) {
    // The caller holds write_mu, the only place the lists change: reading needs no index lock.
    auto encoded = index.index.EncodeForList(vectors.subspan(row * d, static_cast<size_t>(d)));
    if (!encoded.ok()) return encoded.status();
    batch->Put(ivf_, ItemKey(collection.info.id, id),
               EncodeIndexEntry(version, encoded->list, encoded->code.data(),
                                static_cast<int64_t>(encoded->code.size())));
    update.ids.push_back(id);
    update.entries.push_back(std::move(*encoded));
  }
  return update;
}

absl::StatusOr<uint32_t> Store::CommitIndex(absl::string_view name, storage::IndexRecord record,
                                            IvfPqIndex trained, const ItemSet& items,
                                            const std::vector<int32_t>& lists,
                                            const std::vector<uint8_t>& codes) {
  auto found = FindOrNotFound(name);
  if (!found.ok()) return found.status();
  std::shared_ptr<Collection> collection = *found;
  const uint32_t cid = collection->info.id;
  const int64_t d = collection->info.dimension;
  const int64_t code_size = trained.code_size();
  if (trained.d() != d || trained.size() != 0 || lists.size() != items.ids.size() ||
      codes.size() != items.ids.size() * static_cast<size_t>(code_size)) {
    return absl::InternalError("index commit with inconsistent shapes");
  }

  std::lock_guard write_lock(collection->write_mu);
  if (collection->dropped || collection->info.id != items.info.id) {
    return absl::NotFoundError(absl::StrFormat("collection '%s' was dropped", name));
  }
  uint32_t old_version = 0;
  {
    std::string bytes;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), meta_, IndexKey(cid), &bytes);
    if (s.ok() && bytes.size() == 4) {
      std::memcpy(&old_version, bytes.data(), 4);
    } else if (!s.ok() && !s.IsNotFound()) {
      return FromRocks(s, "read index version");
    }
  }
  const uint32_t version = old_version + 1;
  record.set_version(version);
  record.set_model(trained.Serialize(/*include_lists=*/false));

  auto serving = std::make_shared<ServingIndex>();
  serving->index = std::move(trained);
  rocksdb::WriteBatch batch;
  batch.Put(models_, IndexModelKey(cid, version), SerializeIndexBlob(record));
  if (old_version > 0) batch.Delete(models_, IndexModelKey(cid, old_version));
  batch.Put(meta_, IndexKey(cid), EncodeU32(version));
  // Every item's entry is written anew below; nothing of the previous version may outlive it.
  batch.DeleteRange(ivf_, CollectionPrefix(cid), CollectionPrefix(cid + 1));

  // Every item stored now, under the write lock: the job's entry where the vector is the one it
  // encoded, else encoded here (items written while the job ran).
  const size_t row_bytes = static_cast<size_t>(d) * sizeof(float);
  absl::Status entry_status;
  absl::Status status = ScanPrefix(
      db_.get(), vectors_, CollectionPrefix(cid),
      [&](const rocksdb::Slice& key, const rocksdb::Slice& value) {
        const uint64_t id = ReadBigEndian64(key.data() + 4);
        const auto it = std::lower_bound(items.ids.begin(), items.ids.end(), id);
        const int64_t row = it - items.ids.begin();
        int64_t list = 0;
        const uint8_t* code = nullptr;
        IvfPqEncoded fresh;
        if (it != items.ids.end() && *it == id && value.size() == row_bytes &&
            std::memcmp(value.data(), items.vectors.data() + row * d, row_bytes) == 0) {
          list = lists[static_cast<size_t>(row)];
          code = codes.data() + row * code_size;
        } else {
          if (value.size() != row_bytes) {
            entry_status = absl::DataLossError(
                absl::StrFormat("item %d of collection '%s' holds %d bytes, expected %d", id, name,
                                value.size(), row_bytes));
            return false;
          }
          std::vector<float> vector(static_cast<size_t>(d));
          std::memcpy(vector.data(), value.data(), row_bytes);
          auto encoded = serving->index.EncodeForList(vector);
          if (!encoded.ok()) {
            entry_status = encoded.status();
            return false;
          }
          fresh = std::move(*encoded);
          list = fresh.list;
          code = fresh.code.data();
        }
        batch.Put(ivf_, ItemKey(cid, id), EncodeIndexEntry(version, list, code, code_size));
        entry_status = serving->index.AddEncoded(
            id, list, absl::MakeConstSpan(code, static_cast<size_t>(code_size)));
        return entry_status.ok();
      });
  if (!entry_status.ok()) return entry_status;
  if (!status.ok()) return status;

  rocksdb::WriteOptions write_options;
  write_options.sync = options_.sync;
  if (auto s = FromRocks(db_->Write(write_options, &batch), "commit index"); !s.ok()) return s;
  record.clear_model();
  serving->record = std::move(record);
  std::lock_guard lock(collection->index_mu);
  collection->index = std::move(serving);
  collection->index_error = absl::OkStatus();
  return version;
}

absl::StatusOr<Store::SearchResult> Store::Search(absl::string_view name,
                                                  absl::Span<const float> queries, int64_t k,
                                                  int64_t nprobe, int64_t refine) const {
  auto found = FindOrNotFound(name);
  if (!found.ok()) return found.status();
  const CollectionInfo& info = (*found)->info;
  const int64_t d = info.dimension;
  if (queries.empty()) {
    return absl::InvalidArgumentError("queries is empty: give at least one query vector");
  }
  if (queries.size() % static_cast<size_t>(d) != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("queries has %d values, not a multiple of dimension %d of collection '%s'",
                        queries.size(), d, name));
  }
  const int64_t nq = static_cast<int64_t>(queries.size()) / d;
  if (nq > kMaxSearchQueries) {
    return absl::InvalidArgumentError(
        absl::StrFormat("queries holds %d vectors, at most %d per request", nq, kMaxSearchQueries));
  }
  if (k < 1 || k > kMaxSearchK) {
    return absl::InvalidArgumentError(absl::StrFormat("k %d is outside 1..%d", k, kMaxSearchK));
  }
  if (nq * k > kMaxSearchResults) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%d queries x k %d = %d results exceed %d per request; split the batch", nq,
                        k, nq * k, kMaxSearchResults));
  }
  if (nprobe < 0) return absl::InvalidArgumentError(absl::StrFormat("nprobe %d < 0", nprobe));
  if (refine < 0 || refine * k > kMaxRefineCandidates) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "refine %d: refine x k (%d) must be at most %d", refine, refine * k, kMaxRefineCandidates));
  }
  if (auto status = CheckVectors(queries.data(), nq, d, info.metric, "queries"); !status.ok()) {
    return status;
  }
  auto serving = GetIndex(name);
  if (!serving.ok()) return serving.status();
  const ServingIndex& index = **serving;
  const int64_t nlist = index.index.nlist();

  IvfPqSearchParams params;
  params.k = k;
  params.nprobe = nprobe == 0 ? std::max<int64_t>(1, nlist / 8) : std::min(nprobe, nlist);
  params.refine = std::max<int64_t>(1, refine);
  params.num_threads = 1;
  if (params.refine > 1) {
    const uint32_t cid = info.id;
    const size_t row_bytes = static_cast<size_t>(d) * sizeof(float);
    params.fetch = [this, cid, row_bytes](uint64_t id, float* out) {
      rocksdb::PinnableSlice value;
      rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), vectors_, ItemKey(cid, id), &value);
      if (!s.ok() || value.size() != row_bytes) return false;  // deleted meanwhile: dropped
      std::memcpy(out, value.data(), row_bytes);
      return true;
    };
  }
  SearchResult result;
  result.index_version = index.record.version();
  result.nprobe = params.nprobe;
  std::shared_lock lock(index.mu);
  auto neighbors = index.index.Search(queries, params);
  if (!neighbors.ok()) return neighbors.status();
  result.neighbors = std::move(*neighbors);
  return result;
}

}  // namespace quantd
