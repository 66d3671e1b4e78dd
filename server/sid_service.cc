#include "server/sid_service.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"
#include "core/vectors.h"

namespace quantd {

absl::StatusOr<SidService::Encoded> SidService::Encode(absl::string_view collection,
                                                       absl::Span<const uint64_t> ids,
                                                       absl::Span<const float> vectors) const {
  auto info = storage_->collections().Describe(collection);
  if (!info.ok()) return info.status();
  if (ids.empty() && vectors.empty()) {
    return absl::InvalidArgumentError("ids and vectors are both empty: give either or both");
  }
  auto tokenizer = storage_->tokenizers().GetTokenizer(collection);
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
    encoded.vector_codes.resize(static_cast<size_t>(n * encoded.levels));
    (*tokenizer)->Encode(vectors.data(), n, encoded.vector_codes.data());
    auto counts =
        storage_->tokenizers().CountTuples(collection, **tokenizer, encoded.vector_codes.data(), n);
    if (!counts.ok()) return counts.status();
    encoded.items_with_codes = std::move(*counts);
  }
  return encoded;
}

absl::StatusOr<SidList> SidService::Lookup(absl::string_view collection,
                                           absl::Span<const uint32_t> codes,
                                           absl::string_view tokens, uint64_t limit) const {
  std::vector<int64_t> prefix(codes.begin(), codes.end());
  if (!tokens.empty()) {
    if (!prefix.empty()) return absl::InvalidArgumentError("give codes or tokens, not both");
    auto parsed = ParseSidTokens(tokens);
    if (!parsed.ok()) return parsed.status();
    prefix = std::move(*parsed);
  }
  if (prefix.empty()) return absl::InvalidArgumentError("codes and tokens are both empty");
  if (limit > static_cast<uint64_t>(kMaxLookupLimit)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("limit %d exceeds %d", limit, kMaxLookupLimit));
  }
  const int64_t rows = limit == 0 ? kDefaultLookupLimit : static_cast<int64_t>(limit);
  auto tokenizer = storage_->tokenizers().GetTokenizer(collection);
  if (!tokenizer.ok()) return tokenizer.status();
  return storage_->tokenizers().LookupSids(collection, **tokenizer, prefix, rows);
}

absl::StatusOr<SidList> SidService::Export(absl::string_view collection) const {
  auto tokenizer = storage_->tokenizers().GetTokenizer(collection);
  if (!tokenizer.ok()) return tokenizer.status();
  return storage_->tokenizers().ExportSids(collection, **tokenizer);
}

absl::StatusOr<std::shared_ptr<const SidService::Figures>> SidService::GetFigures(
    const CollectionInfo& info, const Tokenizer& tokenizer, Freshness freshness) const {
  const auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard lock(mu_);
    const auto cached = figures_.find(info.name);
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
  for (int64_t l = 0; l < levels; ++l) {
    figures->levels.push_back(ComputeLevelUsage(sids->codes.data() + l, n, levels,
                                                tokenizer.quantizer().codebook_size(l)));
  }
  std::lock_guard lock(mu_);
  figures_[info.name] = figures;
  return figures;
}

void SidService::KeepFiguresOf(const std::vector<CollectionInfo>& collections) const {
  std::lock_guard lock(mu_);
  std::erase_if(figures_, [&](const auto& entry) {
    return std::none_of(collections.begin(), collections.end(), [&](const CollectionInfo& info) {
      return info.name == entry.first && info.id == entry.second->collection_id;
    });
  });
}

}  // namespace quantd
