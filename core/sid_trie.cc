#include "core/sid_trie.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_format.h"
#include "core/semantic_id.h"

namespace quantd {

absl::StatusOr<SidTrie> BuildSidTrie(absl::Span<const uint64_t> ids,
                                     absl::Span<const uint32_t> codes,
                                     absl::Span<const uint32_t> suffixes, int levels) {
  if (levels < 1 || levels > kMaxSidLevels) {
    return absl::InvalidArgumentError(
        absl::StrFormat("levels %d is outside 1..%d", levels, kMaxSidLevels));
  }
  const size_t n = ids.size();
  const size_t width = static_cast<size_t>(levels);
  if (codes.size() != n * width || suffixes.size() != n) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%d ids need %d codes (%d levels) and %d suffixes; got %d codes and %d suffixes", n,
        n * width, levels, n, codes.size(), suffixes.size()));
  }
  {
    std::vector<uint64_t> sorted(ids.begin(), ids.end());
    std::sort(sorted.begin(), sorted.end());
    const auto twice = std::adjacent_find(sorted.begin(), sorted.end());
    if (twice != sorted.end()) {
      return absl::InvalidArgumentError(absl::StrFormat("item id %d is given twice", *twice));
    }
  }
  // Position p of item i's SID: its code at p < levels, its suffix at p == levels.
  auto at = [&](size_t i, size_t p) -> int64_t {
    return p < width ? codes[i * width + p] : suffixes[i];
  };
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    for (size_t p = 0; p <= width; ++p) {
      if (at(a, p) != at(b, p)) return at(a, p) < at(b, p);
    }
    return false;
  });
  // first_new[k]: the first position where the k-th item in trie order differs from the one
  // before it (-1 for the first item): it starts a new node at every depth above that position.
  std::vector<int> first_new(n, -1);
  for (size_t k = 1; k < n; ++k) {
    size_t p = 0;
    while (p <= width && at(order[k], p) == at(order[k - 1], p)) ++p;
    if (p > width) {
      std::vector<int32_t> tuple(width);
      for (size_t l = 0; l < width; ++l) tuple[l] = static_cast<int32_t>(at(order[k], l));
      return absl::InvalidArgumentError(
          absl::StrFormat("items %d and %d have the same SID %s", ids[order[k - 1]], ids[order[k]],
                          RenderSidTokens(tuple, static_cast<uint32_t>(at(order[k], width)))));
    }
    first_new[k] = static_cast<int>(p);
  }
  SidTrie trie;
  trie.levels = levels;
  trie.offsets.resize(width + 1);
  trie.codes.resize(width + 1);
  trie.counts.resize(width + 1);
  for (size_t t = 0; t <= width; ++t) {
    std::vector<int64_t>& offsets = trie.offsets[t];
    std::vector<int64_t>& child_codes = trie.codes[t];
    std::vector<int64_t>& counts = trie.counts[t];
    if (n == 0 && t == 0) offsets.push_back(0);  // the root of an empty trie: no children
    for (size_t k = 0; k < n; ++k) {
      // A node of depth t starts where the path differs above t; a child (depth t + 1) where
      // it differs at t or above.
      if (first_new[k] < static_cast<int>(t)) {
        offsets.push_back(static_cast<int64_t>(child_codes.size()));
      }
      if (first_new[k] <= static_cast<int>(t)) {
        child_codes.push_back(at(order[k], t));
        counts.push_back(0);
      }
      ++counts.back();
    }
    offsets.push_back(static_cast<int64_t>(child_codes.size()));
  }
  trie.leaf_items.reserve(n);
  for (size_t k = 0; k < n; ++k) trie.leaf_items.push_back(ids[order[k]]);
  return trie;
}

void ForEachSidTrieNode(
    const SidTrie& trie,
    absl::FunctionRef<void(const std::string& prefix, const std::vector<std::string>& next)>
        visit) {
  // The token prefixes of the nodes of the current depth, in trie order.
  std::vector<std::string> prefixes = {""};
  std::vector<std::string> next;
  for (int t = 0; t <= trie.levels; ++t) {
    const std::vector<int64_t>& offsets = trie.offsets[t];
    std::vector<std::string> children;
    if (t < trie.levels) children.reserve(trie.codes[t].size());
    for (size_t j = 0; j + 1 < offsets.size(); ++j) {
      next.clear();
      for (int64_t c = offsets[j]; c < offsets[j + 1]; ++c) {
        next.push_back(RenderSidToken(t, trie.codes[t][c]));
        if (t < trie.levels) children.push_back(prefixes[j] + next.back());
      }
      visit(prefixes[j], next);
    }
    prefixes = std::move(children);
  }
}

}  // namespace quantd
