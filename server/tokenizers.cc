#include "server/tokenizers.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/semantic_id.h"
#include "server/items.h"
#include "server/log.h"
#include "server/tokenizer.h"

namespace quantd {
namespace {

// Items per WriteBatch when a new version's SIDs are written (without the write lock; other
// writers queue behind each batch in RocksDB's write path for a few milliseconds).
constexpr int64_t kVersionRowsPerBatch = 5000;
// Catch-up rounds of a commit before its final round under the lock: while more than
// kFinalRoundItems were written since the last round, at least kMin rounds, then while each
// round has less to do than the one before, at most kMax.
constexpr int kMinCatchUpRounds = 3;
constexpr int kMaxCatchUpRounds = 32;
constexpr size_t kFinalRoundItems = 256;

bool Contains(const google::protobuf::RepeatedField<uint32_t>& values, uint32_t value) {
  return std::find(values.begin(), values.end(), value) != values.end();
}

void Erase(google::protobuf::RepeatedField<uint32_t>* values, uint32_t value) {
  values->erase(std::remove(values->begin(), values->end(), value), values->end());
}

void InsertSorted(google::protobuf::RepeatedField<uint32_t>* values, uint32_t value) {
  if (Contains(*values, value)) return;
  values->Add(value);
  std::sort(values->begin(), values->end());
}

std::string KeptList(const storage::TokenizerVersionsRecord& record) {
  return record.kept().empty() ? "none" : absl::StrJoin(record.kept(), ", ");
}

// NOT_FOUND for a version the collection does not keep, saying whether it was dropped.
absl::Status NotKept(absl::string_view collection, const storage::TokenizerVersionsRecord& record,
                     uint32_t version) {
  const char* why = version == 0                      ? "is not a version"
                    : version < record.next_version() ? "was dropped or never committed"
                                                      : "does not exist yet";
  return absl::NotFoundError(
      absl::StrFormat("tokenizer version %d of collection '%s' %s (kept: %s)", version, collection,
                      why, KeptList(record)));
}

}  // namespace

std::shared_ptr<const Tokenizer> TokenizerSet::active() const {
  const auto it = versions.find(record.active());
  return it == versions.end() ? nullptr : it->second;
}

bool TokenizerSet::pinned(uint32_t version) const { return Contains(record.pinned(), version); }

LedgerChange* SidChanges::For(const Tokenizer& tokenizer) {
  changes_.push_back(std::make_unique<LedgerChange>(&tokenizer.ledger()));
  return changes_.back().get();
}

absl::Status Tokenizers::LoadAll() {
  // An unreadable version fails only its collection's calls (and writes); the rest serves.
  for (const std::shared_ptr<Collection>& collection : registry_->All()) {
    absl::Status status = collection->tokenizers.TakeLoaded(LoadSet(collection->Snapshot()));
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const TokenizerSet>> Tokenizers::LoadSet(
    const CollectionInfo& info) const {
  auto record = sids_->ReadVersions(info.id);
  if (!record.ok()) return record.status();
  if (!record->pending().empty()) {
    // Jobs a stop interrupted: their versions never committed.
    rocksdb::WriteBatch batch;
    for (uint32_t version : record->pending()) sids_->AddDropVersion(info.id, version, &batch);
    LogInfo("collection '%s': removing uncommitted tokenizer versions %s", info.name,
            absl::StrJoin(record->pending(), ", "));
    record->clear_pending();
    sids_->AddVersions(info.id, *record, &batch);
    if (auto status = db_->Write(batch, "remove uncommitted tokenizer versions"); !status.ok()) {
      return status;
    }
  }
  if (record->kept().empty()) return std::shared_ptr<const TokenizerSet>();
  auto set = std::make_shared<TokenizerSet>();
  set->record = *record;
  for (uint32_t version : record->kept()) {
    auto tokenizer = sids_->LoadVersion(info.id, version, info.name);
    if (!tokenizer.ok()) return tokenizer.status();
    if (auto status = LoadLedger(info, **tokenizer); !status.ok()) return status;
    set->versions[version] = std::move(*tokenizer);
  }
  return std::shared_ptr<const TokenizerSet>(std::move(set));
}

absl::Status Tokenizers::LoadLedger(const CollectionInfo& info, const Tokenizer& tokenizer) const {
  auto sids = sids_->Export(info.id, info.name, tokenizer);
  if (!sids.ok()) {
    // Unreadable SIDs fail this collection's calls only, as an unreadable model does.
    if (!absl::IsDataLoss(sids.status()) && !absl::IsInvalidArgument(sids.status())) {
      return sids.status();
    }
    return absl::DataLossError(absl::StrFormat("SIDs of collection '%s' are unreadable: %s",
                                               info.name, sids.status().message()));
  }
  SidOccupancy occupancy(tokenizer.quantizer().codebook_sizes());
  const int64_t levels = tokenizer.levels();
  for (size_t i = 0; i < sids->ids.size(); ++i) {
    occupancy.Add(sids->codes.data() + i * levels);
  }
  auto drift = sids_->ReadDrift(info.id, tokenizer.version());
  if (!drift.ok()) return drift.status();
  tokenizer.ledger().Load(std::move(occupancy), std::move(*drift));
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const TokenizerSet>> Tokenizers::GetVersions(
    absl::string_view name) const {
  auto collection = registry_->Find(name);
  if (!collection.ok()) return collection.status();
  if (absl::Status error = (*collection)->tokenizers.error(); !error.ok()) return error;
  return (*collection)->tokenizers.get();
}

absl::StatusOr<std::shared_ptr<const Tokenizer>> Tokenizers::GetTokenizer(absl::string_view name,
                                                                          uint32_t version) const {
  auto set = GetVersions(name);
  if (!set.ok()) return set.status();
  if (*set == nullptr) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "collection '%s' has no tokenizer yet: train one with TrainTokenizer", name));
  }
  if (version == 0) {
    if (std::shared_ptr<const Tokenizer> active = (*set)->active()) return active;
    return absl::FailedPreconditionError(absl::StrFormat(
        "collection '%s' has no active tokenizer version (kept: %s): activate one with "
        "ActivateTokenizer or name a version",
        name, KeptList((*set)->record)));
  }
  const auto it = (*set)->versions.find(version);
  if (it == (*set)->versions.end()) return NotKept(name, (*set)->record, version);
  return it->second;
}

absl::Status Tokenizers::CheckStillKept(absl::string_view name, uint32_t version) const {
  auto set = GetVersions(name);
  if (!set.ok()) return set.status();
  if (*set == nullptr || !(*set)->versions.contains(version)) {
    return absl::AbortedError(absl::StrFormat(
        "tokenizer version %d of collection '%s' was dropped during the call", version, name));
  }
  return absl::OkStatus();
}

std::vector<uint32_t> Tokenizers::VersionsToDrop(const storage::TokenizerVersionsRecord& record,
                                                 uint32_t keep, uint32_t keep_also, bool* enough) {
  std::vector<uint32_t> dropped;
  auto count = static_cast<uint32_t>(record.kept_size());
  for (uint32_t version : record.kept()) {  // ascending: oldest first
    if (count <= keep) break;
    if (version == record.active() || version == keep_also || Contains(record.pinned(), version)) {
      continue;
    }
    dropped.push_back(version);
    --count;
  }
  *enough = count <= keep;
  return dropped;
}

absl::StatusOr<std::shared_ptr<const TokenizerSet>> Tokenizers::Install(
    const WriteGuard& guard, storage::TokenizerVersionsRecord record,
    const std::vector<uint32_t>& dropped, std::shared_ptr<const Tokenizer> added,
    rocksdb::WriteBatch* batch) {
  const uint32_t cid = guard.info().id;
  for (uint32_t version : dropped) {
    sids_->AddDropVersion(cid, version, batch);
    Erase(record.mutable_kept(), version);
    Erase(record.mutable_pinned(), version);
  }
  sids_->AddVersions(cid, record, batch);
  if (auto status = db_->Write(*batch, "change tokenizer versions"); !status.ok()) return status;
  guard.MarkWritten();
  auto set = std::make_shared<TokenizerSet>();
  if (std::shared_ptr<const TokenizerSet> current = guard.collection().tokenizers.get()) {
    set->versions = current->versions;
  }
  if (added != nullptr) set->versions[added->version()] = std::move(added);
  for (uint32_t version : dropped) set->versions.erase(version);
  set->record = std::move(record);
  set->record.clear_pending();
  std::shared_ptr<const TokenizerSet> installed = std::move(set);
  // A collection without versions holds none (its answer still shows the record).
  guard.collection().tokenizers.Set(installed->versions.empty() ? nullptr : installed);
  return installed;
}

absl::StatusOr<Tokenizers::LockedVersions> Tokenizers::LockKeptVersion(absl::string_view name,
                                                                       uint32_t version) {
  auto guard = registry_->LockForWrite(name);
  if (!guard.ok()) return guard.status();
  if (absl::Status error = guard->collection().tokenizers.error(); !error.ok()) return error;
  auto record = sids_->ReadVersions(guard->info().id);
  if (!record.ok()) return record.status();
  if (!Contains(record->kept(), version)) return NotKept(name, *record, version);
  return LockedVersions{std::move(*guard), std::move(*record)};
}

absl::StatusOr<std::shared_ptr<const TokenizerSet>> Tokenizers::Activate(absl::string_view name,
                                                                         uint32_t version) {
  auto locked = LockKeptVersion(name, version);
  if (!locked.ok()) return locked.status();
  auto& [guard, record] = *locked;
  record.set_active(version);
  rocksdb::WriteBatch batch;
  return Install(guard, std::move(record), {}, nullptr, &batch);
}

absl::StatusOr<std::shared_ptr<const TokenizerSet>> Tokenizers::Drop(absl::string_view name,
                                                                     uint32_t version) {
  auto locked = LockKeptVersion(name, version);
  if (!locked.ok()) return locked.status();
  auto& [guard, record] = *locked;
  if (record.active() == version) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "tokenizer version %d is the active one of collection '%s': activate another version "
        "first",
        version, name));
  }
  if (Contains(record.pinned(), version)) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "tokenizer version %d of collection '%s' is pinned: unpin it first", version, name));
  }
  rocksdb::WriteBatch batch;
  return Install(guard, std::move(record), {version}, nullptr, &batch);
}

absl::StatusOr<std::shared_ptr<const TokenizerSet>> Tokenizers::Pin(absl::string_view name,
                                                                    uint32_t version, bool pinned) {
  auto locked = LockKeptVersion(name, version);
  if (!locked.ok()) return locked.status();
  auto& [guard, record] = *locked;
  if (pinned) {
    InsertSorted(record.mutable_pinned(), version);
  } else {
    Erase(record.mutable_pinned(), version);
  }
  rocksdb::WriteBatch batch;
  return Install(guard, std::move(record), {}, nullptr, &batch);
}

absl::StatusOr<std::shared_ptr<const TokenizerSet>> Tokenizers::SetRetention(absl::string_view name,
                                                                             uint32_t keep) {
  if (keep > kMaxKeptTokenizerVersions) {
    return absl::InvalidArgumentError(
        absl::StrFormat("keep_versions %d is outside 1..%d (0: the server's default)", keep,
                        kMaxKeptTokenizerVersions));
  }
  auto guard = registry_->LockForWrite(name);
  if (!guard.ok()) return guard.status();
  if (absl::Status error = guard->collection().tokenizers.error(); !error.ok()) return error;
  if (auto status = registry_->SetKeepTokenizerVersions(*guard, keep); !status.ok()) return status;
  auto record = sids_->ReadVersions(guard->info().id);
  if (!record.ok()) return record.status();
  bool enough = false;
  const std::vector<uint32_t> dropped =
      VersionsToDrop(*record, KeepOf(guard->collection().Snapshot()), 0, &enough);
  rocksdb::WriteBatch batch;
  return Install(*guard, std::move(*record), dropped, nullptr, &batch);
}

absl::StatusOr<std::unique_ptr<Tokenizers::PendingVersion>> Tokenizers::BeginVersion(
    absl::string_view name, uint32_t cid, bool activates) {
  auto guard = registry_->LockForWrite(name, cid);
  if (!guard.ok()) return guard.status();
  if (absl::Status error = guard->collection().tokenizers.error(); !error.ok()) return error;
  auto record = sids_->ReadVersions(guard->info().id);
  if (!record.ok()) return record.status();
  const uint32_t version = record->next_version();
  storage::TokenizerVersionsRecord after = *record;
  after.add_kept(version);
  if (activates) after.set_active(version);
  bool enough = false;
  VersionsToDrop(after, KeepOf(guard->collection().Snapshot()), version, &enough);
  if (!enough) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "collection '%s' keeps %d tokenizer versions and every kept one (%s) is active or "
        "pinned: unpin or drop one, or raise the retention (SetTokenizerRetention)",
        name, KeepOf(guard->collection().Snapshot()), KeptList(*record)));
  }
  if (version == UINT32_MAX) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("collection '%s' has used every tokenizer version number", name));
  }
  record->set_next_version(version + 1);
  record->add_pending(version);
  rocksdb::WriteBatch batch;
  sids_->AddVersions(guard->info().id, *record, &batch);
  if (auto status = db_->Write(batch, "reserve a tokenizer version"); !status.ok()) return status;

  auto pending = std::unique_ptr<PendingVersion>(new PendingVersion());
  pending->owner_ = this;
  pending->collection_ = std::string(name);
  pending->cid_ = guard->info().id;
  pending->version_ = version;
  pending->parent_version_ = record->active();
  pending->changes_ = std::make_shared<ItemChangeLog>();
  guard->collection().change_logs.push_back(pending->changes_);
  return pending;
}

Tokenizers::PendingVersion::~PendingVersion() {
  if (!done_ && owner_ != nullptr) owner_->Abandon(*this);
}

void Tokenizers::Abandon(PendingVersion& pending) {
  pending.done_ = true;
  auto guard = registry_->LockForWrite(pending.collection_, pending.cid_);
  if (!guard.ok()) return;  // dropped: its rows went with the collection
  std::erase(guard->collection().change_logs, pending.changes_);
  auto record = sids_->ReadVersions(pending.cid_);
  if (!record.ok()) {
    LogWarning("collection '%s': version %d left pending (removed at the next start): %s",
               pending.collection_, pending.version_, record.status().ToString());
    return;
  }
  Erase(record->mutable_pending(), pending.version_);
  rocksdb::WriteBatch batch;
  sids_->AddDropVersion(pending.cid_, pending.version_, &batch);
  sids_->AddVersions(pending.cid_, *record, &batch);
  if (auto status = db_->Write(batch, "remove an uncommitted tokenizer version"); !status.ok()) {
    LogWarning("collection '%s': version %d left pending (removed at the next start): %s",
               pending.collection_, pending.version_, status.ToString());
  }
}

absl::Status Tokenizers::WriteVersionRows(
    const PendingVersion& pending, int64_t levels, absl::Span<const uint64_t> ids,
    absl::Span<const int32_t> codes, absl::Span<const uint32_t> suffixes,
    const std::function<void(int64_t, int64_t)>& progress) const {
  const auto n = static_cast<int64_t>(ids.size());
  for (int64_t first = 0; first < n; first += kVersionRowsPerBatch) {
    const int64_t count = std::min(kVersionRowsPerBatch, n - first);
    rocksdb::WriteBatch batch;
    sids_->AddSids(pending.cid_, pending.version_, levels, ids.subspan(first, count),
                   codes.subspan(first * levels, count * levels), suffixes.subspan(first, count),
                   &batch);
    if (auto status = WritePendingRows(pending, &batch); !status.ok()) return status;
    if (progress) progress(first + count, n);
  }
  return absl::OkStatus();
}

absl::Status Tokenizers::ReassignWritten(const PendingVersion& pending, const Tokenizer& tokenizer,
                                         const ItemSet& snapshot, const CollectionInfo& info,
                                         int64_t items_now, absl::Span<const uint64_t> written,
                                         SidOccupancy* occupancy,
                                         rocksdb::WriteBatch* batch) const {
  if (written.empty()) return absl::OkStatus();
  const uint32_t cid = pending.cid_;
  const int64_t levels = tokenizer.levels();
  const int64_t d = info.dimension;
  auto stored = sids_->ReadStored(cid, pending.version_, levels, written);
  if (!stored.ok()) return stored.status();
  auto now = items_->Get(info, written);
  if (!now.ok()) return now.status();
  // Removed items lose their SID; the rest free the tuple they hold under the version.
  std::vector<uint64_t> removed;
  std::vector<std::optional<StoredSid>> removed_stored;
  std::vector<uint64_t> assign_ids;
  std::vector<float> assign_vectors;
  std::vector<std::optional<StoredSid>> assign_stored;
  size_t found = 0;
  for (size_t i = 0; i < written.size(); ++i) {
    const uint64_t id = written[i];
    const bool present = found < now->ids.size() && now->ids[found] == id;
    if ((*stored)[i]) occupancy->Remove((*stored)[i]->codes.data());
    if (!present) {
      removed.push_back(id);
      removed_stored.push_back((*stored)[i]);
      continue;
    }
    const float* vector = now->vectors.data() + found * d;
    ++found;
    // An item whose vector is the one of the snapshot keeps the SID written for it.
    const auto row = std::lower_bound(snapshot.ids.begin(), snapshot.ids.end(), id);
    if (row != snapshot.ids.end() && *row == id && (*stored)[i] &&
        std::equal(vector, vector + d,
                   snapshot.vectors.data() + (row - snapshot.ids.begin()) * d)) {
      occupancy->Add((*stored)[i]->codes.data());
      continue;
    }
    assign_ids.push_back(id);
    assign_vectors.insert(assign_vectors.end(), vector, vector + d);
    assign_stored.push_back((*stored)[i]);
  }
  sids_->AddDeletes(cid, removed, removed_stored, batch);
  if (assign_ids.empty()) return absl::OkStatus();
  auto assigned = tokenizer.AssignNew(
      assign_vectors.data(), static_cast<int64_t>(assign_ids.size()), items_now, occupancy);
  if (!assigned.ok()) return assigned.status();
  // Suffixes carry over from the parent where the tuple is the parent's.
  std::vector<int64_t> preferred(assign_ids.size(), -1);
  if (pending.parent_version_ > 0) {
    auto parent = sids_->ReadStored(cid, pending.parent_version_, levels, assign_ids);
    if (parent.ok()) {  // a dropped parent has no rows: no preference
      for (size_t i = 0; i < assign_ids.size(); ++i) {
        const std::optional<StoredSid>& sid = (*parent)[i];
        if (sid && sid->codes.size() == static_cast<size_t>(levels) &&
            std::equal(sid->codes.begin(), sid->codes.end(),
                       assigned->codes.begin() + static_cast<int64_t>(i) * levels)) {
          preferred[i] = sid->suffix;
        }
      }
    }
  }
  return sids_->AddUpserts(cid, tokenizer, assign_ids, assigned->codes, assign_stored, preferred,
                           batch);
}

std::vector<uint64_t> Tokenizers::TakeWritten(const WriteGuard& guard,
                                              const PendingVersion& pending) {
  (void)guard;  // proves the caller holds the lock the log is guarded by
  std::vector<uint64_t> written(pending.changes_->ids.begin(), pending.changes_->ids.end());
  pending.changes_->ids.clear();
  std::sort(written.begin(), written.end());
  return written;
}

absl::Status Tokenizers::WritePendingRows(const PendingVersion& pending,
                                          rocksdb::WriteBatch* batch) const {
  // Unsynced: the commit's Write, which makes the version kept, syncs the WAL up to it.
  if (auto status = db_->WriteUnsynced(*batch, "write a tokenizer version's SIDs"); !status.ok()) {
    return status;
  }
  // A drop takes the collection's rows under its write lock: after it, the rows just written
  // would outlive it, so they go here.
  auto guard = registry_->LockForWrite(pending.collection_, pending.cid_);
  if (guard.ok()) return absl::OkStatus();
  rocksdb::WriteBatch removal;
  sids_->AddDropVersion(pending.cid_, pending.version_, &removal);
  if (auto status = db_->Write(removal, "remove a dropped collection's SIDs"); !status.ok()) {
    LogWarning("collection '%s' (dropped): SIDs of version %d left behind: %s", pending.collection_,
               pending.version_, status.ToString());
  }
  return guard.status();
}

absl::StatusOr<Tokenizers::Committed> Tokenizers::CommitVersion(
    PendingVersion& pending, storage::TokenizerRecord record, TokenizerModel model,
    const ItemSet& snapshot, absl::Span<const int32_t> codes, Activation activation) {
  const int64_t levels = model.quantizer.levels();
  const auto n = static_cast<int64_t>(snapshot.ids.size());
  if (model.input_dimension() != snapshot.info.dimension ||
      static_cast<int64_t>(codes.size()) != n * levels) {
    return absl::InternalError("tokenizer commit with inconsistent shapes");
  }
  const uint32_t cid = pending.cid_;
  const uint32_t version = pending.version_;
  // Without the lock: the tokenizer (its assignment tables) and the snapshot items' places.
  record.set_version(version);
  record.set_decision(activation.decision);
  auto tokenizer = std::make_shared<const Tokenizer>(std::move(model), record);
  SidOccupancy occupancy(tokenizer->quantizer().codebook_sizes());
  for (int64_t i = 0; i < n; ++i) occupancy.Add(codes.data() + i * levels);

  // Catch-up rounds without the lock: the items written since the snapshot take their places
  // under the rule, in id order, after every snapshot item; writes made meanwhile are logged
  // again for the next round. The final round, under the lock, then has little left to do.
  size_t previous = SIZE_MAX;
  for (int round = 0; round < kMaxCatchUpRounds; ++round) {
    std::vector<uint64_t> written;
    CollectionInfo info;
    {
      auto guard = registry_->LockForWrite(pending.collection_, cid);
      if (!guard.ok()) return guard.status();
      written = TakeWritten(*guard, pending);
      info = guard->collection().Snapshot();
    }
    // Few enough for the final round, or no fewer than the round before (writes outpace the
    // rounds): back into the log for the final round.
    if (written.size() <= kFinalRoundItems ||
        (round >= kMinCatchUpRounds && written.size() >= previous)) {
      auto guard = registry_->LockForWrite(pending.collection_, cid);
      if (!guard.ok()) return guard.status();
      pending.changes_->ids.insert(written.begin(), written.end());
      break;
    }
    previous = written.size();
    rocksdb::WriteBatch batch;
    if (auto status =
            ReassignWritten(pending, *tokenizer, snapshot, info,
                            static_cast<int64_t>(info.item_count), written, &occupancy, &batch);
        !status.ok()) {
      return status;
    }
    if (auto status = WritePendingRows(pending, &batch); !status.ok()) return status;
  }

  auto guard = registry_->LockForWrite(pending.collection_, cid);
  if (!guard.ok()) return guard.status();
  Collection& collection = guard->collection();
  if (absl::Status error = collection.tokenizers.error(); !error.ok()) return error;
  auto versions = sids_->ReadVersions(cid);
  if (!versions.ok()) return versions.status();
  Committed committed;
  committed.version = version;
  committed.activated = activation.activate;
  committed.decision = activation.decision;
  if (activation.activate && activation.only_if_parent_active &&
      versions->active() != pending.parent_version_) {
    committed.activated = false;
    committed.decision =
        absl::StrFormat("not activated: the active version changed from %d to %d while the job ran",
                        pending.parent_version_, versions->active());
    record.set_decision(committed.decision);
    tokenizer = std::make_shared<const Tokenizer>(tokenizer->model(), record);
  }
  rocksdb::WriteBatch batch;
  if (auto status = ReassignWritten(pending, *tokenizer, snapshot, collection.Snapshot(),
                                    static_cast<int64_t>(collection.item_count.load()),
                                    TakeWritten(*guard, pending), &occupancy, &batch);
      !status.ok()) {
    return status;
  }
  Erase(versions->mutable_pending(), version);
  InsertSorted(versions->mutable_kept(), version);
  if (committed.activated) versions->set_active(version);
  bool enough = false;
  const std::vector<uint32_t> dropped =
      VersionsToDrop(*versions, KeepOf(collection.Snapshot()), version, &enough);
  if (!enough) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "collection '%s' keeps %d tokenizer versions and every other kept one (%s) is active or "
        "pinned: version %d is not committed",
        pending.collection_, KeepOf(collection.Snapshot()), KeptList(*versions), version));
  }
  sids_->AddModel(cid, *tokenizer, &batch);
  storage::SidDriftRecord drift;
  drift.set_version(version);
  sids_->AddDrift(cid, drift, &batch);
  tokenizer->ledger().Load(std::move(occupancy), drift);  // no one sees it yet
  auto installed = Install(*guard, std::move(*versions), dropped, tokenizer, &batch);
  if (!installed.ok()) return installed.status();
  pending.done_ = true;
  std::erase(collection.change_logs, pending.changes_);
  return committed;
}

void Tokenizers::LogItemWrites(Collection& collection, absl::Span<const uint64_t> ids) {
  for (const std::shared_ptr<ItemChangeLog>& log : collection.change_logs) {
    log->ids.insert(ids.begin(), ids.end());
  }
}

absl::Status Tokenizers::AddItemUpserts(uint32_t cid, const TokenizerSet& set,
                                        absl::Span<const uint64_t> ids,
                                        absl::Span<const float> vectors, int64_t items_after,
                                        SidChanges* changes, rocksdb::WriteBatch* batch) const {
  const auto n = static_cast<int64_t>(ids.size());
  for (const auto& [version, tokenizer] : set.versions) {
    const int64_t levels = tokenizer->levels();
    LedgerChange* change = changes->For(*tokenizer);
    auto stored = sids_->ReadStored(cid, version, levels, ids);
    if (!stored.ok()) return stored.status();
    for (const std::optional<StoredSid>& sid : *stored) {
      if (sid) change->Remove(sid->codes.data());
    }
    auto assigned = tokenizer->AssignNew(vectors.data(), n, items_after, change->occupancy());
    if (!assigned.ok()) return assigned.status();
    storage::SidDriftRecord* drift = change->drift();
    for (int64_t i = 0; i < n; ++i) {
      change->Added(assigned->codes.data() + i * levels);
      drift->set_displaced(drift->displaced() + assigned->displaced[i]);
      drift->set_overflow(drift->overflow() + assigned->overflow[i]);
      drift->set_error_sum(drift->error_sum() + assigned->error[i]);
    }
    drift->set_assigned(drift->assigned() + static_cast<uint64_t>(n));
    drift->set_version(version);
    if (auto status = sids_->AddUpserts(cid, *tokenizer, ids, assigned->codes, *stored, {}, batch);
        !status.ok()) {
      return status;
    }
    sids_->AddDrift(cid, *drift, batch);
  }
  return absl::OkStatus();
}

absl::Status Tokenizers::AddItemDeletes(uint32_t cid, const TokenizerSet& set,
                                        absl::Span<const uint64_t> ids, SidChanges* changes,
                                        rocksdb::WriteBatch* batch) const {
  for (const auto& [version, tokenizer] : set.versions) {
    LedgerChange* change = changes->For(*tokenizer);
    auto stored = sids_->ReadStored(cid, version, tokenizer->levels(), ids);
    if (!stored.ok()) return stored.status();
    for (const std::optional<StoredSid>& sid : *stored) {
      if (sid) change->Remove(sid->codes.data());
    }
    sids_->AddDeletes(cid, ids, *stored, batch);
  }
  return absl::OkStatus();
}

absl::StatusOr<SidList> Tokenizers::GetSids(absl::string_view name, const Tokenizer& tokenizer,
                                            absl::Span<const uint64_t> ids) const {
  auto collection = registry_->Find(name);
  if (!collection.ok()) return collection.status();
  if (ids.size() > kMaxIdsPerCall) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ids has %d entries, more than the %d allowed per call", ids.size(), kMaxIdsPerCall));
  }
  auto sids = sids_->Get((*collection)->info.id, name, tokenizer, DistinctIds(ids));
  if (!sids.ok()) return sids.status();
  if (auto status = CheckStillKept(name, tokenizer.version()); !status.ok()) return status;
  return sids;
}

absl::StatusOr<SidList> Tokenizers::LookupSids(absl::string_view name, const Tokenizer& tokenizer,
                                               absl::Span<const int64_t> prefix,
                                               int64_t limit) const {
  auto collection = registry_->Find(name);
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
  auto sids = sids_->Lookup((*collection)->info.id, tokenizer, prefix, limit);
  if (!sids.ok()) return sids.status();
  if (auto status = CheckStillKept(name, tokenizer.version()); !status.ok()) return status;
  return sids;
}

absl::StatusOr<SidList> Tokenizers::ExportSids(absl::string_view name,
                                               const Tokenizer& tokenizer) const {
  auto collection = registry_->Find(name);
  if (!collection.ok()) return collection.status();
  auto sids = sids_->Export((*collection)->info.id, name, tokenizer);
  if (!sids.ok()) return sids.status();
  if (auto status = CheckStillKept(name, tokenizer.version()); !status.ok()) return status;
  return sids;
}

}  // namespace quantd
