#include "server/tokenizers.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "core/semantic_id.h"
#include "server/items.h"
#include "server/tokenizer.h"

namespace quantd {

absl::Status Tokenizers::LoadAll() {
  // An unreadable model fails only its collection's calls (and writes); the rest serves.
  for (const std::shared_ptr<Collection>& collection : registry_->All()) {
    absl::Status status = collection->tokenizer.TakeLoaded(
        sids_->LoadCurrent(collection->info.id, collection->info.name));
    if (!status.ok()) return status;
    if (std::shared_ptr<const Tokenizer> tokenizer = collection->tokenizer.get()) {
      status = LoadLedger(collection->info, *tokenizer);
      // Unreadable SIDs fail this collection's calls only, as an unreadable model does.
      if (absl::IsDataLoss(status)) {
        collection->tokenizer.Fail(status);
      } else if (!status.ok()) {
        return status;
      }
    }
  }
  return absl::OkStatus();
}

absl::Status Tokenizers::LoadLedger(const CollectionInfo& info, const Tokenizer& tokenizer) const {
  auto sids = sids_->Export(info.id, info.name, tokenizer);
  if (!sids.ok()) {
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

absl::Status Tokenizers::AddItemUpserts(uint32_t cid, const Tokenizer& tokenizer,
                                        absl::Span<const uint64_t> ids,
                                        absl::Span<const float> vectors, int64_t items_after,
                                        LedgerChange* change, rocksdb::WriteBatch* batch) const {
  const int64_t levels = tokenizer.levels();
  const auto n = static_cast<int64_t>(ids.size());
  auto stored = sids_->ReadStored(cid, levels, ids);
  if (!stored.ok()) return stored.status();
  for (const std::optional<StoredSid>& sid : *stored) {
    if (sid && sid->version == tokenizer.version()) change->Remove(sid->codes.data());
  }
  auto assigned = tokenizer.AssignNew(vectors.data(), n, items_after, change->occupancy());
  if (!assigned.ok()) return assigned.status();
  storage::SidDriftRecord* drift = change->drift();
  for (int64_t i = 0; i < n; ++i) {
    change->Added(assigned->codes.data() + i * levels);
    drift->set_displaced(drift->displaced() + assigned->displaced[i]);
    drift->set_overflow(drift->overflow() + assigned->overflow[i]);
    drift->set_error_sum(drift->error_sum() + assigned->error[i]);
  }
  drift->set_assigned(drift->assigned() + static_cast<uint64_t>(n));
  drift->set_version(tokenizer.version());
  if (auto status = sids_->AddUpserts(cid, tokenizer, ids, assigned->codes, *stored, batch);
      !status.ok()) {
    return status;
  }
  sids_->AddDrift(cid, *drift, batch);
  return absl::OkStatus();
}

absl::Status Tokenizers::AddItemDeletes(uint32_t cid, const Tokenizer& tokenizer,
                                        absl::Span<const uint64_t> ids, LedgerChange* change,
                                        rocksdb::WriteBatch* batch) const {
  auto stored = sids_->ReadStored(cid, tokenizer.levels(), ids);
  if (!stored.ok()) return stored.status();
  for (const std::optional<StoredSid>& sid : *stored) {
    if (sid && sid->version == tokenizer.version()) change->Remove(sid->codes.data());
  }
  sids_->AddDeletes(cid, ids, *stored, batch);
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const Tokenizer>> Tokenizers::GetTokenizer(
    absl::string_view name) const {
  auto collection = registry_->Find(name);
  if (!collection.ok()) return collection.status();
  return (*collection)
      ->tokenizer.GetOr(absl::FailedPreconditionError(absl::StrFormat(
          "collection '%s' has no tokenizer yet: train one with TrainTokenizer", name)));
}

absl::StatusOr<uint32_t> Tokenizers::CommitTokenizer(absl::string_view name,
                                                     storage::TokenizerRecord record,
                                                     ResidualQuantizer quantizer,
                                                     const ItemSet& snapshot,
                                                     const std::vector<int32_t>& codes) {
  const int64_t levels = quantizer.levels();
  if (quantizer.dimension() != snapshot.info.dimension ||
      codes.size() != snapshot.ids.size() * levels) {
    return absl::InternalError("tokenizer commit with inconsistent shapes");
  }
  auto guard = registry_->LockForWrite(name, snapshot.info.id);
  if (!guard.ok()) return guard.status();
  const uint32_t cid = guard->info().id;
  const int64_t d = guard->info().dimension;
  auto old_version = sids_->CurrentVersion(cid);
  if (!old_version.ok()) return old_version.status();
  record.set_version(*old_version + 1);
  auto tokenizer = std::make_shared<const Tokenizer>(std::move(quantizer), std::move(record));

  // Every item stored now: codes from training where the vector is the one trained on, else
  // encoded here (items written while the job ran).
  std::vector<uint64_t> ids;
  std::vector<int32_t> all_codes;
  std::vector<int64_t> stale_rows;  // rows of `ids` to encode anew
  std::vector<float> stale_vectors;
  absl::Status status = ReconcileWithSnapshot(
      *items_, snapshot, [&](uint64_t id, int64_t snapshot_row, const float* vector) {
        const auto row = static_cast<int64_t>(ids.size());
        ids.push_back(id);
        all_codes.resize(all_codes.size() + static_cast<size_t>(levels));
        if (snapshot_row >= 0) {
          std::copy_n(codes.data() + snapshot_row * levels, levels,
                      all_codes.data() + row * levels);
        } else {
          stale_rows.push_back(row);
          stale_vectors.insert(stale_vectors.end(), vector, vector + d);
        }
        return absl::OkStatus();
      });
  if (!status.ok()) return status;
  // The snapshot items hold their places; the items written since take theirs under the rule.
  SidOccupancy occupancy(tokenizer->quantizer().codebook_sizes());
  std::vector<bool> is_stale(ids.size(), false);
  for (int64_t row : stale_rows) is_stale[row] = true;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!is_stale[i]) occupancy.Add(all_codes.data() + i * levels);
  }
  if (!stale_rows.empty()) {
    auto fresh = tokenizer->AssignNew(stale_vectors.data(), static_cast<int64_t>(stale_rows.size()),
                                      static_cast<int64_t>(ids.size()), &occupancy);
    if (!fresh.ok()) return fresh.status();
    for (size_t i = 0; i < stale_rows.size(); ++i) {
      std::copy_n(fresh->codes.data() + i * levels, levels,
                  all_codes.data() + stale_rows[i] * levels);
    }
  }
  const std::vector<uint32_t> suffixes =
      AssignFreshSuffixes(all_codes.data(), static_cast<int64_t>(ids.size()), levels);

  rocksdb::WriteBatch batch;
  sids_->AddCommit(cid, *old_version, *tokenizer, ids, all_codes, suffixes, &batch);
  if (auto s = db_->Write(batch, "commit tokenizer"); !s.ok()) return s;
  storage::SidDriftRecord drift;
  drift.set_version(tokenizer->version());
  tokenizer->ledger().Load(std::move(occupancy), std::move(drift));
  guard->MarkWritten();
  const uint32_t version = tokenizer->version();
  guard->collection().tokenizer.Set(std::move(tokenizer));
  return version;
}

absl::StatusOr<SidList> Tokenizers::GetSids(absl::string_view name, const Tokenizer& tokenizer,
                                            absl::Span<const uint64_t> ids) const {
  auto collection = registry_->Find(name);
  if (!collection.ok()) return collection.status();
  if (ids.size() > kMaxIdsPerCall) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ids has %d entries, more than the %d allowed per call", ids.size(), kMaxIdsPerCall));
  }
  return sids_->Get((*collection)->info.id, name, tokenizer, DistinctIds(ids));
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
  return sids_->Lookup((*collection)->info.id, tokenizer, prefix, limit);
}

absl::StatusOr<SidList> Tokenizers::ExportSids(absl::string_view name,
                                               const Tokenizer& tokenizer) const {
  auto collection = registry_->Find(name);
  if (!collection.ok()) return collection.status();
  return sids_->Export((*collection)->info.id, name, tokenizer);
}

}  // namespace quantd
