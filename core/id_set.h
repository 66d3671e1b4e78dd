// Sets of item ids for filtered search (allow- and deny-lists), and the selector a scan checks
// each candidate against before it enters the top-k heap (core/top_k.h).
//
// An IdSet answers Contains in O(1): a bitmap over [base, base + span) when the ids are dense
// (span <= kDenseBitsPerId x count, or span <= kSmallSpan bits), else a hash set. Immutable once
// built, so search threads may share it.
#ifndef QUANTD_CORE_ID_SET_H_
#define QUANTD_CORE_ID_SET_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace quantd {

class IdSet {
 public:
  // A bitmap takes span / 8 bytes; a hash set about 16 bytes an id. The bitmap is chosen while it
  // is at most 8 bytes an id (64 bits), or at most 8 KiB (2^16 bits) whatever the count.
  static constexpr uint64_t kDenseBitsPerId = 64;
  static constexpr uint64_t kSmallSpan = uint64_t{1} << 16;

  IdSet() = default;
  // From ids in any order; duplicates count once.
  explicit IdSet(absl::Span<const uint64_t> ids);
  // From a bitmap: id base + 8 i + j is a member iff bit j (least significant first) of
  // bitmap[i] is set. base + 8 x bitmap.size() must not exceed 2^64 (the caller checks).
  static IdSet FromBitmap(uint64_t base, absl::string_view bitmap);

  bool Contains(uint64_t id) const {
    if (!dense_) return hashed_.contains(id);
    const uint64_t offset = id - base_;  // wraps for id < base_, then fails the span test
    return offset < span_ && ((words_[offset >> 6] >> (offset & 63)) & 1) != 0;
  }
  // Distinct ids held.
  int64_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  // The ids, ascending.
  std::vector<uint64_t> Sorted() const;

 private:
  bool dense_ = true;
  uint64_t base_ = 0;
  uint64_t span_ = 0;            // bits of the bitmap
  std::vector<uint64_t> words_;  // ceil(span / 64) words; bit (id - base) set for members
  absl::flat_hash_set<uint64_t> hashed_;
  int64_t size_ = 0;
};

// Restricts a search to the ids a set accepts: the members (allow-list) or the non-members
// (deny-list). `ids` outlives the search.
struct IdSelector {
  const IdSet* ids = nullptr;  // null: every id passes this part
  bool deny = false;
  // A further test of the ids that pass `ids` (e.g. attribute conditions); null: none.
  const std::function<bool(uint64_t)>* also = nullptr;
  bool Accepts(uint64_t id) const {
    if (ids != nullptr && ids->Contains(id) == deny) return false;
    return also == nullptr || (*also)(id);
  }
};

}  // namespace quantd

#endif  // QUANTD_CORE_ID_SET_H_
