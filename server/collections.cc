#include "server/collections.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "quantd/storage/records.pb.h"
#include "server/clock.h"
#include "server/keys.h"
#include "server/metric_proto.h"
#include "server/sid_store.h"

namespace quantd {
namespace {

absl::Status NotFound(absl::string_view name) {
  return absl::NotFoundError(absl::StrFormat("collection '%s' does not exist", name));
}

// Schema 1 (quantd 0.1.0) stored core's Metric enum value in CollectionRecord.metric.
absl::StatusOr<v1::Metric> LegacyMetric(const storage::CollectionRecord& record) {
  switch (record.metric()) {
    case 0:
      return v1::METRIC_L2;
    case 1:
      return v1::METRIC_INNER_PRODUCT;
    case 2:
      return v1::METRIC_COSINE;
    default:
      return absl::DataLossError(
          absl::StrFormat("collection record '%s' of a 0.1.0 database holds metric %d, not 0..2",
                          record.name(), record.metric()));
  }
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

absl::StatusOr<std::unique_ptr<CollectionRegistry>> CollectionRegistry::Load(
    Db* db, int64_t max_collections) {
  auto registry = std::unique_ptr<CollectionRegistry>(new CollectionRegistry(db, max_collections));
  if (auto status = registry->LoadAll(); !status.ok()) return status;
  return registry;
}

namespace {

// The stored record of a collection.
storage::CollectionRecord RecordOf(const CollectionInfo& info) {
  storage::CollectionRecord record;
  record.set_name(info.name);
  record.set_id(info.id);
  record.set_dimension(static_cast<uint32_t>(info.dimension));
  record.set_metric(MetricToProto(info.metric));
  record.set_create_time_ms(info.create_time_ms);
  record.set_keep_tokenizer_versions(info.keep_tokenizer_versions);
  return record;
}

}  // namespace

absl::Status CollectionRegistry::LoadAll() {
  auto next_id =
      db_->Get(ColumnFamily::kMeta, keys::kNextCollectionIdKey, "read next_collection_id");
  if (!next_id.ok()) return next_id.status();
  if (next_id->has_value()) {
    std::optional<uint32_t> value = keys::DecodeU32(**next_id);
    if (!value) return absl::DataLossError("meta next_collection_id is corrupt");
    next_collection_id_ = *value;
  }
  auto schema = db_->Get(ColumnFamily::kMeta, keys::kSchemaVersionKey, "read schema_version");
  if (!schema.ok()) return schema.status();
  // No schema key: a new database, or one written by quantd 0.1.0 (schema 1).
  uint32_t schema_version = next_id->has_value() ? 1 : keys::kSchemaVersion;
  if (schema->has_value()) {
    std::optional<uint32_t> value = keys::DecodeU32(**schema);
    if (!value) return absl::DataLossError("meta schema_version is corrupt");
    schema_version = *value;
  }
  if (schema_version > keys::kSchemaVersion || schema_version < 1) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "the database has schema version %d; this quantd reads versions 1..%d (a newer quantd "
        "wrote it)",
        schema_version, keys::kSchemaVersion));
  }

  // Records to rewrite in the current schema, in the same batch that records the version.
  rocksdb::WriteBatch upgrade;
  absl::Status status = db_->ScanPrefix(
      ColumnFamily::kMeta, keys::kCollectionPrefix,
      [&](absl::string_view key, absl::string_view value) -> absl::Status {
        storage::CollectionRecord record;
        if (!record.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
          return absl::DataLossError(absl::StrCat("collection record '", key, "' is corrupt"));
        }
        if (schema_version == 1) {
          auto metric = LegacyMetric(record);
          if (!metric.ok()) return metric.status();
          record.set_metric(*metric);
          upgrade.Put(db_->handle(ColumnFamily::kMeta), rocksdb::Slice(key.data(), key.size()),
                      record.SerializeAsString());
        }
        auto metric = MetricFromProto(record.metric());
        if (!metric.ok()) {
          return absl::DataLossError(absl::StrFormat("collection record '%s' is corrupt: %s",
                                                     record.name(), metric.status().message()));
        }
        auto collection = std::make_shared<Collection>();
        collection->info.name = record.name();
        collection->info.id = record.id();
        collection->info.dimension = record.dimension();
        collection->info.metric = *metric;
        collection->info.create_time_ms = record.create_time_ms();
        collection->info.keep_tokenizer_versions = record.keep_tokenizer_versions();
        collection->keep_tokenizer_versions = record.keep_tokenizer_versions();
        if (schema_version < 3) {
          if (auto s = MigrateTokenizerRowsToSchema3(db_, record.id()); !s.ok()) return s;
        }
        auto count = db_->Get(ColumnFamily::kMeta, keys::CountKey(record.id()), "read item count");
        if (!count.ok()) return count.status();
        if (count->has_value()) {
          std::optional<uint64_t> n = keys::DecodeU64(**count);
          if (!n) {
            return absl::DataLossError(
                absl::StrCat("item count of '", record.name(), "' is corrupt"));
          }
          collection->item_count = *n;
        }
        collections_[record.name()] = std::move(collection);
        return absl::OkStatus();
      });
  if (!status.ok()) return status;
  if (schema_version != keys::kSchemaVersion || !schema->has_value()) {
    upgrade.Put(db_->handle(ColumnFamily::kMeta), keys::kSchemaVersionKey,
                keys::EncodeU32(keys::kSchemaVersion));
    if (auto s = db_->Write(upgrade, "record the schema version"); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<CollectionInfo> CollectionRegistry::Create(absl::string_view name, int64_t dimension,
                                                          Metric metric,
                                                          uint32_t keep_tokenizer_versions) {
  if (auto status = ValidateCollectionName(name); !status.ok()) return status;
  if (keep_tokenizer_versions > kMaxKeptTokenizerVersions) {
    return absl::InvalidArgumentError(
        absl::StrFormat("keep_tokenizer_versions %d is outside 1..%d (0: the server's default)",
                        keep_tokenizer_versions, kMaxKeptTokenizerVersions));
  }
  if (dimension < 1 || dimension > kMaxDimension) {
    return absl::InvalidArgumentError(
        absl::StrFormat("dimension %d is outside 1..%d", dimension, kMaxDimension));
  }
  std::unique_lock lock(mu_);
  if (collections_.contains(name)) {
    return absl::AlreadyExistsError(absl::StrFormat("collection '%s' already exists", name));
  }
  if (static_cast<int64_t>(collections_.size()) >= max_collections_) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("collection '%s' not created: %d collections exist, the limit "
                        "(--max_collections) is %d",
                        name, collections_.size(), max_collections_));
  }
  auto collection = std::make_shared<Collection>();
  CollectionInfo& info = collection->info;
  info.name = std::string(name);
  info.id = next_collection_id_;
  info.dimension = dimension;
  info.metric = metric;
  info.create_time_ms = NowMs();
  info.keep_tokenizer_versions = keep_tokenizer_versions;
  collection->keep_tokenizer_versions = keep_tokenizer_versions;

  const storage::CollectionRecord record = RecordOf(info);
  const uint32_t next_id = next_collection_id_ + 1;

  rocksdb::WriteBatch batch;
  rocksdb::ColumnFamilyHandle* meta = db_->handle(ColumnFamily::kMeta);
  batch.Put(meta, keys::CollectionRecordKey(name), record.SerializeAsString());
  batch.Put(meta, keys::CountKey(info.id), keys::EncodeU64(0));
  batch.Put(meta, keys::kNextCollectionIdKey, keys::EncodeU32(next_id));
  if (auto status = db_->Write(batch, "create collection"); !status.ok()) return status;
  next_collection_id_ = next_id;
  collections_[info.name] = collection;
  return info;
}

std::vector<CollectionInfo> CollectionRegistry::List() const {
  std::shared_lock lock(mu_);
  std::vector<CollectionInfo> out;
  out.reserve(collections_.size());
  for (const auto& [name, collection] : collections_) out.push_back(collection->Snapshot());
  return out;
}

std::vector<std::shared_ptr<Collection>> CollectionRegistry::All() const {
  std::shared_lock lock(mu_);
  std::vector<std::shared_ptr<Collection>> out;
  out.reserve(collections_.size());
  for (const auto& [name, collection] : collections_) out.push_back(collection);
  return out;
}

absl::StatusOr<std::shared_ptr<Collection>> CollectionRegistry::Find(
    absl::string_view name, absl::string_view field) const {
  if (auto status = ValidateCollectionName(name, field); !status.ok()) return status;
  std::shared_lock lock(mu_);
  auto it = collections_.find(name);
  if (it == collections_.end()) return NotFound(name);
  return it->second;
}

absl::StatusOr<CollectionInfo> CollectionRegistry::Describe(absl::string_view name,
                                                            absl::string_view field) const {
  auto collection = Find(name, field);
  if (!collection.ok()) return collection.status();
  return (*collection)->Snapshot();
}

absl::StatusOr<WriteGuard> CollectionRegistry::LockForWrite(absl::string_view name,
                                                            uint32_t expected_id) const {
  auto collection = Find(name);
  if (!collection.ok()) return collection.status();
  WriteGuard guard(std::move(*collection));
  if (guard.collection().dropped || (expected_id != 0 && guard.info().id != expected_id)) {
    return absl::NotFoundError(absl::StrFormat("collection '%s' was dropped", name));
  }
  return guard;
}

absl::Status CollectionRegistry::SetKeepTokenizerVersions(const WriteGuard& guard, uint32_t keep) {
  const CollectionInfo& info = guard.info();
  storage::CollectionRecord record = RecordOf(info);
  record.set_keep_tokenizer_versions(keep);
  rocksdb::WriteBatch batch;
  batch.Put(db_->handle(ColumnFamily::kMeta), keys::CollectionRecordKey(info.name),
            record.SerializeAsString());
  if (auto status = db_->Write(batch, "set tokenizer retention"); !status.ok()) return status;
  guard.collection().keep_tokenizer_versions = keep;
  return absl::OkStatus();
}

void CollectionRegistry::AddDrop(const CollectionInfo& info, rocksdb::WriteBatch* batch) const {
  rocksdb::ColumnFamilyHandle* meta = db_->handle(ColumnFamily::kMeta);
  batch->Delete(meta, keys::CollectionRecordKey(info.name));
  batch->Delete(meta, keys::CountKey(info.id));
}

void CollectionRegistry::Forget(WriteGuard& guard) {
  guard.collection().dropped = true;
  std::unique_lock lock(mu_);
  collections_.erase(guard.info().name);
}

}  // namespace quantd
