#include "server/store.h"

#include <chrono>
#include <cstring>
#include <unordered_set>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "quantd/storage/records.pb.h"
#include "rocksdb/db.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/options.h"
#include "rocksdb/table.h"
#include "rocksdb/write_batch.h"
#include "server/store_internal.h"

namespace quantd {

using namespace store_internal;  // NOLINT: the key encodings shared with store_sids.cc

namespace {

absl::Status CheckIdCount(size_t n, absl::string_view collection) {
  if (n == 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ids is empty: name at least one item of collection '%s'", collection));
  }
  if (n > Store::kMaxIdsPerCall) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ids has %d entries, more than the %d allowed per call", n, Store::kMaxIdsPerCall));
  }
  return absl::OkStatus();
}

// Returns the distinct ids of `ids` in first-occurrence order.
std::vector<uint64_t> Distinct(absl::Span<const uint64_t> ids) {
  std::vector<uint64_t> out;
  out.reserve(ids.size());
  std::unordered_set<uint64_t> seen;
  seen.reserve(ids.size() * 2);
  for (uint64_t id : ids) {
    if (seen.insert(id).second) out.push_back(id);
  }
  return out;
}

}  // namespace

absl::Status ValidateCollectionName(absl::string_view name, absl::string_view field) {
  if (name.empty()) return absl::InvalidArgumentError(absl::StrCat(field, " is empty"));
  if (name.size() > kMaxCollectionNameLength) {
    return absl::InvalidArgumentError(absl::StrFormat("%s '%s...' has %d characters, at most %d",
                                                      field, name.substr(0, 32), name.size(),
                                                      kMaxCollectionNameLength));
  }
  for (size_t i = 0; i < name.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(name[i]);
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!(alnum || (i > 0 && (c == '_' || c == '-' || c == '.')))) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s '%s' is invalid at position %d: use [A-Za-z0-9_.-], starting with a letter or digit",
          field, absl::CHexEscape(name), i));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const Options& options) {
  auto store = std::unique_ptr<Store>(new Store());
  store->options_ = options;

  rocksdb::Options db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  db_options.IncreaseParallelism(2);
  db_options.max_background_jobs = 2;
  db_options.keep_log_file_num = 4;

  rocksdb::ColumnFamilyOptions meta_options;
  rocksdb::ColumnFamilyOptions vector_options;
  rocksdb::BlockBasedTableOptions table;
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  vector_options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  vector_options.compression = rocksdb::kNoCompression;  // float payloads do not compress
  vector_options.write_buffer_size = 64 << 20;

  // Open every family the database has (a newer server may have added some) plus ours.
  std::vector<std::string> families;
  rocksdb::Status listed = rocksdb::DB::ListColumnFamilies(db_options, options.path, &families);
  if (!listed.ok()) families = {rocksdb::kDefaultColumnFamilyName};
  for (const char* name :
       {kMetaFamily, kVectorsFamily, kModelsFamily, kCodesFamily, kSidsFamily, kIvfFamily}) {
    if (std::find(families.begin(), families.end(), name) == families.end()) {
      families.push_back(name);
    }
  }
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  for (const std::string& name : families) {
    descriptors.emplace_back(name, name == kVectorsFamily ? vector_options : meta_options);
  }
  rocksdb::DB* db = nullptr;
  rocksdb::Status s =
      rocksdb::DB::Open(db_options, options.path, descriptors, &store->handles_, &db);
  if (s.IsIOError() && s.ToString().find("lock") != std::string::npos) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "data_dir '%s' is in use by another quantd process (%s)", options.path, s.ToString()));
  }
  if (!s.ok()) return FromRocks(s, absl::StrCat("open database ", options.path));
  store->db_.reset(db);
  for (size_t i = 0; i < families.size(); ++i) {
    if (families[i] == kMetaFamily) store->meta_ = store->handles_[i];
    if (families[i] == kVectorsFamily) store->vectors_ = store->handles_[i];
    if (families[i] == kModelsFamily) store->models_ = store->handles_[i];
    if (families[i] == kCodesFamily) store->codes_ = store->handles_[i];
    if (families[i] == kSidsFamily) store->sids_ = store->handles_[i];
    if (families[i] == kIvfFamily) store->ivf_ = store->handles_[i];
  }
  if (auto status = store->Load(); !status.ok()) return status;
  return store;
}

Store::~Store() {
  if (db_ == nullptr) return;
  db_->FlushWAL(/*sync=*/true).PermitUncheckedError();
  for (rocksdb::ColumnFamilyHandle* handle : handles_) {
    db_->DestroyColumnFamilyHandle(handle).PermitUncheckedError();
  }
  db_->Close().PermitUncheckedError();
}

absl::Status Store::Load() {
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), meta_, kNextCollectionIdKey, &value);
  if (s.ok()) {
    if (value.size() != 4) return absl::DataLossError("meta next_collection_id is corrupt");
    std::memcpy(&next_collection_id_, value.data(), 4);
  } else if (!s.IsNotFound()) {
    return FromRocks(s, "read next_collection_id");
  }

  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), meta_));
  for (it->Seek(kCollectionPrefix); it->Valid() && it->key().starts_with(kCollectionPrefix);
       it->Next()) {
    storage::CollectionRecord record;
    if (!record.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      return absl::DataLossError(
          absl::StrCat("collection record '", it->key().ToString(), "' is corrupt"));
    }
    auto collection = std::make_shared<Collection>();
    collection->info.name = record.name();
    collection->info.id = record.id();
    collection->info.dimension = record.dimension();
    collection->info.metric = static_cast<Metric>(record.metric());
    collection->info.create_time_ms = record.create_time_ms();
    std::string count;
    rocksdb::Status cs = db_->Get(rocksdb::ReadOptions(), meta_, CountKey(record.id()), &count);
    if (cs.ok() && count.size() == 8) {
      uint64_t n = 0;
      std::memcpy(&n, count.data(), 8);
      collection->item_count = n;
    } else if (!cs.IsNotFound()) {
      return absl::DataLossError(absl::StrCat("item count of '", record.name(), "' is corrupt"));
    }
    if (auto status = LoadTokenizer(*collection); !status.ok()) return status;
    if (auto status = LoadIndex(*collection); !status.ok()) return status;
    collections_[record.name()] = std::move(collection);
  }
  return FromRocks(it->status(), "scan collections");
}

std::shared_ptr<Store::Collection> Store::Find(absl::string_view name) const {
  std::shared_lock lock(mu_);
  auto it = collections_.find(name);
  return it == collections_.end() ? nullptr : it->second;
}

absl::StatusOr<std::shared_ptr<Store::Collection>> Store::FindOrNotFound(
    absl::string_view name) const {
  if (auto status = ValidateCollectionName(name, "collection"); !status.ok()) return status;
  std::shared_ptr<Collection> collection = Find(name);
  if (collection == nullptr) {
    return absl::NotFoundError(absl::StrFormat("collection '%s' does not exist", name));
  }
  return collection;
}

absl::StatusOr<CollectionInfo> Store::CreateCollection(absl::string_view name, int64_t dimension,
                                                       Metric metric) {
  if (auto status = ValidateCollectionName(name); !status.ok()) return status;
  if (dimension < 1 || dimension > kMaxDimension) {
    return absl::InvalidArgumentError(
        absl::StrFormat("dimension %d is outside 1..%d", dimension, kMaxDimension));
  }
  std::unique_lock lock(mu_);
  if (collections_.contains(name)) {
    return absl::AlreadyExistsError(absl::StrFormat("collection '%s' already exists", name));
  }
  if (static_cast<int64_t>(collections_.size()) >= options_.max_collections) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("collection '%s' not created: %d collections exist, the limit "
                        "(--max_collections) is %d",
                        name, collections_.size(), options_.max_collections));
  }
  auto collection = std::make_shared<Collection>();
  CollectionInfo& info = collection->info;
  info.name = std::string(name);
  info.id = next_collection_id_;
  info.dimension = dimension;
  info.metric = metric;
  info.create_time_ms = NowMs();

  storage::CollectionRecord record;
  record.set_name(info.name);
  record.set_id(info.id);
  record.set_dimension(static_cast<uint32_t>(dimension));
  record.set_metric(static_cast<int32_t>(metric));
  record.set_create_time_ms(info.create_time_ms);
  const uint32_t next_id = next_collection_id_ + 1;
  std::string next_id_bytes(4, '\0');
  std::memcpy(next_id_bytes.data(), &next_id, 4);

  rocksdb::WriteBatch batch;
  batch.Put(meta_, CollectionKey(name), record.SerializeAsString());
  batch.Put(meta_, CountKey(info.id), EncodeU64(0));
  batch.Put(meta_, kNextCollectionIdKey, next_id_bytes);
  rocksdb::WriteOptions write_options;
  write_options.sync = options_.sync;
  if (auto status = FromRocks(db_->Write(write_options, &batch), "create collection");
      !status.ok()) {
    return status;
  }
  next_collection_id_ = next_id;
  collections_[info.name] = collection;
  return info;
}

std::vector<CollectionInfo> Store::ListCollections() const {
  std::shared_lock lock(mu_);
  std::vector<CollectionInfo> out;
  out.reserve(collections_.size());
  for (const auto& [name, collection] : collections_) {
    CollectionInfo info = collection->info;
    info.item_count = collection->item_count.load();
    out.push_back(std::move(info));
  }
  return out;
}

absl::StatusOr<CollectionInfo> Store::DescribeCollection(absl::string_view name) const {
  auto collection = FindOrNotFound(name);
  if (!collection.ok()) return collection.status();
  CollectionInfo info = (*collection)->info;
  info.item_count = (*collection)->item_count.load();
  return info;
}

absl::StatusOr<uint64_t> Store::DropCollection(absl::string_view name) {
  auto found = FindOrNotFound(name);
  if (!found.ok()) return found.status();
  std::shared_ptr<Collection> collection = *found;
  std::lock_guard write_lock(collection->write_mu);
  if (collection->dropped) {
    return absl::NotFoundError(absl::StrFormat("collection '%s' does not exist", name));
  }
  const uint32_t cid = collection->info.id;
  rocksdb::WriteBatch batch;
  batch.Delete(meta_, CollectionKey(name));
  batch.Delete(meta_, CountKey(cid));
  batch.Delete(meta_, TokenizerKey(cid));
  batch.Delete(meta_, IndexKey(cid));
  for (rocksdb::ColumnFamilyHandle* family : {vectors_, models_, codes_, sids_, ivf_}) {
    batch.DeleteRange(family, CollectionPrefix(cid), CollectionPrefix(cid + 1));
  }
  rocksdb::WriteOptions write_options;
  write_options.sync = options_.sync;
  if (auto status = FromRocks(db_->Write(write_options, &batch), "drop collection"); !status.ok()) {
    return status;
  }
  collection->dropped = true;
  {
    std::unique_lock lock(mu_);
    collections_.erase(collection->info.name);
  }
  // Reclaim the space of the dropped rows in the background of RocksDB's own compactions.
  const std::string begin = CollectionPrefix(cid);
  const std::string end = CollectionPrefix(cid + 1);
  rocksdb::Slice begin_slice(begin), end_slice(end);
  for (rocksdb::ColumnFamilyHandle* family : {vectors_, codes_, sids_, ivf_}) {
    db_->SuggestCompactRange(family, &begin_slice, &end_slice).PermitUncheckedError();
  }
  return collection->item_count.load();
}

absl::StatusOr<Store::UpsertResult> Store::Upsert(absl::string_view name,
                                                  absl::Span<const uint64_t> ids,
                                                  absl::Span<const float> vectors) {
  auto found = FindOrNotFound(name);
  if (!found.ok()) return found.status();
  std::shared_ptr<Collection> collection = *found;
  const CollectionInfo& info = collection->info;
  const int64_t n = static_cast<int64_t>(ids.size());
  if (n == 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ids is empty: a batch for collection '%s' needs at least one row", name));
  }
  if (ids.size() > kMaxIdsPerCall) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ids has %d rows, more than the %d allowed per batch", ids.size(), kMaxIdsPerCall));
  }
  if (static_cast<int64_t>(vectors.size()) != n * info.dimension) {
    return absl::InvalidArgumentError(
        absl::StrFormat("vectors has %d values; %d ids x dimension %d of collection '%s' needs %d",
                        vectors.size(), n, info.dimension, name, n * info.dimension));
  }
  if (auto status = CheckVectors(vectors.data(), n, info.dimension, info.metric); !status.ok()) {
    return status;
  }

  std::lock_guard write_lock(collection->write_mu);
  if (collection->dropped) {
    return absl::NotFoundError(absl::StrFormat("collection '%s' was dropped", name));
  }
  {
    // Writing without the SIDs of an unreadable tokenizer would leave them inconsistent.
    std::lock_guard lock(collection->tokenizer_mu);
    if (!collection->tokenizer_error.ok()) return collection->tokenizer_error;
  }
  {
    // Likewise the entries of an unreadable index.
    std::lock_guard lock(collection->index_mu);
    if (!collection->index_error.ok()) return collection->index_error;
  }
  // Which ids are new decides the item count written in the same batch.
  const std::vector<uint64_t> distinct = Distinct(ids);
  std::vector<std::string> keys;
  keys.reserve(distinct.size());
  for (uint64_t id : distinct) keys.push_back(ItemKey(info.id, id));
  auto [values, statuses] = MultiGet(db_.get(), vectors_, keys);
  uint64_t inserted = 0;
  for (const rocksdb::Status& s : statuses) {
    if (s.IsNotFound()) {
      ++inserted;
    } else if (!s.ok()) {
      return FromRocks(s, "read existing items");
    }
  }

  rocksdb::WriteBatch batch;
  const size_t row_bytes = static_cast<size_t>(info.dimension) * sizeof(float);
  for (int64_t i = 0; i < n; ++i) {
    batch.Put(vectors_, ItemKey(info.id, ids[i]),
              rocksdb::Slice(reinterpret_cast<const char*>(vectors.data() + i * info.dimension),
                             row_bytes));
  }
  if (std::shared_ptr<const Tokenizer> tokenizer = CurrentTokenizer(*collection)) {
    std::vector<int32_t> codes(static_cast<size_t>(n * tokenizer->levels()));
    tokenizer->Encode(vectors.data(), n, codes.data());
    if (auto status = AddSidUpdates(*collection, *tokenizer, ids, codes, &batch); !status.ok()) {
      return status;
    }
  }
  // The index entries (list, PQ code) go in the same batch; the in-memory lists follow the
  // write, so a search after the acknowledgement sees the new vectors.
  std::shared_ptr<ServingIndex> index = CurrentIndex(*collection);
  IndexUpdate index_update;
  if (index != nullptr) {
    auto update = AddIndexUpdates(*collection, *index, ids, vectors, &batch);
    if (!update.ok()) return update.status();
    index_update = std::move(*update);
  }
  const uint64_t new_count = collection->item_count.load() + inserted;
  batch.Put(meta_, CountKey(info.id), EncodeU64(new_count));
  rocksdb::WriteOptions write_options;
  write_options.sync = options_.sync;
  if (auto status = FromRocks(db_->Write(write_options, &batch), "write items"); !status.ok()) {
    return status;
  }
  collection->item_count = new_count;
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

absl::StatusOr<Store::DeleteResult> Store::Delete(absl::string_view name,
                                                  absl::Span<const uint64_t> ids) {
  auto found = FindOrNotFound(name);
  if (!found.ok()) return found.status();
  if (auto status = CheckIdCount(ids.size(), name); !status.ok()) return status;
  std::shared_ptr<Collection> collection = *found;
  const uint32_t cid = collection->info.id;

  std::lock_guard write_lock(collection->write_mu);
  if (collection->dropped) {
    return absl::NotFoundError(absl::StrFormat("collection '%s' was dropped", name));
  }
  {
    // Deleting without the SIDs of an unreadable tokenizer would leave them behind.
    std::lock_guard lock(collection->tokenizer_mu);
    if (!collection->tokenizer_error.ok()) return collection->tokenizer_error;
  }
  {
    std::lock_guard lock(collection->index_mu);
    if (!collection->index_error.ok()) return collection->index_error;
  }
  const std::vector<uint64_t> distinct = Distinct(ids);
  std::vector<std::string> keys;
  keys.reserve(distinct.size());
  for (uint64_t id : distinct) keys.push_back(ItemKey(cid, id));
  auto [values, statuses] = MultiGet(db_.get(), vectors_, keys);

  DeleteResult result;
  rocksdb::WriteBatch batch;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (statuses[i].IsNotFound()) {
      ++result.missing;
    } else if (!statuses[i].ok()) {
      return FromRocks(statuses[i], "read items to delete");
    } else {
      ++result.deleted;
      batch.Delete(vectors_, keys[i]);
      batch.Delete(ivf_, keys[i]);  // the item's index entry, if any
    }
  }
  result.item_count = collection->item_count.load() - result.deleted;
  if (result.deleted > 0) {
    if (auto status = AddSidDeletes(*collection, distinct, &batch); !status.ok()) return status;
    batch.Put(meta_, CountKey(cid), EncodeU64(result.item_count));
    rocksdb::WriteOptions write_options;
    write_options.sync = options_.sync;
    if (auto status = FromRocks(db_->Write(write_options, &batch), "delete items"); !status.ok()) {
      return status;
    }
    collection->item_count = result.item_count;
    if (std::shared_ptr<ServingIndex> index = CurrentIndex(*collection)) {
      std::unique_lock lock(index->mu);
      index->index.Remove(distinct);
    }
  }
  return result;
}

absl::StatusOr<Store::GetResult> Store::Get(absl::string_view name,
                                            absl::Span<const uint64_t> ids) const {
  auto found = FindOrNotFound(name);
  if (!found.ok()) return found.status();
  if (auto status = CheckIdCount(ids.size(), name); !status.ok()) return status;
  const CollectionInfo& info = (*found)->info;
  const std::vector<uint64_t> distinct = Distinct(ids);
  std::vector<std::string> keys;
  keys.reserve(distinct.size());
  for (uint64_t id : distinct) keys.push_back(ItemKey(info.id, id));
  auto [values, statuses] = MultiGet(db_.get(), vectors_, keys);

  GetResult result;
  result.dimension = info.dimension;
  const size_t row_bytes = static_cast<size_t>(info.dimension) * sizeof(float);
  for (size_t i = 0; i < keys.size(); ++i) {
    if (statuses[i].IsNotFound()) {
      result.missing.push_back(distinct[i]);
      continue;
    }
    if (!statuses[i].ok()) return FromRocks(statuses[i], "read items");
    if (values[i].size() != row_bytes) {
      return absl::DataLossError(
          absl::StrFormat("item %d of collection '%s' holds %d bytes, expected %d", distinct[i],
                          name, values[i].size(), row_bytes));
    }
    result.ids.push_back(distinct[i]);
    const size_t offset = result.vectors.size();
    result.vectors.resize(offset + static_cast<size_t>(info.dimension));
    std::memcpy(result.vectors.data() + offset, values[i].data(), row_bytes);
  }
  return result;
}

Store::DbFigures Store::GetDbFigures() const {
  const auto aggregated = [this](const std::string& property) {
    uint64_t value = 0;
    return db_->GetAggregatedIntProperty(property, &value) ? static_cast<double>(value) : 0.0;
  };
  DbFigures figures;
  figures.live_sst_bytes = aggregated(rocksdb::DB::Properties::kLiveSstFilesSize);
  figures.memtable_bytes = aggregated(rocksdb::DB::Properties::kCurSizeAllMemTables);
  figures.pending_compaction_bytes =
      aggregated(rocksdb::DB::Properties::kEstimatePendingCompactionBytes);
  uint64_t running = 0;
  if (db_->GetIntProperty(rocksdb::DB::Properties::kNumRunningCompactions, &running)) {
    figures.running_compactions = static_cast<double>(running);
  }
  return figures;
}

}  // namespace quantd
