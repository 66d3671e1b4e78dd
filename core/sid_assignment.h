// Capacity-aware semantic-ID assignment: giving an item the code tuple of a residual quantizer
// that quantizes it best among the tuples that still have room, as a beam search over the levels.
//
// A tokenizer trained with balanced levels keeps every code's item count within a bound; nearest
// encoding of new items ignores that bound (popular clusters keep growing) and lets a tuple
// collect ever larger dedup suffixes. Here each item takes the tuple of least total squared error
// ||x - sum_l C_l[c_l]||^2 whose code at every level holds fewer than that level's size_max items
// and which itself holds fewer than suffix_cap items. The same rule, applied to the colliding
// items of a training assignment, resolves collisions at training time.
//
// Shapes: x is n x d row-major float32 (already normalised where the metric asks); codes are
// n x L row-major int32.
#ifndef QUANTD_CORE_SID_ASSIGNMENT_H_
#define QUANTD_CORE_SID_ASSIGNMENT_H_

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/balanced_assignment.h"
#include "core/gemm.h"
#include "core/residual_quantizer.h"

namespace quantd {

inline constexpr int kMaxBeamWidth = 64;
inline constexpr int kDefaultBeamWidth = 4;
inline constexpr int64_t kUnbounded = std::numeric_limits<int64_t>::max();

// Items per code at each level and per full code tuple of one tokenizer (L levels of k_l codes).
class SidOccupancy {
 public:
  SidOccupancy() = default;
  explicit SidOccupancy(std::vector<int64_t> codebook_sizes);

  int64_t levels() const { return static_cast<int64_t>(level_counts_.size()); }
  int64_t items() const { return items_; }
  // One tuple of L codes, each in [0, k_l). Remove must match an earlier Add.
  void Add(const int32_t* codes);
  void Remove(const int32_t* codes);
  int64_t level_count(int64_t level, int32_t code) const { return level_counts_[level][code]; }
  const std::vector<int64_t>& level_counts(int64_t level) const { return level_counts_[level]; }
  // Items holding exactly this tuple (0 for a tuple never added).
  int64_t tuple_count(const int32_t* codes) const;
  // Items in the most populated tuple (0 when empty). A scan of every tuple.
  int64_t largest_tuple() const;
  // Distinct tuples held.
  int64_t unique_tuples() const { return static_cast<int64_t>(tuples_.size()); }
  // Items whose tuple starts with the `length` codes of `prefix` (0 <= length <= L; 0: all).
  int64_t prefix_count(const int32_t* prefix, int64_t length) const;
  // The codes c of level `length` (< L) held under the prefix, increasing, with the items
  // under prefix + c: the valid next codes of constrained decoding. O(k_length) lookups.
  std::vector<std::pair<int32_t, int64_t>> NextCodes(const int32_t* prefix, int64_t length) const;

 private:
  static absl::string_view Key(const int32_t* codes, int64_t length) {
    return absl::string_view(reinterpret_cast<const char*>(codes),
                             static_cast<size_t>(length) * sizeof(int32_t));
  }
  absl::string_view Key(const int32_t* codes) const { return Key(codes, levels()); }
  std::vector<std::vector<int64_t>> level_counts_;    // L x k_l
  absl::flat_hash_map<std::string, int64_t> tuples_;  // raw codes -> items (> 0 only)
  // prefixes_[j]: raw codes of prefixes of length j + 2 (2 <= length < L) -> items (> 0 only);
  // length 1 is level_counts_[0], length L is tuples_.
  std::vector<absl::flat_hash_map<std::string, int64_t>> prefixes_;
  int64_t items_ = 0;
};

struct CapacityLimits {
  // Per level: the most items one code may hold (kUnbounded: no bound).
  std::vector<int64_t> size_max;
  // The most items one full tuple may hold (its suffixes 0..suffix_cap-1); >= 1.
  int64_t suffix_cap = 1;
};

struct SidAssignOptions {
  int beam_width = kDefaultBeamWidth;  // 1..kMaxBeamWidth
};

// Per row: the assigned tuple, and the nearest tuple (the best the same beam finds without
// capacity limits), with their total squared quantisation errors ||x - decode(codes)||^2.
struct SidAssignment {
  int64_t levels = 0;
  std::vector<int32_t> codes;          // n x L
  std::vector<int32_t> nearest_codes;  // n x L
  std::vector<float> error;            // n
  std::vector<float> nearest_error;    // n
  std::vector<uint8_t> displaced;      // n: codes != nearest_codes (capacity moved the row)
  std::vector<uint8_t> overflow;       // n: no tuple in the beam had room; took the nearest
};

// The beam search of one residual quantizer, with what it precomputes once: per level the
// packed codebook and the codeword norms, and, where they fit (at most 64 MiB in all), the
// codeword inner products between levels, so that a beam entry's residual products need no
// matrix product of their own. Thread-safe after construction. `quantizer` must outlive it.
class SidAssigner {
 public:
  explicit SidAssigner(const ResidualQuantizer* quantizer);

  // Rows of x in order: each takes the tuple of least total error, among those the beam reaches,
  // whose code at every level l holds fewer than limits.size_max[l] items and which holds fewer
  // than limits.suffix_cap, or else its nearest tuple (an overflow); its tuple is added to
  // *occupancy before the next row, so the rows of one batch take capacity in order.
  // INVALID_ARGUMENT (naming the field and the value) for a beam width outside
  // 1..kMaxBeamWidth, a suffix_cap below 1, size_max of another length than L or below 1,
  // occupancy of other shapes than the quantizer, or non-finite x.
  absl::StatusOr<SidAssignment> Assign(const float* x, int64_t n, const CapacityLimits& limits,
                                       const SidAssignOptions& options,
                                       SidOccupancy* occupancy) const;
  // What each row would get as the next new item, independently; `occupancy` is only read.
  absl::StatusOr<SidAssignment> Propose(const float* x, int64_t n, const CapacityLimits& limits,
                                        const SidAssignOptions& options,
                                        const SidOccupancy& occupancy) const;

  // Total squared error ||x - decode(codes)||^2 of one row.
  float Error(const float* x, const int32_t* codes) const;
  // Bytes of the inter-level tables (0 when they would not fit and are not kept).
  int64_t table_bytes() const { return use_tables_ ? table_bytes_ : 0; }

 private:
  struct Scratch;
  absl::Status Check(const float* x, int64_t n, const CapacityLimits& limits,
                     const SidAssignOptions& options, const SidOccupancy& occupancy) const;
  absl::StatusOr<SidAssignment> Run(const float* x, int64_t n, const CapacityLimits& limits,
                                    const SidAssignOptions& options, SidOccupancy* occupancy,
                                    bool take) const;
  // The beam search of one row; products[l] holds x . C_l^T (k_l). With `limits` null, no
  // capacity applies. Writes the best tuple to codes (L) and returns its error, or returns -1
  // when no tuple in the beam has room.
  float Search(const float* x, float squared_norm, const std::vector<const float*>& products,
               int beam_width, const CapacityLimits* limits, const SidOccupancy& occupancy,
               Scratch* scratch, int32_t* codes) const;

  const ResidualQuantizer* quantizer_;
  int64_t d_ = 0;
  std::vector<PackedRhs> packed_;          // per level
  std::vector<std::vector<float>> norms_;  // per level: ||C_l[c]||^2
  // cross_[j][l] (j < l): C_j C_l^T, k_j x k_l; empty when the tables would not fit.
  std::vector<std::vector<std::vector<float>>> cross_;
  bool use_tables_ = false;
  int64_t table_bytes_ = 0;
};

// SidAssigner(&quantizer).Assign / .Propose, for one-off calls (the tables are built per call).
absl::StatusOr<SidAssignment> AssignUnderCapacity(const ResidualQuantizer& quantizer,
                                                  const float* x, int64_t n,
                                                  const CapacityLimits& limits,
                                                  const SidAssignOptions& options,
                                                  SidOccupancy* occupancy);
absl::StatusOr<SidAssignment> ProposeUnderCapacity(const ResidualQuantizer& quantizer,
                                                   const float* x, int64_t n,
                                                   const CapacityLimits& limits,
                                                   const SidAssignOptions& options,
                                                   const SidOccupancy& occupancy);

// Bounds in force for a collection of n_now items at a level of k codes trained on n_trained
// items with `trained` bounds: with a slack, BoundsFromSlack(n_now, k, *slack); explicit bounds
// scale by n_now / n_trained, rounded outwards, and stay feasible (size_min <= floor(n_now / k),
// size_max >= ceil(n_now / k)).
SizeBounds BoundsInForce(const SizeBounds& trained, int64_t n_trained, int64_t n_now, int64_t k,
                         std::optional<double> slack);

struct CollisionReport {
  int64_t collisions_before = 0;  // rows minus distinct tuples
  int64_t collisions_after = 0;
  double mse_before = 0;  // mean squared error per component over the n rows
  double mse_after = 0;
  int64_t moved = 0;  // rows whose tuple changed
};

// Training-time collision resolution. codes (n x L) is a training assignment of x; rows of tuples
// holding more than limits.suffix_cap rows move, where the beam finds a tuple with room (as
// Assign does, with every other row in place), so that tuples keep at most suffix_cap rows. In
// each over-full tuple the rows whose best alternative costs the most extra error stay; the
// others move, cheapest move first. Deterministic. Errors as Assign's, and for codes of the
// wrong size or out of range.
absl::StatusOr<CollisionReport> ResolveCollisions(const ResidualQuantizer& quantizer,
                                                  const float* x, int64_t n,
                                                  const CapacityLimits& limits,
                                                  const SidAssignOptions& options,
                                                  std::vector<int32_t>* codes);

}  // namespace quantd

#endif  // QUANTD_CORE_SID_ASSIGNMENT_H_
