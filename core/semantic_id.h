// Semantic IDs: per-level codes of a residual quantizer plus a dedup suffix, and the statistics
// that tell whether a tokenization is healthy (codebook usage, balance, collisions).
//
// A SID of L levels has L + 1 tokens: the L codes and a suffix that is 0 for the first item of a
// code tuple and 1, 2, ... for later ones (the TIGER / GRID convention). Tokens are rendered
// with one letter per position, as LC-Rec and LETTER do: <a_12><b_201><c_7><d_0>.
//
// Shapes: codes of n items are n x L row-major int32.
#ifndef QUANTD_CORE_SEMANTIC_ID_H_
#define QUANTD_CORE_SEMANTIC_ID_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace quantd {

// Most levels a tokenizer may have (the suffix takes the letter after the last level).
inline constexpr int kMaxSidLevels = 16;

// "<a_12><b_201><c_7>" for codes {12, 201, 7}; with a suffix, "<d_0>" is appended.
std::string RenderSidTokens(absl::Span<const int32_t> codes);
// One token: the value at `position` (0-based; the suffix sits at position L), e.g. "<b_7>".
std::string RenderSidToken(int64_t position, int64_t value);
std::string RenderSidTokens(absl::Span<const int32_t> codes, uint32_t suffix);

// Parses tokens as rendered above into integers (codes, then the suffix if present). Letters
// must run a, b, c, ... in order. INVALID_ARGUMENT naming the offending token otherwise.
absl::StatusOr<std::vector<int64_t>> ParseSidTokens(absl::string_view tokens);

// Suffixes for n fresh items in row order: the i-th item with a given code tuple gets i - 1.
std::vector<uint32_t> AssignFreshSuffixes(const int32_t* codes, int64_t n, int64_t levels);
// Suffixes for n items (codes n x L) where row i would keep suffix preferred[i] (>= 0; -1: no
// preference), e.g. its suffix under an earlier version whose tuple it kept: first every
// preference is granted unless an earlier row of the same tuple was granted that suffix, then
// the other rows, in row order, take the lowest suffix free in their tuple. Suffixes within a
// tuple are distinct. `carried` (if not null) counts the granted preferences.
std::vector<uint32_t> AssignSuffixes(const int32_t* codes, int64_t n, int64_t levels,
                                     absl::Span<const int64_t> preferred, int64_t* carried);

// Usage of one level's codebook by n items.
struct LevelUsage {
  int64_t codebook_size = 0;
  int64_t codes_used = 0;
  double perplexity = 0;  // exp(entropy of the code distribution); k for a uniform one
  int64_t size_min = 0;   // smallest cluster among all k codes (0 if one is unused)
  int64_t size_max = 0;
  double size_mean = 0;  // n / k
  double size_std = 0;   // over all k codes, empty ones included
};
// `level_codes` holds the n codes of one level (stride `stride` between items).
LevelUsage ComputeLevelUsage(const int32_t* level_codes, int64_t n, int64_t stride,
                             int64_t codebook_size);

// Collisions of full code tuples (without the suffix) among n items.
struct CollisionStats {
  int64_t items = 0;
  int64_t unique_tuples = 0;
  double collision_rate = 0;     // 1 - unique_tuples / items (0 for no items)
  int64_t collision_groups = 0;  // tuples shared by 2 or more items
  int64_t largest_group = 0;     // items in the most shared tuple (1 if none collide)
};
CollisionStats ComputeCollisions(const int32_t* codes, int64_t n, int64_t levels);

}  // namespace quantd

#endif  // QUANTD_CORE_SEMANTIC_ID_H_
