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
  }
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
  sids_->AddCommit(cid, *old_version, *tokenizer, ids, all_codes, suffixes, &batch);
  if (auto s = db_->Write(batch, "commit tokenizer"); !s.ok()) return s;
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

absl::StatusOr<std::vector<uint64_t>> Tokenizers::CountTuples(absl::string_view name,
                                                              const Tokenizer& tokenizer,
                                                              const int32_t* codes,
                                                              int64_t n) const {
  auto collection = registry_->Find(name);
  if (!collection.ok()) return collection.status();
  return sids_->CountTuples((*collection)->info.id, tokenizer, codes, n);
}

}  // namespace quantd
