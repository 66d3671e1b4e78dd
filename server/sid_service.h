// The semantic-ID layer over the Storage's SID readers: Encode (by item ids and by vectors, with
// its validation and limits), Lookup, the data of ExportSids, and the SID figures (collisions,
// codebook usage per level) that GetStats and the metrics collector share from one cache.
// Knows nothing of gRPC; the service converts its results to protos.
#ifndef QUANTD_SERVER_SID_SERVICE_H_
#define QUANTD_SERVER_SID_SERVICE_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/semantic_id.h"
#include "server/storage.h"
#include "server/tokenizer.h"

namespace quantd {

// Most ids or vectors one Encode request may carry, and most ids a Lookup may return.
inline constexpr int64_t kMaxEncodeRows = 100000;
inline constexpr int64_t kMaxLookupLimit = 100000;
inline constexpr int64_t kDefaultLookupLimit = 1000;

// The retraining rule (documented in quantd.proto, TokenizerDrift.retrain_recommended).
inline constexpr double kRetrainGrowth = 1.5;
inline constexpr double kRetrainShrink = 0.5;
inline constexpr uint64_t kRetrainMinAssigned = 100;
inline constexpr double kRetrainOverflow = 0.01;
inline constexpr double kRetrainMseRatio = 1.25;
inline constexpr double kRetrainDisplaced = 0.5;

// A SID prefix given as codes (request field `field`) or as tokens ("<a_12><b_7>", field
// `tokens_field`), not both; empty when neither. INVALID_ARGUMENT naming the field otherwise.
absl::StatusOr<std::vector<int64_t>> SidPrefixOf(absl::Span<const uint32_t> codes,
                                                 absl::string_view tokens, absl::string_view field,
                                                 absl::string_view tokens_field = "tokens");

class SidService {
 public:
  // `storage` outlives the service.
  explicit SidService(const Storage* storage) : storage_(storage) {}

  struct Encoded {
    uint32_t tokenizer_version = 0;
    int64_t levels = 0;
    SidList by_id;  // stored SIDs of the requested ids, and the missing ids
    // Per vector, what a new item with it would get now under the tokenizer's assignment
    // rule: codes (n x levels), nearest codes, errors, displaced and overflow flags.
    SidAssignment vectors;
    std::vector<uint64_t> items_with_codes;  // per vector: stored items having exactly its codes
  };
  // Stored SIDs of `ids` and proposed codes of `vectors` (n x the collection's dimension,
  // row-major) under the collection's current tokenizer; at least one of the two is non-empty,
  // each at most kMaxEncodeRows rows. INVALID_ARGUMENT naming the field otherwise;
  // FAILED_PRECONDITION without a tokenizer.
  // `version`: a kept tokenizer version, 0 the active one (as for every reader below).
  absl::StatusOr<Encoded> Encode(absl::string_view collection, absl::Span<const uint64_t> ids,
                                 absl::Span<const float> vectors, uint32_t version = 0) const;

  // Items whose SID starts with a prefix given as `codes` or as `tokens` (one of the two), at
  // most `limit` (0: kDefaultLookupLimit; at most kMaxLookupLimit), in SID order.
  absl::StatusOr<SidList> Lookup(absl::string_view collection, absl::Span<const uint32_t> codes,
                                 absl::string_view tokens, uint64_t limit,
                                 uint32_t version = 0) const;

  // Every SID of the collection in item-id order, with the tokenizer's version and levels.
  absl::StatusOr<SidList> Export(absl::string_view collection, uint32_t version = 0) const;

  // The valid next tokens under a prefix (given as codes or tokens, 0..L codes): at a prefix of
  // fewer than L codes the next level's codes held under it with their item counts (from the
  // ledger, no disk read), at L codes the suffixes with their items (at most kMaxLookupLimit).
  struct Next {
    uint32_t tokenizer_version = 0;
    int64_t level = 0;  // of the next token; L for the suffix
    std::vector<int64_t> codes;
    std::vector<int64_t> items;
    std::vector<uint64_t> ids;  // level L only
  };
  absl::StatusOr<Next> NextCodes(absl::string_view collection, absl::Span<const uint32_t> codes,
                                 absl::string_view tokens, uint32_t version = 0) const;

  // Both kept versions' SIDs of every item, in item-id order (MapSids).
  struct SidMap {
    SidList from;
    SidList to;  // the same ids
  };
  absl::StatusOr<SidMap> Map(absl::string_view collection, uint32_t from_version,
                             uint32_t to_version) const;

  // Figures of a collection's SIDs under one tokenizer version.
  struct Figures {
    uint32_t collection_id = 0;
    uint32_t tokenizer_version = 0;
    uint64_t generation = 0;  // the collection's write generation when computed
    std::chrono::steady_clock::time_point computed;
    int64_t items = 0;  // items with a SID
    CollisionStats collisions;
    std::vector<LevelUsage> levels;
    uint32_t largest_suffix = 0;
  };
  // How current cached figures must be. A scan of every SID recomputes them.
  enum class Freshness {
    // Computed since the collection's last write (GetStats: always current).
    kCurrent,
    // As kCurrent, or computed less than a minute ago (the metrics scrape: at most one
    // scan per collection a minute).
    kWithinAMinute,
  };
  // The figures of collection `info` under `tokenizer` (one of its kept versions), from the
  // cache when `freshness` allows.
  absl::StatusOr<std::shared_ptr<const Figures>> GetFigures(const CollectionInfo& info,
                                                            const Tokenizer& tokenizer,
                                                            Freshness freshness) const;
  // How a tokenizer fits its collection now (live, from its ledger; see v1::TokenizerDrift).
  struct Drift {
    uint64_t assigned = 0;  // items given codes since training
    double displaced_fraction = 0;
    double overflow_fraction = 0;
    double assigned_mse = 0;  // per component
    double training_mse = 0;
    double growth = 0;                         // items now / items at training
    std::vector<SizeBounds> bounds;            // per level, in force now (balanced levels)
    std::vector<int64_t> clusters_at_bound;    // per level: codes holding >= size_max items
    std::vector<int64_t> clusters_over_bound;  // per level: codes holding > size_max items
    bool retrain_recommended = false;
    std::vector<std::string> reasons;
  };
  static Drift DriftOf(const Tokenizer& tokenizer);

  // Forgets the cached figures of every collection not in `collections` (dropped ones).
  void KeepFiguresOf(const std::vector<CollectionInfo>& collections) const;

 private:
  const Storage* storage_;
  mutable std::mutex mu_;
  // By collection name and tokenizer version; guarded by mu_.
  mutable std::map<std::pair<std::string, uint32_t>, std::shared_ptr<const Figures>> figures_;
};

}  // namespace quantd

#endif  // QUANTD_SERVER_SID_SERVICE_H_
