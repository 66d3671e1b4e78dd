// The SID prefix trie: a hand-made example with every array spelled out, its token form, bad
// inputs, and a property test on random SIDs that every root-to-leaf path is exactly one input
// SID and vice versa, with consistent counts and increasing codes.
#include "core/sid_trie.h"

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_support.h"

namespace quantd {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(SidTrieTest, HandMadeExample) {
  // Given out of order: items 10 <a_1><b_2><c_0>, 11 <a_1><b_2><c_1>, 12 <a_1><b_5><c_0>,
  // 13 <a_3><b_0><c_0>.
  const std::vector<uint64_t> ids = {13, 11, 10, 12};
  const std::vector<uint32_t> codes = {3, 0, 1, 2, 1, 2, 1, 5};
  const std::vector<uint32_t> suffixes = {0, 1, 0, 0};
  auto trie = BuildSidTrie(ids, codes, suffixes, 2);
  ASSERT_TRUE(trie.ok()) << trie.status();
  EXPECT_EQ(trie->levels, 2);
  EXPECT_THAT(trie->offsets[0], ElementsAre(0, 2));
  EXPECT_THAT(trie->codes[0], ElementsAre(1, 3));
  EXPECT_THAT(trie->counts[0], ElementsAre(3, 1));
  EXPECT_THAT(trie->offsets[1], ElementsAre(0, 2, 3));
  EXPECT_THAT(trie->codes[1], ElementsAre(2, 5, 0));
  EXPECT_THAT(trie->counts[1], ElementsAre(2, 1, 1));
  EXPECT_THAT(trie->offsets[2], ElementsAre(0, 2, 3, 4));
  EXPECT_THAT(trie->codes[2], ElementsAre(0, 1, 0, 0));
  EXPECT_THAT(trie->counts[2], ElementsAre(1, 1, 1, 1));
  EXPECT_THAT(trie->leaf_items, ElementsAre(10, 11, 12, 13));
  EXPECT_EQ(trie->nodes(0), 1);
  EXPECT_EQ(trie->nodes(1), 2);
  EXPECT_EQ(trie->nodes(2), 3);
  EXPECT_EQ(trie->nodes(3), 4);

  std::vector<std::pair<std::string, std::vector<std::string>>> nodes;
  ForEachSidTrieNode(*trie, [&](const std::string& prefix, const std::vector<std::string>& next) {
    nodes.emplace_back(prefix, next);
  });
  using Node = std::pair<std::string, std::vector<std::string>>;
  EXPECT_THAT(nodes, ElementsAre(Node{"", {"<a_1>", "<a_3>"}}, Node{"<a_1>", {"<b_2>", "<b_5>"}},
                                 Node{"<a_3>", {"<b_0>"}}, Node{"<a_1><b_2>", {"<c_0>", "<c_1>"}},
                                 Node{"<a_1><b_5>", {"<c_0>"}}, Node{"<a_3><b_0>", {"<c_0>"}}));
}

TEST(SidTrieTest, EmptyInputIsARootWithoutChildren) {
  auto trie = BuildSidTrie({}, {}, {}, 3);
  ASSERT_TRUE(trie.ok()) << trie.status();
  EXPECT_THAT(trie->offsets[0], ElementsAre(0, 0));
  for (int t = 1; t <= 3; ++t) EXPECT_THAT(trie->offsets[t], ElementsAre(0)) << t;
  for (int t = 0; t <= 3; ++t) EXPECT_TRUE(trie->codes[t].empty()) << t;
  EXPECT_EQ(trie->nodes(0), 1);
  EXPECT_EQ(trie->nodes(1), 0);
  std::vector<std::string> visited;
  ForEachSidTrieNode(*trie, [&](const std::string& prefix, const std::vector<std::string>& next) {
    visited.push_back(prefix);
    EXPECT_TRUE(next.empty());
  });
  EXPECT_THAT(visited, ElementsAre(""));
}

TEST(SidTrieTest, BadInputsAreNamed) {
  const std::vector<uint64_t> ids = {1, 2};
  const std::vector<uint32_t> codes = {4, 4};
  const std::vector<uint32_t> suffixes = {0, 0};
  auto same = BuildSidTrie(ids, codes, suffixes, 1);
  ASSERT_FALSE(same.ok());
  EXPECT_THAT(same.status().message(), HasSubstr("items 1 and 2 have the same SID <a_4><b_0>"));
  const std::vector<uint64_t> twice = {7, 7};
  EXPECT_THAT(BuildSidTrie(twice, {4, 5}, suffixes, 1).status().message(),
              HasSubstr("item id 7 is given twice"));
  EXPECT_THAT(BuildSidTrie(ids, codes, suffixes, 2).status().message(),
              HasSubstr("2 ids need 4 codes (2 levels)"));
  EXPECT_THAT(BuildSidTrie(ids, codes, suffixes, 0).status().message(),
              HasSubstr("levels 0 is outside 1..16"));
}

// Walks every root-to-leaf path of `trie`: the SID (codes then suffix) and the item.
void CollectPaths(const SidTrie& trie, int t, int64_t node, std::vector<int64_t>& path,
                  std::map<std::vector<int64_t>, uint64_t>& out, int64_t* leaves) {
  const auto& offsets = trie.offsets[t];
  ASSERT_LT(node + 1, static_cast<int64_t>(offsets.size()));
  ASSERT_LT(offsets[node], offsets[node + 1]) << "a node without children at depth " << t;
  for (int64_t c = offsets[node]; c < offsets[node + 1]; ++c) {
    if (c > offsets[node]) {
      EXPECT_LT(trie.codes[t][c - 1], trie.codes[t][c]) << "codes not increasing at depth " << t;
    }
    path.push_back(trie.codes[t][c]);
    const int64_t before = *leaves;
    if (t == trie.levels) {
      EXPECT_TRUE(out.emplace(path, trie.leaf_items[c]).second);
      ++*leaves;
    } else {
      CollectPaths(trie, t + 1, c, path, out, leaves);
    }
    EXPECT_EQ(trie.counts[t][c], *leaves - before) << "count at depth " << t;
    path.pop_back();
  }
}

TEST(SidTrieTest, RandomSidsArePathsExactlyOnce) {
  testing::SeededRandom rng(20261204);
  for (int round = 0; round < 40; ++round) {
    const int levels = 1 + static_cast<int>(rng.Below(4));
    const uint64_t k = 1 + rng.Below(6);  // few codes: many shared prefixes
    const size_t n = 1 + rng.Below(400);
    std::map<std::vector<int64_t>, uint64_t> expected;
    std::vector<uint64_t> ids;
    std::vector<uint32_t> codes;
    std::vector<uint32_t> suffixes;
    std::map<std::vector<uint32_t>, uint32_t> next_suffix;
    std::set<uint64_t> used_ids;
    while (ids.size() < n) {
      std::vector<uint32_t> tuple(levels);
      for (auto& c : tuple) c = static_cast<uint32_t>(rng.Below(k));
      // Suffixes: mostly 0, 1, 2, ... per tuple, sometimes with gaps (deleted items).
      uint32_t& suffix = next_suffix[tuple];
      suffix += static_cast<uint32_t>(rng.OneIn(5) ? rng.Below(3) : 0);
      uint64_t id = rng.Below(1u << 20);
      if (!used_ids.insert(id).second) continue;
      ids.push_back(id);
      codes.insert(codes.end(), tuple.begin(), tuple.end());
      suffixes.push_back(suffix);
      std::vector<int64_t> sid(tuple.begin(), tuple.end());
      sid.push_back(suffix++);
      expected.emplace(sid, id);
    }
    auto trie = BuildSidTrie(ids, codes, suffixes, levels);
    ASSERT_TRUE(trie.ok()) << trie.status();
    std::map<std::vector<int64_t>, uint64_t> paths;
    std::vector<int64_t> path;
    int64_t leaves = 0;
    CollectPaths(*trie, 0, 0, path, paths, &leaves);
    EXPECT_EQ(paths, expected) << "round " << round;
    EXPECT_EQ(leaves, static_cast<int64_t>(n));
    EXPECT_EQ(trie->offsets[levels].back(), static_cast<int64_t>(n));
    // The token form has one entry per inner node, each naming its children.
    int64_t visited = 0;
    int64_t children = 0;
    ForEachSidTrieNode(*trie, [&](const std::string&, const std::vector<std::string>& next) {
      ++visited;
      children += static_cast<int64_t>(next.size());
    });
    int64_t inner = 0;
    int64_t all_children = 0;
    for (int t = 0; t <= levels; ++t) {
      inner += trie->nodes(t);
      all_children += trie->nodes(t + 1);
    }
    EXPECT_EQ(visited, inner);
    EXPECT_EQ(children, all_children);
  }
}

}  // namespace
}  // namespace quantd
