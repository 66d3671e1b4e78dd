#include "server/ivf_store.h"

#include <cstring>

#include "absl/strings/str_format.h"
#include "server/index.h"
#include "server/keys.h"

namespace quantd {
namespace {

// Fills `serving`'s lists from the stored entries of collection `cid`. DATA_LOSS on any
// inconsistency.
absl::Status LoadEntries(const Db& db, uint32_t cid, ServingIndex& serving) {
  const int64_t code_size = serving.index.code_size();
  const int64_t refine_size = serving.index.refine_code_size();
  const int64_t entry_size = 8 + code_size + refine_size;
  const uint32_t version = serving.record.version();
  return db.ScanPrefix(
      ColumnFamily::kIvf, keys::CollectionBegin(cid),
      [&](absl::string_view key, absl::string_view value) -> absl::Status {
        const uint64_t id = keys::ItemIdOf(key);
        uint32_t entry_version = 0;
        uint32_t list = 0;
        if (value.size() == static_cast<size_t>(entry_size)) {
          std::memcpy(&entry_version, value.data(), 4);
          std::memcpy(&list, value.data() + 4, 4);
        }
        if (value.size() != static_cast<size_t>(entry_size) || entry_version != version) {
          return absl::DataLossError(absl::StrFormat(
              "index entry of item %d is corrupt (%d bytes, version %d; expected %d bytes, "
              "version %d)",
              id, value.size(), entry_version, entry_size, version));
        }
        const auto* code = reinterpret_cast<const uint8_t*>(value.data() + 8);
        absl::Status added = serving.index.AddEncoded(
            id, list, absl::MakeConstSpan(code, static_cast<size_t>(code_size)),
            absl::MakeConstSpan(code + code_size, static_cast<size_t>(refine_size)));
        if (!added.ok()) {
          return absl::DataLossError(
              absl::StrFormat("index entry of item %d: %s", id, added.message()));
        }
        return absl::OkStatus();
      });
}

// The serving index of a stored blob, with its entries.
absl::StatusOr<std::shared_ptr<ServingIndex>> BuildServingIndex(const Db& db, uint32_t cid,
                                                                const std::string& blob) {
  auto record = ParseIndexBlob(blob);
  if (!record.ok()) return record.status();
  auto index = IvfPqIndex::Deserialize(record->model());
  if (!index.ok()) {
    return absl::DataLossError(absl::StrCat("index model: ", index.status().message()));
  }
  auto serving = std::make_shared<ServingIndex>();
  serving->index = std::move(*index);
  record->clear_model();
  serving->record = std::move(*record);
  if (absl::Status status = LoadEntries(db, cid, *serving); !status.ok()) return status;
  return serving;
}

}  // namespace

absl::StatusOr<uint32_t> IvfStore::CurrentVersion(uint32_t cid) const {
  auto bytes = db_->Get(ColumnFamily::kMeta, keys::IndexVersionKey(cid), "read index version");
  if (!bytes.ok()) return bytes.status();
  if (!bytes->has_value()) return 0;
  std::optional<uint32_t> version = keys::DecodeU32(**bytes);
  if (!version) return absl::DataLossError("index version key is corrupt");
  return *version;
}

absl::StatusOr<std::shared_ptr<ServingIndex>> IvfStore::LoadCurrent(
    uint32_t cid, absl::string_view collection) const {
  auto version = CurrentVersion(cid);
  if (!version.ok()) return version.status();
  if (*version == 0) return std::shared_ptr<ServingIndex>();
  auto blob = db_->Get(ColumnFamily::kModels, keys::IndexModelKey(cid, *version), "read index");
  if (!blob.ok()) return blob.status();
  absl::StatusOr<std::shared_ptr<ServingIndex>> serving =
      blob->has_value()
          ? BuildServingIndex(*db_, cid, **blob)
          : absl::DataLossError(absl::StrFormat("index version %d is missing", *version));
  if (serving.ok()) return serving;
  return absl::DataLossError(absl::StrFormat("index of collection '%s' is unreadable: %s",
                                             collection, serving.status().message()));
}

void IvfStore::AddEntry(uint32_t cid, uint32_t version, uint64_t id, const IvfPqEncoded& entry,
                        rocksdb::WriteBatch* batch) const {
  AddEntry(cid, version, id, entry.list, entry.code, entry.refine_code, batch);
}

void IvfStore::AddEntry(uint32_t cid, uint32_t version, uint64_t id, int64_t list,
                        absl::Span<const uint8_t> code, absl::Span<const uint8_t> refine_code,
                        rocksdb::WriteBatch* batch) const {
  batch->Put(db_->handle(ColumnFamily::kIvf), keys::ItemKey(cid, id),
             EncodeIndexEntry(version, list, code, refine_code));
}

void IvfStore::AddDelete(uint32_t cid, uint64_t id, rocksdb::WriteBatch* batch) const {
  batch->Delete(db_->handle(ColumnFamily::kIvf), keys::ItemKey(cid, id));
}

void IvfStore::AddCommit(uint32_t cid, uint32_t old_version, const storage::IndexRecord& record,
                         rocksdb::WriteBatch* batch) const {
  batch->Put(db_->handle(ColumnFamily::kModels), keys::IndexModelKey(cid, record.version()),
             SerializeIndexBlob(record));
  if (old_version > 0) {
    batch->Delete(db_->handle(ColumnFamily::kModels), keys::IndexModelKey(cid, old_version));
  }
  batch->Put(db_->handle(ColumnFamily::kMeta), keys::IndexVersionKey(cid),
             keys::EncodeU32(record.version()));
  // Every item's entry is written anew by the caller; nothing of the previous version may
  // outlive it.
  batch->DeleteRange(db_->handle(ColumnFamily::kIvf), keys::CollectionBegin(cid),
                     keys::CollectionEnd(cid));
}

void IvfStore::AddDropCollection(uint32_t cid, rocksdb::WriteBatch* batch) const {
  batch->Delete(db_->handle(ColumnFamily::kMeta), keys::IndexVersionKey(cid));
}

}  // namespace quantd
