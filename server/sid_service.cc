#include "server/sid_service.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"
#include "core/vectors.h"

namespace quantd {
absl::StatusOr<std::vector<int64_t>> SidPrefixOf(absl::Span<const uint32_t> codes,
                                                 absl::string_view tokens, absl::string_view field,
                                                 absl::string_view tokens_field) {
  std::vector<int64_t> prefix(codes.begin(), codes.end());
  if (!tokens.empty()) {
    if (!prefix.empty()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("give %s or %s, not both", field, tokens_field));
    }
    auto parsed = ParseSidTokens(tokens);
    if (!parsed.ok()) {
      if (tokens_field == "tokens") return parsed.status();  // its message names `tokens`
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: %s", tokens_field, parsed.status().message()));
    }
    prefix = std::move(*parsed);
  }
  return prefix;
}

absl::StatusOr<SidService::Encoded> SidService::Encode(absl::string_view collection,
                                                       absl::Span<const uint64_t> ids,
                                                       absl::Span<const float> vectors,
                                                       uint32_t version) const {
  auto info = storage_->collections().Describe(collection);
  if (!info.ok()) return info.status();
  if (ids.empty() && vectors.empty()) {
    return absl::InvalidArgumentError("ids and vectors are both empty: give either or both");
  }
  auto tokenizer = storage_->tokenizers().GetTokenizer(collection, version);
  if (!tokenizer.ok()) return tokenizer.status();
  Encoded encoded;
  encoded.tokenizer_version = (*tokenizer)->version();
  encoded.levels = (*tokenizer)->levels();
  if (!ids.empty()) {
    if (static_cast<int64_t>(ids.size()) > kMaxEncodeRows) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "ids has %d entries, at most %d per request", ids.size(), kMaxEncodeRows));
    }
    auto sids = storage_->tokenizers().GetSids(collection, **tokenizer, ids);
    if (!sids.ok()) return sids.status();
    encoded.by_id = std::move(*sids);
  }
  if (!vectors.empty()) {
    const int64_t d = info->dimension;
    if (static_cast<int64_t>(vectors.size()) % d != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "vectors has %d values, not a multiple of dimension %d of collection '%s'",
          vectors.size(), d, collection));
    }
    const int64_t n = static_cast<int64_t>(vectors.size()) / d;
    if (n > kMaxEncodeRows) {
      return absl::InvalidArgumentError(
          absl::StrFormat("vectors holds %d rows, at most %d per request", n, kMaxEncodeRows));
    }
    if (auto s = CheckVectors(vectors.data(), n, d, info->metric); !s.ok()) return s;
    const SidLedger::Reader ledger((*tokenizer)->ledger());
    const SidOccupancy& occupancy = ledger.occupancy();
    // As the next new item: the collection would then hold one item more.
    auto proposed = (*tokenizer)->Propose(vectors.data(), n, occupancy.items() + 1, occupancy);
    if (!proposed.ok()) return proposed.status();
    encoded.vectors = std::move(*proposed);
    encoded.items_with_codes.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      encoded.items_with_codes[i] = static_cast<uint64_t>(
          occupancy.tuple_count(encoded.vectors.codes.data() + i * encoded.levels));
    }
  }
  return encoded;
}

SidService::Drift SidService::DriftOf(const Tokenizer& tokenizer) {
  const storage::TokenizerRecord& record = tokenizer.record();
  const SidLedger::Reader ledger(tokenizer.ledger());
  const SidOccupancy& occupancy = ledger.occupancy();
  const storage::SidDriftRecord& counters = ledger.drift();
  Drift drift;
  drift.assigned = counters.assigned();
  if (drift.assigned > 0) {
    const auto assigned = static_cast<double>(drift.assigned);
    drift.displaced_fraction = static_cast<double>(counters.displaced()) / assigned;
    drift.overflow_fraction = static_cast<double>(counters.overflow()) / assigned;
    drift.assigned_mse =
        counters.error_sum() / (assigned * static_cast<double>(tokenizer.dimension()));
  }
  // Tokenizers of earlier releases recorded no committed figures: the training rows' MSE. An
  // RQ-VAE's assignment errors are in latent space, as its levels' MSE after the last level at
  // the commit (committed_mse is the decoder's, in embedding space).
  const double last_level_mse =
      record.levels_size() > 0 ? record.levels(record.levels_size() - 1).mse_after() : 0;
  drift.training_mse = tokenizer.rqvae() != nullptr   ? last_level_mse
                       : record.committed_items() > 0 ? record.committed_mse()
                                                      : last_level_mse;
  const double trained = static_cast<double>(record.committed_items() > 0 ? record.committed_items()
                                                                          : record.trained_items());
  drift.growth = trained > 0 ? static_cast<double>(occupancy.items()) / trained : 0;
  drift.bounds = tokenizer.BoundsFor(occupancy.items());
  for (int64_t l = 0; l < tokenizer.levels(); ++l) {
    int64_t at = 0;
    int64_t over = 0;
    const int64_t size_max = drift.bounds[l].size_max;
    if (size_max > 0) {
      for (int64_t count : occupancy.level_counts(l)) {
        at += count >= size_max;
        over += count > size_max;
      }
    }
    drift.clusters_at_bound.push_back(at);
    drift.clusters_over_bound.push_back(over);
  }
  // The rule documented in quantd.proto (TokenizerDrift.retrain_recommended).
  if (drift.growth >= kRetrainGrowth) {
    drift.reasons.push_back(absl::StrFormat(
        "the collection grew %.2fx since training (rule: >= %.1fx)", drift.growth, kRetrainGrowth));
  } else if (trained > 0 && drift.growth <= kRetrainShrink) {
    drift.reasons.push_back(
        absl::StrFormat("the collection shrank to %.2fx of its size at training (rule: <= %.1fx)",
                        drift.growth, kRetrainShrink));
  }
  if (drift.assigned >= kRetrainMinAssigned) {
    if (drift.overflow_fraction > kRetrainOverflow) {
      drift.reasons.push_back(absl::StrFormat(
          "%.1f%% of the items assigned since training overflowed capacity (rule: > %.0f%%)",
          100 * drift.overflow_fraction, 100 * kRetrainOverflow));
    }
    if (drift.training_mse > 0 && drift.assigned_mse > kRetrainMseRatio * drift.training_mse) {
      drift.reasons.push_back(absl::StrFormat(
          "items assigned since training have %.2fx the training MSE (rule: > %.2fx)",
          drift.assigned_mse / drift.training_mse, kRetrainMseRatio));
    }
    if (drift.displaced_fraction > kRetrainDisplaced) {
      drift.reasons.push_back(absl::StrFormat(
          "%.0f%% of the items assigned since training were displaced from their nearest codes "
          "(rule: > %.0f%%)",
          100 * drift.displaced_fraction, 100 * kRetrainDisplaced));
    }
  }
  drift.retrain_recommended = !drift.reasons.empty();
  return drift;
}

absl::StatusOr<SidList> SidService::Lookup(absl::string_view collection,
                                           absl::Span<const uint32_t> codes,
                                           absl::string_view tokens, uint64_t limit,
                                           uint32_t version) const {
  auto prefix = SidPrefixOf(codes, tokens, "codes");
  if (!prefix.ok()) return prefix.status();
  if (prefix->empty()) return absl::InvalidArgumentError("codes and tokens are both empty");
  if (limit > static_cast<uint64_t>(kMaxLookupLimit)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("limit %d exceeds %d", limit, kMaxLookupLimit));
  }
  const int64_t rows = limit == 0 ? kDefaultLookupLimit : static_cast<int64_t>(limit);
  auto tokenizer = storage_->tokenizers().GetTokenizer(collection, version);
  if (!tokenizer.ok()) return tokenizer.status();
  return storage_->tokenizers().LookupSids(collection, **tokenizer, *prefix, rows);
}

absl::StatusOr<SidList> SidService::Export(absl::string_view collection, uint32_t version) const {
  auto tokenizer = storage_->tokenizers().GetTokenizer(collection, version);
  if (!tokenizer.ok()) return tokenizer.status();
  return storage_->tokenizers().ExportSids(collection, **tokenizer);
}

absl::StatusOr<SidService::Next> SidService::NextCodes(absl::string_view collection,
                                                       absl::Span<const uint32_t> codes,
                                                       absl::string_view tokens,
                                                       uint32_t version) const {
  auto prefix = SidPrefixOf(codes, tokens, "prefix");
  if (!prefix.ok()) return prefix.status();
  auto tokenizer = storage_->tokenizers().GetTokenizer(collection, version);
  if (!tokenizer.ok()) return tokenizer.status();
  const int64_t levels = (*tokenizer)->levels();
  const auto length = static_cast<int64_t>(prefix->size());
  if (length > levels) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "prefix has %d codes; tokenizer version %d has %d levels, so the prefix of a next token "
        "has 0..%d",
        length, (*tokenizer)->version(), levels, levels));
  }
  for (int64_t l = 0; l < length; ++l) {
    const int64_t k = (*tokenizer)->quantizer().codebook_size(l);
    if ((*prefix)[l] >= k) {
      return absl::InvalidArgumentError(
          absl::StrFormat("prefix[%d] = %d is outside 0..%d", l, (*prefix)[l], k - 1));
    }
  }
  Next next;
  next.tokenizer_version = (*tokenizer)->version();
  next.level = length;
  if (length == levels) {
    // The suffixes of one tuple, each naming one item.
    auto sids =
        storage_->tokenizers().LookupSids(collection, **tokenizer, *prefix, kMaxLookupLimit);
    if (!sids.ok()) return sids.status();
    for (size_t i = 0; i < sids->ids.size(); ++i) {
      next.codes.push_back(sids->suffixes[i]);
      next.items.push_back(1);
      next.ids.push_back(sids->ids[i]);
    }
    return next;
  }
  std::vector<int32_t> narrow(prefix->begin(), prefix->end());
  const SidLedger::Reader ledger((*tokenizer)->ledger());
  for (const auto& [code, count] : ledger.occupancy().NextCodes(narrow.data(), length)) {
    next.codes.push_back(code);
    next.items.push_back(count);
  }
  return next;
}

absl::StatusOr<SidService::SidMap> SidService::Map(absl::string_view collection,
                                                   uint32_t from_version,
                                                   uint32_t to_version) const {
  SidMap map;
  auto from = Export(collection, from_version);
  if (!from.ok()) return from.status();
  auto to = Export(collection, to_version);
  if (!to.ok()) return to.status();
  // Every kept version holds a SID for every item; items written between the two scans make
  // the lists differ: a retry reads them again.
  if (from->ids != to->ids) {
    return absl::AbortedError(absl::StrFormat(
        "items of collection '%s' changed while versions %d and %d were read; retry", collection,
        from->version, to->version));
  }
  map.from = std::move(*from);
  map.to = std::move(*to);
  return map;
}

absl::StatusOr<std::shared_ptr<const SidService::Figures>> SidService::GetFigures(
    const CollectionInfo& info, const Tokenizer& tokenizer, Freshness freshness) const {
  const auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard lock(mu_);
    const auto cached = figures_.find({info.name, tokenizer.version()});
    if (cached != figures_.end() && cached->second->collection_id == info.id) {
      const Figures& figures = *cached->second;
      const bool current =
          figures.tokenizer_version == tokenizer.version() && figures.generation == info.generation;
      const bool recent = now - figures.computed < std::chrono::minutes(1);
      if (current || (freshness == Freshness::kWithinAMinute && recent)) {
        return cached->second;
      }
    }
  }
  // Scanned without the lock: concurrent callers may both scan, and the later one is kept.
  auto sids = storage_->tokenizers().ExportSids(info.name, tokenizer);
  if (!sids.ok()) return sids.status();  // e.g. ABORTED by a retraining: the caller retries
  auto figures = std::make_shared<Figures>();
  figures->collection_id = info.id;
  figures->tokenizer_version = tokenizer.version();
  figures->generation = info.generation;
  figures->computed = now;
  const int64_t n = static_cast<int64_t>(sids->ids.size());
  const int64_t levels = tokenizer.levels();
  figures->items = n;
  figures->collisions = ComputeCollisions(sids->codes.data(), n, levels);
  figures->largest_suffix = sids->largest_suffix;
  for (int64_t l = 0; l < levels; ++l) {
    figures->levels.push_back(ComputeLevelUsage(sids->codes.data() + l, n, levels,
                                                tokenizer.quantizer().codebook_size(l)));
  }
  std::lock_guard lock(mu_);
  figures_[{info.name, tokenizer.version()}] = figures;
  return figures;
}

void SidService::KeepFiguresOf(const std::vector<CollectionInfo>& collections) const {
  std::lock_guard lock(mu_);
  std::erase_if(figures_, [&](const auto& entry) {
    return std::none_of(collections.begin(), collections.end(), [&](const CollectionInfo& info) {
      return info.name == entry.first.first && info.id == entry.second->collection_id;
    });
  });
}

}  // namespace quantd
