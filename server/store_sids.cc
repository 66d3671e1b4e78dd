// Store: semantic IDs (tokenizer versions, per-item SIDs, the SID index) and job records.
#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_format.h"
#include "core/semantic_id.h"
#include "rocksdb/db.h"
#include "rocksdb/write_batch.h"
#include "server/store.h"
#include "server/store_internal.h"
#include "server/tokenizer.h"

namespace quantd {

using namespace store_internal;  // NOLINT: the key encodings shared with store.cc

namespace {

// An item's SID as stored in the codes family.
struct SidValue {
  uint32_t version = 0;
  std::vector<int32_t> codes;
  uint32_t suffix = 0;
};

std::string EncodeSidValue(uint32_t version, const int32_t* codes, int64_t levels,
                           uint32_t suffix) {
  std::string out(static_cast<size_t>(4 * (levels + 2)), '\0');
  std::memcpy(out.data(), &version, 4);
  std::memcpy(out.data() + 4, codes, static_cast<size_t>(4 * levels));
  std::memcpy(out.data() + 4 * (levels + 1), &suffix, 4);
  return out;
}

absl::StatusOr<SidValue> DecodeSidValue(const rocksdb::Slice& value, int64_t levels, uint64_t id) {
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

// Decodes an item's SID for a reader that holds `tokenizer`: a SID of another version means a
// retraining committed while the call ran, which is ABORTED (retry), not corruption.
absl::StatusOr<SidValue> DecodeCurrent(const rocksdb::Slice& value, const Tokenizer& tokenizer,
                                       uint64_t id, absl::string_view collection) {
  uint32_t version = 0;
  if (value.size() >= 4) std::memcpy(&version, value.data(), 4);
  if (version != tokenizer.version()) {
    return absl::AbortedError(absl::StrFormat(
        "the tokenizer of collection '%s' changed during the call (version %d, item %d has "
        "version %d); retry",
        collection, tokenizer.version(), id, version));
  }
  return DecodeSidValue(value, tokenizer.levels(), id);
}

// Key prefix in the sids family of a code tuple (or any prefix of one) under a version.
std::string SidPrefix(uint32_t cid, uint32_t version, const int32_t* codes, int64_t count) {
  std::string key = VersionKey(cid, version);
  for (int64_t l = 0; l < count; ++l) AppendBigEndian32(&key, static_cast<uint32_t>(codes[l]));
  return key;
}

}  // namespace

absl::Status Store::LoadTokenizer(Collection& collection) {
  std::string version_bytes;
  rocksdb::Status s =
      db_->Get(rocksdb::ReadOptions(), meta_, TokenizerKey(collection.info.id), &version_bytes);
  if (s.IsNotFound()) return absl::OkStatus();
  if (!s.ok()) return FromRocks(s, "read tokenizer version");
  uint32_t version = 0;
  if (version_bytes.size() == 4) std::memcpy(&version, version_bytes.data(), 4);
  std::string blob;
  s = db_->Get(rocksdb::ReadOptions(), models_, VersionKey(collection.info.id, version), &blob);
  absl::StatusOr<std::shared_ptr<const Tokenizer>> tokenizer =
      s.ok() ? Tokenizer::Parse(blob)
             : absl::StatusOr<std::shared_ptr<const Tokenizer>>(absl::DataLossError(
                   absl::StrFormat("tokenizer version %d is missing", version)));
  std::lock_guard lock(collection.tokenizer_mu);
  if (tokenizer.ok()) {
    collection.tokenizer = std::move(*tokenizer);
  } else {
    // Only this collection's tokenizer calls fail; everything else keeps serving.
    collection.tokenizer_error =
        absl::DataLossError(absl::StrFormat("tokenizer of collection '%s' is unreadable: %s",
                                            collection.info.name, tokenizer.status().message()));
  }
  return absl::OkStatus();
}

std::shared_ptr<const Tokenizer> Store::CurrentTokenizer(const Collection& collection) const {
  std::lock_guard lock(collection.tokenizer_mu);
  return collection.tokenizer;
}

absl::StatusOr<std::shared_ptr<const Tokenizer>> Store::GetTokenizer(absl::string_view name) const {
  auto collection = FindOrNotFound(name);
  if (!collection.ok()) return collection.status();
  std::lock_guard lock((*collection)->tokenizer_mu);
  if (!(*collection)->tokenizer_error.ok()) return (*collection)->tokenizer_error;
  if ((*collection)->tokenizer == nullptr) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "collection '%s' has no tokenizer yet: train one with TrainTokenizer", name));
  }
  return (*collection)->tokenizer;
}

absl::Status Store::AddSidUpdates(const Collection& collection, const Tokenizer& tokenizer,
                                  absl::Span<const uint64_t> ids, const std::vector<int32_t>& codes,
                                  rocksdb::WriteBatch* batch) const {
  const uint32_t cid = collection.info.id;
  const uint32_t version = tokenizer.version();
  const int64_t levels = tokenizer.levels();

  // The SIDs the ids have now; updated as rows of this batch change them.
  std::map<uint64_t, std::optional<SidValue>> current;
  for (uint64_t id : ids) current.emplace(id, std::nullopt);
  std::vector<std::string> keys;
  for (const auto& [id, unused] : current) keys.push_back(ItemKey(cid, id));
  auto [values, statuses] = MultiGet(db_.get(), codes_, keys);
  size_t index = 0;
  for (auto& [id, sid] : current) {
    const rocksdb::Status& s = statuses[index];
    if (s.ok()) {
      auto decoded = DecodeSidValue(values[index], levels, id);
      if (!decoded.ok()) return decoded.status();
      sid = std::move(*decoded);
    } else if (!s.IsNotFound()) {
      return FromRocks(s, "read SIDs");
    }
    ++index;
  }

  // Only the last row of an id counts (it is the vector that stays), so an id's SID is decided
  // once per batch.
  std::map<uint64_t, size_t> last_row;
  for (size_t i = 0; i < ids.size(); ++i) last_row[ids[i]] = i;

  // Suffixes in use per tuple key, read from the database once per tuple and kept up to date
  // as this batch frees and takes them. `lowest_free` never exceeds the lowest free suffix.
  struct TupleState {
    std::set<uint32_t> used;
    uint32_t lowest_free = 0;
  };
  std::map<std::string, TupleState> tuples;
  absl::Status scan_status;
  const auto state_of = [&](const std::string& tuple) -> TupleState& {
    auto [it, inserted] = tuples.try_emplace(tuple);
    if (inserted) {
      absl::Status status = ScanPrefix(
          db_.get(), sids_, tuple, [&](const rocksdb::Slice& key, const rocksdb::Slice&) {
            it->second.used.insert(ReadBigEndian32(key.data() + key.size() - 4));
            return true;
          });
      if (!status.ok()) scan_status = status;
    }
    return it->second;
  };

  for (const auto& [id, row_index] : last_row) {
    const int32_t* row = codes.data() + row_index * levels;
    const std::optional<SidValue>& sid = current[id];
    if (sid && sid->version == version && std::equal(row, row + levels, sid->codes.begin())) {
      continue;  // same codes: the item keeps its SID, suffix included
    }
    if (sid) {
      const std::string old_tuple = SidPrefix(cid, sid->version, sid->codes.data(), levels);
      std::string old_key = old_tuple;
      AppendBigEndian32(&old_key, sid->suffix);
      batch->Delete(sids_, old_key);
      TupleState& old_state = state_of(old_tuple);
      old_state.used.erase(sid->suffix);
      old_state.lowest_free = std::min(old_state.lowest_free, sid->suffix);
    }
    // The lowest suffix of the new tuple that no item holds.
    const std::string tuple = SidPrefix(cid, version, row, levels);
    TupleState& state = state_of(tuple);
    if (!scan_status.ok()) return scan_status;
    uint32_t suffix = state.lowest_free;
    for (auto it = state.used.lower_bound(suffix); it != state.used.end() && *it == suffix; ++it) {
      ++suffix;
    }
    state.used.insert(suffix);
    state.lowest_free = suffix + 1;
    std::string key = tuple;
    AppendBigEndian32(&key, suffix);
    batch->Put(sids_, key, EncodeU64(id));
    batch->Put(codes_, ItemKey(cid, id), EncodeSidValue(version, row, levels, suffix));
  }
  return scan_status;
}

absl::Status Store::AddSidDeletes(const Collection& collection, absl::Span<const uint64_t> ids,
                                  rocksdb::WriteBatch* batch) const {
  std::shared_ptr<const Tokenizer> tokenizer = CurrentTokenizer(collection);
  if (tokenizer == nullptr) return absl::OkStatus();
  const uint32_t cid = collection.info.id;
  const int64_t levels = tokenizer->levels();
  std::vector<std::string> keys;
  for (uint64_t id : ids) keys.push_back(ItemKey(cid, id));
  auto [values, statuses] = MultiGet(db_.get(), codes_, keys);
  for (size_t i = 0; i < keys.size(); ++i) {
    if (statuses[i].IsNotFound()) continue;
    if (!statuses[i].ok()) return FromRocks(statuses[i], "read SIDs");
    auto sid = DecodeSidValue(values[i], levels, ids[i]);
    if (!sid.ok()) return sid.status();
    std::string key = SidPrefix(cid, sid->version, sid->codes.data(), levels);
    AppendBigEndian32(&key, sid->suffix);
    batch->Delete(sids_, key);
    batch->Delete(codes_, keys[i]);
  }
  return absl::OkStatus();
}

absl::StatusOr<Store::ItemSet> Store::LoadItems(absl::string_view name) const {
  auto collection = FindOrNotFound(name);
  if (!collection.ok()) return collection.status();
  ItemSet items;
  items.info = (*collection)->info;
  const int64_t d = items.info.dimension;
  const size_t row_bytes = static_cast<size_t>(d) * sizeof(float);
  items.ids.reserve((*collection)->item_count.load());
  items.vectors.reserve((*collection)->item_count.load() * d);
  // One iterator reads one consistent snapshot.
  absl::Status status =
      ScanPrefix(db_.get(), vectors_, CollectionPrefix(items.info.id),
                 [&](const rocksdb::Slice& key, const rocksdb::Slice& value) {
                   if (value.size() != row_bytes) return false;
                   items.ids.push_back(ReadBigEndian64(key.data() + 4));
                   const size_t offset = items.vectors.size();
                   items.vectors.resize(offset + static_cast<size_t>(d));
                   std::memcpy(items.vectors.data() + offset, value.data(), row_bytes);
                   return true;
                 });
  if (!status.ok()) return status;
  if (items.vectors.size() != items.ids.size() * static_cast<size_t>(d)) {
    return absl::DataLossError(
        absl::StrFormat("collection '%s' holds a vector of the wrong size", name));
  }
  items.info.item_count = items.ids.size();
  return items;
}

absl::StatusOr<uint32_t> Store::CommitTokenizer(absl::string_view name,
                                                storage::TokenizerRecord record,
                                                ResidualQuantizer quantizer, const ItemSet& items,
                                                const std::vector<int32_t>& codes) {
  auto found = FindOrNotFound(name);
  if (!found.ok()) return found.status();
  std::shared_ptr<Collection> collection = *found;
  const uint32_t cid = collection->info.id;
  const int64_t d = collection->info.dimension;
  const int64_t levels = quantizer.levels();
  if (quantizer.dimension() != d || codes.size() != items.ids.size() * levels) {
    return absl::InternalError("tokenizer commit with inconsistent shapes");
  }

  std::lock_guard write_lock(collection->write_mu);
  if (collection->dropped || collection->info.id != items.info.id) {
    return absl::NotFoundError(absl::StrFormat("collection '%s' was dropped", name));
  }
  uint32_t old_version = 0;
  {
    std::string bytes;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), meta_, TokenizerKey(cid), &bytes);
    if (s.ok() && bytes.size() == 4) std::memcpy(&old_version, bytes.data(), 4);
  }
  const uint32_t version = old_version + 1;
  record.set_version(version);
  auto tokenizer = std::make_shared<const Tokenizer>(std::move(quantizer), std::move(record));

  // Every item stored now, under the write lock: codes from training where the vector is the
  // one trained on, else encoded here (items written while the job ran).
  const size_t row_bytes = static_cast<size_t>(d) * sizeof(float);
  std::vector<uint64_t> ids;
  std::vector<int32_t> all_codes;
  std::vector<int64_t> stale_rows;  // rows of `ids` to encode anew
  std::vector<float> stale_vectors;
  absl::Status status = ScanPrefix(
      db_.get(), vectors_, CollectionPrefix(cid),
      [&](const rocksdb::Slice& key, const rocksdb::Slice& value) {
        const uint64_t id = ReadBigEndian64(key.data() + 4);
        const auto it = std::lower_bound(items.ids.begin(), items.ids.end(), id);
        const int64_t row = static_cast<int64_t>(ids.size());
        ids.push_back(id);
        all_codes.resize(all_codes.size() + static_cast<size_t>(levels));
        if (it != items.ids.end() && *it == id && value.size() == row_bytes &&
            std::memcmp(value.data(), items.vectors.data() + (it - items.ids.begin()) * d,
                        row_bytes) == 0) {
          std::copy_n(codes.data() + (it - items.ids.begin()) * levels, levels,
                      all_codes.data() + row * levels);
        } else {
          stale_rows.push_back(row);
          const size_t offset = stale_vectors.size();
          stale_vectors.resize(offset + static_cast<size_t>(d));
          std::memcpy(stale_vectors.data() + offset, value.data(),
                      std::min(row_bytes, value.size()));
        }
        return true;
      });
  if (!status.ok()) return status;
  if (!stale_rows.empty()) {
    std::vector<int32_t> fresh(stale_rows.size() * static_cast<size_t>(levels));
    tokenizer->Encode(stale_vectors.data(), static_cast<int64_t>(stale_rows.size()), fresh.data());
    for (size_t i = 0; i < stale_rows.size(); ++i) {
      std::copy_n(fresh.data() + i * levels, levels, all_codes.data() + stale_rows[i] * levels);
    }
  }
  const std::vector<uint32_t> suffixes =
      AssignFreshSuffixes(all_codes.data(), static_cast<int64_t>(ids.size()), levels);

  rocksdb::WriteBatch batch;
  batch.Put(models_, VersionKey(cid, version), tokenizer->Serialize());
  if (old_version > 0) {
    batch.Delete(models_, VersionKey(cid, old_version));
    batch.DeleteRange(sids_, VersionKey(cid, old_version), VersionKey(cid, old_version + 1));
  }
  batch.Put(meta_, TokenizerKey(cid), EncodeU32(version));
  // Every item's SID is written anew below; clear the family first so nothing of the previous
  // version can outlive it.
  batch.DeleteRange(codes_, CollectionPrefix(cid), CollectionPrefix(cid + 1));
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t* row = all_codes.data() + i * levels;
    std::string key = SidPrefix(cid, version, row, levels);
    AppendBigEndian32(&key, suffixes[i]);
    batch.Put(sids_, key, EncodeU64(ids[i]));
    batch.Put(codes_, ItemKey(cid, ids[i]), EncodeSidValue(version, row, levels, suffixes[i]));
  }
  rocksdb::WriteOptions write_options;
  write_options.sync = options_.sync;
  if (auto s = FromRocks(db_->Write(write_options, &batch), "commit tokenizer"); !s.ok()) {
    return s;
  }
  std::lock_guard lock(collection->tokenizer_mu);
  collection->tokenizer = std::move(tokenizer);
  collection->tokenizer_error = absl::OkStatus();
  return version;
}

absl::StatusOr<Store::SidList> Store::GetSids(absl::string_view name, const Tokenizer& tokenizer,
                                              absl::Span<const uint64_t> ids) const {
  auto collection = FindOrNotFound(name);
  if (!collection.ok()) return collection.status();
  if (ids.size() > kMaxIdsPerCall) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ids has %d entries, more than the %d allowed per call", ids.size(), kMaxIdsPerCall));
  }
  SidList list;
  list.levels = tokenizer.levels();
  list.version = tokenizer.version();
  const uint32_t cid = (*collection)->info.id;
  std::vector<uint64_t> distinct;
  std::set<uint64_t> seen;
  for (uint64_t id : ids) {
    if (seen.insert(id).second) distinct.push_back(id);
  }
  std::vector<std::string> keys;
  for (uint64_t id : distinct) keys.push_back(ItemKey(cid, id));
  auto [values, statuses] = MultiGet(db_.get(), codes_, keys);
  for (size_t i = 0; i < keys.size(); ++i) {
    if (statuses[i].IsNotFound()) {
      list.missing.push_back(distinct[i]);
      continue;
    }
    if (!statuses[i].ok()) return FromRocks(statuses[i], "read SIDs");
    auto sid = DecodeCurrent(values[i], tokenizer, distinct[i], name);
    if (!sid.ok()) return sid.status();
    list.ids.push_back(distinct[i]);
    list.codes.insert(list.codes.end(), sid->codes.begin(), sid->codes.end());
    list.suffixes.push_back(sid->suffix);
  }
  return list;
}

absl::StatusOr<Store::SidList> Store::LookupSids(absl::string_view name, const Tokenizer& tokenizer,
                                                 absl::Span<const int64_t> prefix,
                                                 int64_t limit) const {
  auto collection = FindOrNotFound(name);
  if (!collection.ok()) return collection.status();
  const int64_t levels = tokenizer.levels();
  if (prefix.empty() || static_cast<int64_t>(prefix.size()) > levels + 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("codes has %d values; a prefix has 1..%d (L = %d codes, then the suffix)",
                        prefix.size(), levels + 1, levels));
  }
  for (size_t l = 0; l < prefix.size(); ++l) {
    const int64_t bound = static_cast<int64_t>(l) < levels
                              ? tokenizer.quantizer().codebook_size(static_cast<int64_t>(l))
                              : int64_t{1} << 32;
    if (prefix[l] < 0 || prefix[l] >= bound) {
      return absl::InvalidArgumentError(
          absl::StrFormat("codes[%d] = %d is outside 0..%d", l, prefix[l], bound - 1));
    }
  }
  SidList list;
  list.levels = levels;
  list.version = tokenizer.version();
  std::string key = VersionKey((*collection)->info.id, list.version);
  for (int64_t value : prefix) AppendBigEndian32(&key, static_cast<uint32_t>(value));
  absl::Status status =
      ScanPrefix(db_.get(), sids_, key, [&](const rocksdb::Slice& k, const rocksdb::Slice& v) {
        if (static_cast<int64_t>(list.ids.size()) == limit) {
          list.truncated = true;
          return false;
        }
        uint64_t id = 0;
        if (v.size() == 8) std::memcpy(&id, v.data(), 8);
        list.ids.push_back(id);
        for (int64_t l = 0; l < levels; ++l) {
          list.codes.push_back(static_cast<int32_t>(ReadBigEndian32(k.data() + 8 + 4 * l)));
        }
        list.suffixes.push_back(ReadBigEndian32(k.data() + 8 + 4 * levels));
        return true;
      });
  if (!status.ok()) return status;
  return list;
}

absl::StatusOr<Store::SidList> Store::ExportSids(absl::string_view name,
                                                 const Tokenizer& tokenizer) const {
  auto collection = FindOrNotFound(name);
  if (!collection.ok()) return collection.status();
  SidList list;
  list.levels = tokenizer.levels();
  list.version = tokenizer.version();
  absl::Status decode_status;
  absl::Status status =
      ScanPrefix(db_.get(), codes_, CollectionPrefix((*collection)->info.id),
                 [&](const rocksdb::Slice& key, const rocksdb::Slice& value) {
                   const uint64_t id = ReadBigEndian64(key.data() + 4);
                   auto sid = DecodeCurrent(value, tokenizer, id, name);
                   if (!sid.ok()) {
                     decode_status = sid.status();
                     return false;
                   }
                   list.ids.push_back(id);
                   list.codes.insert(list.codes.end(), sid->codes.begin(), sid->codes.end());
                   list.suffixes.push_back(sid->suffix);
                   return true;
                 });
  if (!decode_status.ok()) return decode_status;
  if (!status.ok()) return status;
  return list;
}

absl::StatusOr<std::vector<uint64_t>> Store::CountTuples(absl::string_view name,
                                                         const Tokenizer& tokenizer,
                                                         const int32_t* codes, int64_t n) const {
  const uint32_t version = tokenizer.version();
  auto collection = FindOrNotFound(name);
  if (!collection.ok()) return collection.status();
  const int64_t levels = tokenizer.levels();
  std::vector<uint64_t> counts(static_cast<size_t>(n), 0);
  for (int64_t i = 0; i < n; ++i) {
    const std::string prefix =
        SidPrefix((*collection)->info.id, version, codes + i * levels, levels);
    absl::Status status =
        ScanPrefix(db_.get(), sids_, prefix, [&](const rocksdb::Slice&, const rocksdb::Slice&) {
          ++counts[i];
          return true;
        });
    if (!status.ok()) return status;
  }
  return counts;
}

absl::Status Store::PutJob(const storage::JobRecord& job) {
  rocksdb::WriteOptions write_options;
  write_options.sync = options_.sync;
  return FromRocks(
      db_->Put(write_options, meta_, absl::StrCat(kJobPrefix, job.id()), job.SerializeAsString()),
      "write job");
}

absl::StatusOr<std::vector<storage::JobRecord>> Store::LoadJobs() const {
  std::vector<storage::JobRecord> jobs;
  absl::Status parse_status;
  absl::Status status = ScanPrefix(
      db_.get(), meta_, kJobPrefix, [&](const rocksdb::Slice& key, const rocksdb::Slice& value) {
        storage::JobRecord job;
        if (!job.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
          parse_status =
              absl::DataLossError(absl::StrCat("job record ", key.ToString(), " is corrupt"));
          return false;
        }
        jobs.push_back(std::move(job));
        return true;
      });
  if (!parse_status.ok()) return parse_status;
  if (!status.ok()) return status;
  return jobs;
}

}  // namespace quantd
