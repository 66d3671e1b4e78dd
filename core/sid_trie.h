// The prefix trie of a tokenizer version's semantic IDs, for constrained decoding: which tokens
// may follow a prefix, and how many items lie under each.
//
// A SID of L levels is L codes and a dedup suffix, so the trie has depths 0 (the root) to L + 1
// (the leaves, one per item). Nodes of a depth are numbered in trie order: by their path's
// codes, lexicographically. The compact form is CSR per depth t = 0..L:
//   offsets[t]  nodes(t) + 1 entries: node j of depth t has children offsets[t][j] ..
//               offsets[t][j + 1] - 1, which are the nodes of depth t + 1;
//   codes[t]    nodes(t + 1) entries: each child's code (at t = L its suffix), increasing
//               within a node;
//   counts[t]   nodes(t + 1) entries: the items under each child (1 at t = L);
//   leaf_items  nodes(L + 1) entries: the item of each leaf.
#ifndef QUANTD_CORE_SID_TRIE_H_
#define QUANTD_CORE_SID_TRIE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace quantd {

struct SidTrie {
  int levels = 0;
  std::vector<std::vector<int64_t>> offsets;  // levels + 1 arrays
  std::vector<std::vector<int64_t>> codes;    // levels + 1 arrays
  std::vector<std::vector<int64_t>> counts;   // levels + 1 arrays
  std::vector<uint64_t> leaf_items;

  // Nodes at depth t, 0..levels + 1.
  int64_t nodes(int t) const {
    return t <= levels ? static_cast<int64_t>(offsets[t].size()) - 1
                       : static_cast<int64_t>(leaf_items.size());
  }
};

// Builds the trie of n items' SIDs, given in any order: `ids` (n), `codes` (n x levels,
// row-major) and `suffixes` (n). INVALID_ARGUMENT for mismatched sizes, levels outside
// 1..kMaxSidLevels, an item id given twice, or two items with the same SID (naming them).
absl::StatusOr<SidTrie> BuildSidTrie(absl::Span<const uint64_t> ids,
                                     absl::Span<const uint32_t> codes,
                                     absl::Span<const uint32_t> suffixes, int levels);

// Calls `visit` for every node of depths 0..levels (every node that has children), in depth
// order and trie order within a depth, with its token prefix ("" for the root, "<a_12>",
// "<a_12><b_7>", ...) and its children's tokens ("<b_7>", ...; the suffix level's letter after
// the last level, e.g. "<d_0>" with 3 levels). Tokens are core/semantic_id.h's (RenderSidToken).
void ForEachSidTrieNode(
    const SidTrie& trie,
    absl::FunctionRef<void(const std::string& prefix, const std::vector<std::string>& next)> visit);

}  // namespace quantd

#endif  // QUANTD_CORE_SID_TRIE_H_
