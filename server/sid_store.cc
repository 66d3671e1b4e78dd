#include "server/sid_store.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <set>

#include "absl/strings/str_format.h"
#include "server/keys.h"
#include "server/tokenizer.h"

namespace quantd {
namespace {

// An item's SID as stored in the codes family: uint32 LE version, L codes, suffix.
using SidValue = StoredSid;

std::string EncodeSidValue(uint32_t version, const int32_t* codes, int64_t levels,
                           uint32_t suffix) {
  std::string out(static_cast<size_t>(4 * (levels + 2)), '\0');
  std::memcpy(out.data(), &version, 4);
  std::memcpy(out.data() + 4, codes, static_cast<size_t>(4 * levels));
  std::memcpy(out.data() + 4 * (levels + 1), &suffix, 4);
  return out;
}

absl::StatusOr<SidValue> DecodeSidValue(absl::string_view value, int64_t levels, uint64_t id) {
  if (value.size() != static_cast<size_t>(4 * (levels + 2))) {
    return absl::DataLossError(absl::StrFormat("SID of item %d holds %d bytes, expected %d", id,
                                               value.size(), 4 * (levels + 2)));
  }
  SidValue sid;
  std::memcpy(&sid.version, value.data(), 4);
  sid.codes.resize(static_cast<size_t>(levels));
  std::memcpy(sid.codes.data(), value.data() + 4, static_cast<size_t>(4 * levels));
  std::memcpy(&sid.suffix, value.data() + 4 * (levels + 1), 4);
  return sid;
}

// Decodes an item's SID read under `tokenizer`'s version: a row holding another version is
// corrupt.
absl::StatusOr<SidValue> DecodeCurrent(absl::string_view value, const Tokenizer& tokenizer,
                                       uint64_t id, absl::string_view collection) {
  auto sid = DecodeSidValue(value, tokenizer.levels(), id);
  if (sid.ok() && sid->version != tokenizer.version()) {
    return absl::DataLossError(
        absl::StrFormat("SID of item %d of collection '%s' under version %d holds version %d", id,
                        collection, tokenizer.version(), sid->version));
  }
  return sid;
}

std::string SidKey(uint32_t cid, uint32_t version, const int32_t* codes, int64_t levels,
                   uint32_t suffix) {
  std::string key = keys::SidPrefix(cid, version, codes, levels);
  keys::AppendBigEndian32(&key, suffix);
  return key;
}

void AppendSid(const SidValue& sid, uint64_t id, SidList* list) {
  list->largest_suffix = std::max(list->largest_suffix, sid.suffix);
  list->ids.push_back(id);
  list->codes.insert(list->codes.end(), sid.codes.begin(), sid.codes.end());
  list->suffixes.push_back(sid.suffix);
}

}  // namespace

absl::StatusOr<storage::TokenizerVersionsRecord> SidStore::ReadVersions(uint32_t cid) const {
  storage::TokenizerVersionsRecord record;
  auto bytes =
      db_->Get(ColumnFamily::kMeta, keys::TokenizerVersionsKey(cid), "read tokenizer versions");
  if (!bytes.ok()) return bytes.status();
  if (bytes->has_value() && !record.ParseFromString(**bytes)) {
    return absl::DataLossError("tokenizer versions record is corrupt");
  }
  if (record.next_version() == 0) record.set_next_version(1);
  return record;
}

void SidStore::AddVersions(uint32_t cid, const storage::TokenizerVersionsRecord& record,
                           rocksdb::WriteBatch* batch) const {
  batch->Put(db_->handle(ColumnFamily::kMeta), keys::TokenizerVersionsKey(cid),
             record.SerializeAsString());
}

absl::StatusOr<std::shared_ptr<const Tokenizer>> SidStore::LoadVersion(
    uint32_t cid, uint32_t version, absl::string_view collection) const {
  auto blob =
      db_->Get(ColumnFamily::kModels, keys::TokenizerModelKey(cid, version), "read tokenizer");
  if (!blob.ok()) return blob.status();
  absl::StatusOr<std::shared_ptr<const Tokenizer>> tokenizer =
      blob->has_value()
          ? Tokenizer::Parse(**blob)
          : absl::DataLossError(absl::StrFormat("tokenizer version %d is missing", version));
  if (tokenizer.ok() && (*tokenizer)->version() != version) {
    tokenizer = absl::DataLossError(
        absl::StrFormat("blob of version %d holds version %d", version, (*tokenizer)->version()));
  }
  if (tokenizer.ok()) return tokenizer;
  return absl::DataLossError(absl::StrFormat("tokenizer of collection '%s' is unreadable: %s",
                                             collection, tokenizer.status().message()));
}

void SidStore::AddModel(uint32_t cid, const Tokenizer& tokenizer,
                        rocksdb::WriteBatch* batch) const {
  batch->Put(db_->handle(ColumnFamily::kModels), keys::TokenizerModelKey(cid, tokenizer.version()),
             tokenizer.Serialize());
}

void SidStore::AddDropVersion(uint32_t cid, uint32_t version, rocksdb::WriteBatch* batch) const {
  // The models family also holds index blobs (<cid>"ivf"...): delete the one key only.
  batch->Delete(db_->handle(ColumnFamily::kModels), keys::TokenizerModelKey(cid, version));
  const std::string begin = keys::TokenizerModelKey(cid, version);
  const std::string end =
      version == UINT32_MAX ? keys::CollectionEnd(cid) : keys::TokenizerModelKey(cid, version + 1);
  batch->DeleteRange(db_->handle(ColumnFamily::kCodes), begin, end);
  batch->DeleteRange(db_->handle(ColumnFamily::kSids), begin, end);
  batch->Delete(db_->handle(ColumnFamily::kMeta), keys::SidDriftKey(cid, version));
}

absl::StatusOr<std::vector<std::optional<StoredSid>>> SidStore::ReadStored(
    uint32_t cid, uint32_t version, int64_t levels, absl::Span<const uint64_t> ids) const {
  std::vector<std::string> item_keys;
  item_keys.reserve(ids.size());
  for (uint64_t id : ids) item_keys.push_back(keys::CodesKey(cid, version, id));
  auto [values, statuses] = db_->MultiGet(ColumnFamily::kCodes, item_keys);
  std::vector<std::optional<StoredSid>> stored(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (statuses[i].IsNotFound()) continue;
    if (!statuses[i].ok()) return FromRocks(statuses[i], "read SIDs");
    auto sid = DecodeSidValue(View(values[i]), levels, ids[i]);
    if (!sid.ok()) return sid.status();
    stored[i] = std::move(*sid);
  }
  return stored;
}

absl::Status SidStore::AddUpserts(uint32_t cid, const Tokenizer& tokenizer,
                                  absl::Span<const uint64_t> ids, absl::Span<const int32_t> codes,
                                  absl::Span<const std::optional<StoredSid>> stored,
                                  absl::Span<const int64_t> preferred,
                                  rocksdb::WriteBatch* batch) const {
  const uint32_t version = tokenizer.version();
  const int64_t levels = tokenizer.levels();

  // Suffixes in use per tuple key, read from the database once per tuple and kept up to date
  // as this batch frees and takes them. `lowest_free` never exceeds the lowest free suffix.
  struct TupleState {
    std::set<uint32_t> used;
    uint32_t lowest_free = 0;
  };
  std::map<std::string, TupleState> tuples;
  const auto state_of = [&](const std::string& tuple) -> absl::StatusOr<TupleState*> {
    auto [it, inserted] = tuples.try_emplace(tuple);
    if (inserted) {
      absl::Status status = db_->ScanPrefix(
          ColumnFamily::kSids, tuple, [&](absl::string_view key, absl::string_view) {
            it->second.used.insert(keys::ReadBigEndian32(key.data() + key.size() - 4));
            return absl::OkStatus();
          });
      if (!status.ok()) return status;
    }
    return &it->second;
  };

  for (size_t i = 0; i < ids.size(); ++i) {
    const uint64_t id = ids[i];
    const std::optional<SidValue>& sid = stored[i];
    const int32_t* row = codes.data() + i * levels;
    if (sid && sid->version == version && std::equal(row, row + levels, sid->codes.begin())) {
      continue;  // same codes: the item keeps its SID, suffix included
    }
    if (sid) {
      const std::string old_tuple = keys::SidPrefix(cid, sid->version, sid->codes.data(), levels);
      batch->Delete(db_->handle(ColumnFamily::kSids),
                    SidKey(cid, sid->version, sid->codes.data(), levels, sid->suffix));
      auto old_state = state_of(old_tuple);
      if (!old_state.ok()) return old_state.status();
      (*old_state)->used.erase(sid->suffix);
      (*old_state)->lowest_free = std::min((*old_state)->lowest_free, sid->suffix);
    }
    auto state = state_of(keys::SidPrefix(cid, version, row, levels));
    if (!state.ok()) return state.status();
    uint32_t suffix = 0;
    if (!preferred.empty() && preferred[i] >= 0 && preferred[i] <= UINT32_MAX &&
        !(*state)->used.contains(static_cast<uint32_t>(preferred[i]))) {
      suffix = static_cast<uint32_t>(preferred[i]);
    } else {
      // The lowest suffix of the new tuple that no item holds.
      suffix = (*state)->lowest_free;
      for (auto it = (*state)->used.lower_bound(suffix);
           it != (*state)->used.end() && *it == suffix; ++it) {
        ++suffix;
      }
      (*state)->lowest_free = suffix + 1;
    }
    (*state)->used.insert(suffix);
    batch->Put(db_->handle(ColumnFamily::kSids), SidKey(cid, version, row, levels, suffix),
               keys::EncodeU64(id));
    batch->Put(db_->handle(ColumnFamily::kCodes), keys::CodesKey(cid, version, id),
               EncodeSidValue(version, row, levels, suffix));
  }
  return absl::OkStatus();
}

void SidStore::AddDeletes(uint32_t cid, absl::Span<const uint64_t> ids,
                          absl::Span<const std::optional<StoredSid>> stored,
                          rocksdb::WriteBatch* batch) const {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!stored[i]) continue;
    const StoredSid& sid = *stored[i];
    batch->Delete(db_->handle(ColumnFamily::kSids),
                  SidKey(cid, sid.version, sid.codes.data(), static_cast<int64_t>(sid.codes.size()),
                         sid.suffix));
    batch->Delete(db_->handle(ColumnFamily::kCodes), keys::CodesKey(cid, sid.version, ids[i]));
  }
}

void SidStore::AddSids(uint32_t cid, uint32_t version, int64_t levels,
                       absl::Span<const uint64_t> ids, absl::Span<const int32_t> codes,
                       absl::Span<const uint32_t> suffixes, rocksdb::WriteBatch* batch) const {
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t* row = codes.data() + i * levels;
    batch->Put(db_->handle(ColumnFamily::kSids), SidKey(cid, version, row, levels, suffixes[i]),
               keys::EncodeU64(ids[i]));
    batch->Put(db_->handle(ColumnFamily::kCodes), keys::CodesKey(cid, version, ids[i]),
               EncodeSidValue(version, row, levels, suffixes[i]));
  }
}

absl::StatusOr<storage::SidDriftRecord> SidStore::ReadDrift(uint32_t cid, uint32_t version) const {
  storage::SidDriftRecord drift;
  auto bytes = db_->Get(ColumnFamily::kMeta, keys::SidDriftKey(cid, version), "read SID drift");
  if (!bytes.ok()) return bytes.status();
  if (bytes->has_value() && !drift.ParseFromString(**bytes)) {
    return absl::DataLossError("SID drift record is corrupt");
  }
  if (drift.version() != version) {
    drift.Clear();
    drift.set_version(version);
  }
  return drift;
}

void SidStore::AddDrift(uint32_t cid, const storage::SidDriftRecord& drift,
                        rocksdb::WriteBatch* batch) const {
  batch->Put(db_->handle(ColumnFamily::kMeta), keys::SidDriftKey(cid, drift.version()),
             drift.SerializeAsString());
}

void SidStore::AddDropCollection(uint32_t cid, rocksdb::WriteBatch* batch) const {
  rocksdb::ColumnFamilyHandle* meta = db_->handle(ColumnFamily::kMeta);
  batch->Delete(meta, keys::TokenizerVersionsKey(cid));
  // Every version's drift counters: "sid_drift/<cid>" and the keys it prefixes.
  batch->DeleteRange(meta, keys::LegacySidDriftKey(cid),
                     keys::LegacySidDriftKey(cid) + "\xff\xff\xff\xff\xff");
}

absl::StatusOr<SidList> SidStore::Get(uint32_t cid, absl::string_view collection,
                                      const Tokenizer& tokenizer,
                                      absl::Span<const uint64_t> ids) const {
  SidList list;
  list.levels = tokenizer.levels();
  list.version = tokenizer.version();
  std::vector<std::string> item_keys;
  item_keys.reserve(ids.size());
  for (uint64_t id : ids) item_keys.push_back(keys::CodesKey(cid, list.version, id));
  auto [values, statuses] = db_->MultiGet(ColumnFamily::kCodes, item_keys);
  for (size_t i = 0; i < ids.size(); ++i) {
    if (statuses[i].IsNotFound()) {
      list.missing.push_back(ids[i]);
      continue;
    }
    if (!statuses[i].ok()) return FromRocks(statuses[i], "read SIDs");
    auto sid = DecodeCurrent(View(values[i]), tokenizer, ids[i], collection);
    if (!sid.ok()) return sid.status();
    AppendSid(*sid, ids[i], &list);
  }
  return list;
}

absl::StatusOr<SidList> SidStore::Lookup(uint32_t cid, const Tokenizer& tokenizer,
                                         absl::Span<const int64_t> prefix, int64_t limit) const {
  SidList list;
  list.levels = tokenizer.levels();
  list.version = tokenizer.version();
  const int64_t levels = list.levels;
  std::string key = keys::TokenizerModelKey(cid, list.version);
  for (int64_t value : prefix) keys::AppendBigEndian32(&key, static_cast<uint32_t>(value));
  absl::Status status = db_->ScanPrefix(
      ColumnFamily::kSids, key, static_cast<size_t>(limit), &list.truncated,
      [&](absl::string_view k, absl::string_view v) -> absl::Status {
        std::optional<uint64_t> id = keys::DecodeU64(v);
        if (!id || k.size() != keys::kSidKeyHeader + 4 * static_cast<size_t>(levels + 1)) {
          return absl::DataLossError("SID index entry is corrupt");
        }
        list.ids.push_back(*id);
        for (int64_t l = 0; l < levels; ++l) {
          list.codes.push_back(
              static_cast<int32_t>(keys::ReadBigEndian32(k.data() + keys::kSidKeyHeader + 4 * l)));
        }
        list.suffixes.push_back(keys::ReadBigEndian32(k.data() + keys::kSidKeyHeader + 4 * levels));
        return absl::OkStatus();
      });
  if (!status.ok()) return status;
  return list;
}

absl::StatusOr<SidList> SidStore::Export(uint32_t cid, absl::string_view collection,
                                         const Tokenizer& tokenizer) const {
  SidList list;
  list.levels = tokenizer.levels();
  list.version = tokenizer.version();
  absl::Status status =
      db_->ScanPrefix(ColumnFamily::kCodes, keys::TokenizerModelKey(cid, list.version),
                      [&](absl::string_view key, absl::string_view value) -> absl::Status {
                        if (key.size() != keys::kCodesKeySize) {
                          return absl::DataLossError("SID row key is corrupt");
                        }
                        const uint64_t id = keys::ItemIdOfCodesKey(key);
                        auto sid = DecodeCurrent(value, tokenizer, id, collection);
                        if (!sid.ok()) return sid.status();
                        AppendSid(*sid, id, &list);
                        return absl::OkStatus();
                      });
  if (!status.ok()) return status;
  return list;
}

}  // namespace quantd

namespace quantd {

absl::Status MigrateTokenizerRowsToSchema3(Db* db, uint32_t cid) {
  auto legacy = db->Get(ColumnFamily::kMeta, keys::LegacyTokenizerVersionKey(cid),
                        "read schema-2 tokenizer version");
  if (!legacy.ok()) return legacy.status();
  if (!legacy->has_value()) return absl::OkStatus();  // no tokenizer, or migrated already
  std::optional<uint32_t> version = keys::DecodeU32(**legacy);
  if (!version || *version == 0) return absl::DataLossError("tokenizer version key is corrupt");
  rocksdb::ColumnFamilyHandle* codes = db->handle(ColumnFamily::kCodes);
  rocksdb::ColumnFamilyHandle* meta = db->handle(ColumnFamily::kMeta);
  // Schema 2's codes rows (<cid><item id>, 12 bytes) move under the version in bounded
  // batches; rows already moved (16 bytes) by an interrupted run are left as they are.
  rocksdb::WriteBatch batch;
  const auto flush = [&]() -> absl::Status {
    if (batch.Count() == 0) return absl::OkStatus();
    absl::Status status = db->Write(batch, "migrate SIDs to schema 3");
    batch.Clear();
    return status;
  };
  absl::Status status =
      db->ScanPrefix(ColumnFamily::kCodes, keys::CollectionBegin(cid),
                     [&](absl::string_view key, absl::string_view value) -> absl::Status {
                       if (key.size() != keys::kItemKeySize) return absl::OkStatus();
                       batch.Put(codes, keys::CodesKey(cid, *version, keys::ItemIdOf(key)),
                                 rocksdb::Slice(value.data(), value.size()));
                       batch.Delete(codes, rocksdb::Slice(key.data(), key.size()));
                       return batch.Count() >= 100000 ? flush() : absl::OkStatus();
                     });
  if (!status.ok()) return status;
  if (status = flush(); !status.ok()) return status;
  storage::TokenizerVersionsRecord record;
  record.set_active(*version);
  record.set_next_version(*version + 1);
  record.add_kept(*version);
  batch.Put(meta, keys::TokenizerVersionsKey(cid), record.SerializeAsString());
  auto drift = db->Get(ColumnFamily::kMeta, keys::LegacySidDriftKey(cid), "read SID drift");
  if (!drift.ok()) return drift.status();
  if (drift->has_value()) {
    batch.Put(meta, keys::SidDriftKey(cid, *version), **drift);
    batch.Delete(meta, keys::LegacySidDriftKey(cid));
  }
  batch.Delete(meta, keys::LegacyTokenizerVersionKey(cid));
  return flush();
}

}  // namespace quantd
