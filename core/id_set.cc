#include "core/id_set.h"

#include <algorithm>

namespace quantd {

IdSet::IdSet(absl::Span<const uint64_t> ids) {
  if (ids.empty()) return;
  const auto [lo, hi] = std::minmax_element(ids.begin(), ids.end());
  const uint64_t span = *hi - *lo + 1;  // 0 when the ids cover all of uint64 (wrapped)
  const uint64_t count = ids.size();
  if (span != 0 && (span <= kSmallSpan || span / kDenseBitsPerId <= count)) {
    base_ = *lo;
    span_ = span;
    words_.assign(static_cast<size_t>((span + 63) / 64), 0);
    for (uint64_t id : ids) {
      const uint64_t offset = id - base_;
      uint64_t& word = words_[offset >> 6];
      const uint64_t bit = uint64_t{1} << (offset & 63);
      size_ += (word & bit) == 0;
      word |= bit;
    }
    return;
  }
  dense_ = false;
  hashed_.reserve(ids.size());
  hashed_.insert(ids.begin(), ids.end());
  size_ = static_cast<int64_t>(hashed_.size());
}

IdSet IdSet::FromBitmap(uint64_t base, absl::string_view bitmap) {
  IdSet set;
  set.base_ = base;
  set.span_ = 8 * static_cast<uint64_t>(bitmap.size());
  set.words_.assign((bitmap.size() + 7) / 8, 0);
  for (size_t i = 0; i < bitmap.size(); ++i) {
    const auto byte = static_cast<uint8_t>(bitmap[i]);
    set.words_[i / 8] |= uint64_t{byte} << (8 * (i % 8));
    set.size_ += __builtin_popcount(byte);
  }
  return set;
}

std::vector<uint64_t> IdSet::Sorted() const {
  std::vector<uint64_t> out;
  out.reserve(static_cast<size_t>(size_));
  if (!dense_) {
    out.assign(hashed_.begin(), hashed_.end());
    std::sort(out.begin(), out.end());
    return out;
  }
  for (size_t w = 0; w < words_.size(); ++w) {
    for (uint64_t word = words_[w]; word != 0; word &= word - 1) {
      out.push_back(base_ + w * 64 + static_cast<uint64_t>(__builtin_ctzll(word)));
    }
  }
  return out;
}

}  // namespace quantd
