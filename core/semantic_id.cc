#include "core/semantic_id.h"

#include <algorithm>
#include <cmath>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace quantd {
namespace {

// Hash of a code tuple, for grouping items by their codes.
struct TupleKey {
  const int32_t* codes;
  int64_t levels;
  bool operator==(const TupleKey& other) const {
    return std::equal(codes, codes + levels, other.codes);
  }
  template <typename H>
  friend H AbslHashValue(H h, const TupleKey& key) {
    return H::combine_contiguous(std::move(h), key.codes, static_cast<size_t>(key.levels));
  }
};

}  // namespace

std::string RenderSidToken(int64_t position, int64_t value) {
  return absl::StrCat("<", std::string(1, static_cast<char>('a' + position)), "_", value, ">");
}

std::string RenderSidTokens(absl::Span<const int32_t> codes) {
  std::string out;
  for (size_t level = 0; level < codes.size(); ++level) {
    absl::StrAppend(&out, RenderSidToken(static_cast<int64_t>(level), codes[level]));
  }
  return out;
}

std::string RenderSidTokens(absl::Span<const int32_t> codes, uint32_t suffix) {
  return absl::StrCat(RenderSidTokens(codes),
                      RenderSidToken(static_cast<int64_t>(codes.size()), suffix));
}

absl::StatusOr<std::vector<int64_t>> ParseSidTokens(absl::string_view tokens) {
  std::vector<int64_t> values;
  absl::string_view rest = tokens;
  while (!rest.empty()) {
    const size_t close = rest.find('>');
    if (rest[0] != '<' || close == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "tokens '%s': expected <letter_number> at '%s'", tokens, rest.substr(0, 16)));
    }
    const absl::string_view token = rest.substr(0, close + 1);
    const char expected = static_cast<char>('a' + values.size());
    int64_t value = 0;
    if (values.size() > kMaxSidLevels || token.size() < 5 || token[1] != expected ||
        token[2] != '_' || !absl::SimpleAtoi(token.substr(3, token.size() - 4), &value) ||
        value < 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("tokens '%s': token %d is '%s', expected <%c_N> with N >= 0", tokens,
                          values.size(), token, expected));
    }
    values.push_back(value);
    rest.remove_prefix(close + 1);
  }
  if (values.empty()) return absl::InvalidArgumentError("tokens is empty");
  return values;
}

std::vector<uint32_t> AssignFreshSuffixes(const int32_t* codes, int64_t n, int64_t levels) {
  std::vector<uint32_t> suffixes(static_cast<size_t>(n));
  absl::flat_hash_map<TupleKey, uint32_t> next;
  next.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    suffixes[i] = next[TupleKey{codes + i * levels, levels}]++;
  }
  return suffixes;
}

std::vector<uint32_t> AssignSuffixes(const int32_t* codes, int64_t n, int64_t levels,
                                     absl::Span<const int64_t> preferred, int64_t* carried) {
  std::vector<uint32_t> suffixes(static_cast<size_t>(n));
  // Per tuple: the suffixes taken, and a lower bound of the lowest free one.
  struct Taken {
    absl::flat_hash_set<uint32_t> suffixes;
    uint32_t lowest_free = 0;
  };
  absl::flat_hash_map<TupleKey, Taken> taken;
  taken.reserve(static_cast<size_t>(n));
  std::vector<bool> granted(static_cast<size_t>(n), false);
  int64_t granted_count = 0;
  for (int64_t i = 0; i < n && !preferred.empty(); ++i) {
    if (preferred[i] < 0 || preferred[i] > UINT32_MAX) continue;
    const auto suffix = static_cast<uint32_t>(preferred[i]);
    if (taken[TupleKey{codes + i * levels, levels}].suffixes.insert(suffix).second) {
      suffixes[i] = suffix;
      granted[i] = true;
      ++granted_count;
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    if (granted[i]) continue;
    Taken& tuple = taken[TupleKey{codes + i * levels, levels}];
    uint32_t suffix = tuple.lowest_free;
    while (tuple.suffixes.contains(suffix)) ++suffix;
    tuple.suffixes.insert(suffix);
    tuple.lowest_free = suffix + 1;
    suffixes[i] = suffix;
  }
  if (carried != nullptr) *carried = granted_count;
  return suffixes;
}

LevelUsage ComputeLevelUsage(const int32_t* level_codes, int64_t n, int64_t stride,
                             int64_t codebook_size) {
  LevelUsage usage;
  usage.codebook_size = codebook_size;
  std::vector<int64_t> sizes(static_cast<size_t>(codebook_size), 0);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t code = level_codes[i * stride];
    if (code >= 0 && code < codebook_size) ++sizes[code];
  }
  double entropy = 0;
  double sum_squares = 0;
  usage.size_min = n;
  for (int64_t size : sizes) {
    if (size > 0) {
      ++usage.codes_used;
      const double p = static_cast<double>(size) / static_cast<double>(n);
      entropy -= p * std::log(p);
    }
    usage.size_min = std::min(usage.size_min, size);
    usage.size_max = std::max(usage.size_max, size);
    sum_squares += static_cast<double>(size) * static_cast<double>(size);
  }
  if (codebook_size == 0) usage.size_min = 0;
  usage.perplexity = n > 0 ? std::exp(entropy) : 0;
  usage.size_mean = codebook_size > 0 ? static_cast<double>(n) / codebook_size : 0;
  usage.size_std = codebook_size > 0
                       ? std::sqrt(std::max(
                             0.0, sum_squares / codebook_size - usage.size_mean * usage.size_mean))
                       : 0;
  return usage;
}

CollisionStats ComputeCollisions(const int32_t* codes, int64_t n, int64_t levels) {
  CollisionStats stats;
  stats.items = n;
  absl::flat_hash_map<TupleKey, int64_t> counts;
  counts.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ++counts[TupleKey{codes + i * levels, levels}];
  stats.unique_tuples = static_cast<int64_t>(counts.size());
  stats.collision_rate = n > 0 ? 1.0 - static_cast<double>(stats.unique_tuples) / n : 0;
  for (const auto& [key, count] : counts) {
    if (count > 1) ++stats.collision_groups;
    stats.largest_group = std::max(stats.largest_group, count);
  }
  return stats;
}

}  // namespace quantd
