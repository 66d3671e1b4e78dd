#include "server/db.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/options.h"
#include "rocksdb/table.h"
#include "rocksdb/utilities/checkpoint.h"

namespace quantd {
namespace {

constexpr std::array<absl::string_view, kFamilyCount> kFamilyNames = {
    "meta", "vectors", "models", "codes", "sids", "ivf", "attrs"};

// The first key after every key starting with `prefix` ("" when there is none).
std::string PrefixEnd(absl::string_view prefix) {
  std::string end(prefix);
  while (!end.empty() && static_cast<unsigned char>(end.back()) == 0xff) end.pop_back();
  if (!end.empty()) end.back() = static_cast<char>(end.back() + 1);
  return end;
}

}  // namespace

absl::string_view FamilyName(ColumnFamily family) { return kFamilyNames[static_cast<int>(family)]; }

absl::Status FromRocks(const rocksdb::Status& status, absl::string_view what) {
  if (status.ok()) return absl::OkStatus();
  const std::string message = absl::StrCat(what, ": ", status.ToString());
  if (status.IsCorruption()) return absl::DataLossError(message);
  if (status.IsInvalidArgument() || status.IsNotSupported()) return absl::InternalError(message);
  return absl::UnavailableError(message);
}

absl::StatusOr<std::unique_ptr<Db>> Db::Open(const Options& options) {
  auto db = std::unique_ptr<Db>(new Db());
  db->options_ = options;

  rocksdb::Options db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  db_options.IncreaseParallelism(2);
  db_options.max_background_jobs = 2;
  db_options.keep_log_file_num = 4;

  rocksdb::ColumnFamilyOptions default_options;
  rocksdb::ColumnFamilyOptions vector_options;
  rocksdb::BlockBasedTableOptions table;
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  vector_options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  vector_options.compression = rocksdb::kNoCompression;  // float payloads do not compress
  vector_options.write_buffer_size = 64 << 20;

  // Open every family the database has (a newer server may have added some) plus ours.
  std::vector<std::string> names;
  rocksdb::Status listed = rocksdb::DB::ListColumnFamilies(db_options, options.path, &names);
  if (!listed.ok()) names = {rocksdb::kDefaultColumnFamilyName};
  for (absl::string_view name : kFamilyNames) {
    if (std::find(names.begin(), names.end(), name) == names.end()) names.emplace_back(name);
  }
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  for (const std::string& name : names) {
    descriptors.emplace_back(
        name, name == FamilyName(ColumnFamily::kVectors) ? vector_options : default_options);
  }
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s =
      rocksdb::DB::Open(db_options, options.path, descriptors, &db->all_handles_, &raw);
  if (s.IsIOError() && s.ToString().find("lock") != std::string::npos) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "data_dir '%s' is in use by another quantd process (%s)", options.path, s.ToString()));
  }
  if (!s.ok()) return FromRocks(s, absl::StrCat("open database ", options.path));
  db->db_.reset(raw);
  for (size_t i = 0; i < names.size(); ++i) {
    const auto it = std::find(kFamilyNames.begin(), kFamilyNames.end(), names[i]);
    if (it != kFamilyNames.end()) db->handles_[it - kFamilyNames.begin()] = db->all_handles_[i];
  }
  return db;
}

Db::~Db() {
  if (db_ == nullptr) return;
  db_->FlushWAL(/*sync=*/true).PermitUncheckedError();
  for (rocksdb::ColumnFamilyHandle* handle : all_handles_) {
    db_->DestroyColumnFamilyHandle(handle).PermitUncheckedError();
  }
  db_->Close().PermitUncheckedError();
}

absl::Status Db::Write(rocksdb::WriteBatch& batch, absl::string_view what) {
  rocksdb::WriteOptions write_options;
  write_options.sync = options_.sync;
  return FromRocks(db_->Write(write_options, &batch), what);
}

absl::Status Db::WriteUnsynced(rocksdb::WriteBatch& batch, absl::string_view what) {
  return FromRocks(db_->Write(rocksdb::WriteOptions(), &batch), what);
}

absl::StatusOr<std::optional<std::string>> Db::Get(ColumnFamily family, absl::string_view key,
                                                   absl::string_view what) const {
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), handle(family),
                               rocksdb::Slice(key.data(), key.size()), &value);
  if (s.IsNotFound()) return std::nullopt;
  if (!s.ok()) return FromRocks(s, what);
  return value;
}

Db::ReadView Db::TakeReadView() const {
  rocksdb::DB* db = db_.get();
  return ReadView(db->GetSnapshot(),
                  [db](const rocksdb::Snapshot* view) { db->ReleaseSnapshot(view); });
}

Db::PointReads Db::MultiGet(ColumnFamily family, const std::vector<std::string>& keys,
                            const rocksdb::Snapshot* view) const {
  std::vector<rocksdb::Slice> slices(keys.begin(), keys.end());
  PointReads reads;
  reads.values.resize(keys.size());
  reads.statuses.resize(keys.size());
  rocksdb::ReadOptions read_options;
  read_options.snapshot = view;
  db_->MultiGet(read_options, handle(family), slices.size(), slices.data(), reads.values.data(),
                reads.statuses.data());
  return reads;
}

absl::Status Db::ScanPrefix(ColumnFamily family, absl::string_view prefix, Visitor visit) const {
  return ScanPrefix(family, prefix, SIZE_MAX, nullptr, visit);
}

absl::Status Db::ScanPrefix(ColumnFamily family, absl::string_view prefix, size_t limit,
                            bool* truncated, Visitor visit) const {
  return ScanPrefixFrom(family, prefix, prefix, limit, truncated, visit);
}

absl::Status Db::ScanPrefixFrom(ColumnFamily family, absl::string_view prefix,
                                absl::string_view start, size_t limit, bool* truncated,
                                Visitor visit, const rocksdb::Snapshot* view) const {
  const std::string end = PrefixEnd(prefix);
  rocksdb::Slice upper(end);
  rocksdb::ReadOptions read_options;
  read_options.snapshot = view;
  if (!end.empty()) read_options.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read_options, handle(family)));
  size_t visited = 0;
  if (truncated != nullptr) *truncated = false;
  const absl::string_view first = std::max(prefix, start);
  for (it->Seek(rocksdb::Slice(first.data(), first.size())); it->Valid(); it->Next()) {
    const rocksdb::Slice key = it->key();
    if (end.empty() && !key.starts_with(rocksdb::Slice(prefix.data(), prefix.size()))) break;
    if (visited == limit) {
      if (truncated != nullptr) *truncated = true;
      break;
    }
    ++visited;
    const rocksdb::Slice value = it->value();
    if (absl::Status status = visit(absl::string_view(key.data(), key.size()),
                                    absl::string_view(value.data(), value.size()));
        !status.ok()) {
      return status;
    }
  }
  return FromRocks(it->status(), absl::StrCat("scan ", FamilyName(family)));
}

void Db::AddDeleteRows(absl::string_view begin, absl::string_view end,
                       rocksdb::WriteBatch* batch) const {
  for (int f = 0; f < kFamilyCount; ++f) {
    if (static_cast<ColumnFamily>(f) == ColumnFamily::kMeta) continue;
    batch->DeleteRange(handles_[f], rocksdb::Slice(begin.data(), begin.size()),
                       rocksdb::Slice(end.data(), end.size()));
  }
}

void Db::SuggestCompaction(absl::string_view begin, absl::string_view end) {
  rocksdb::Slice begin_slice(begin.data(), begin.size()), end_slice(end.data(), end.size());
  for (int f = 0; f < kFamilyCount; ++f) {
    if (static_cast<ColumnFamily>(f) == ColumnFamily::kMeta) continue;
    db_->SuggestCompactRange(handles_[f], &begin_slice, &end_slice).PermitUncheckedError();
  }
}

absl::Status Db::CompactFamily(ColumnFamily family) const {
  rocksdb::ColumnFamilyHandle* handle = handles_[static_cast<int>(family)];
  rocksdb::Status s = db_->Flush(rocksdb::FlushOptions(), handle);
  if (s.ok()) s = db_->CompactRange(rocksdb::CompactRangeOptions(), handle, nullptr, nullptr);
  return FromRocks(s, absl::StrCat("compact ", FamilyName(family)));
}

uint64_t Db::SstBytes(ColumnFamily family) const {
  uint64_t bytes = 0;
  db_->GetIntProperty(handles_[static_cast<int>(family)], "rocksdb.total-sst-files-size", &bytes);
  return bytes;
}

absl::StatusOr<uint64_t> Db::Checkpoint(const std::string& dir) {
  rocksdb::Checkpoint* raw = nullptr;
  rocksdb::Status s = rocksdb::Checkpoint::Create(db_.get(), &raw);
  std::unique_ptr<rocksdb::Checkpoint> checkpoint(raw);
  uint64_t sequence = 0;
  // log_size_for_flush 0: memtables are flushed first, so the copy is mostly SST files (hard
  // links) and the WAL tail it copies is short.
  if (s.ok()) s = checkpoint->CreateCheckpoint(dir, 0, &sequence);
  if (s.ok()) return sequence;
  const std::string message = absl::StrFormat("checkpoint into '%s': %s", dir, s.ToString());
  if (s.IsNoSpace()) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

Db::Figures Db::GetFigures() const {
  const auto aggregated = [this](const std::string& property) {
    uint64_t value = 0;
    return db_->GetAggregatedIntProperty(property, &value) ? static_cast<double>(value) : 0.0;
  };
  Figures figures;
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
