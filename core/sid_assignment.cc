#include "core/sid_assignment.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <queue>
#include <utility>

#include "absl/strings/str_format.h"
#include "core/semantic_id.h"

namespace quantd {
namespace {

// Rows whose codeword products are computed together (bounds the n x k_l product buffers).
constexpr int64_t kBlockRows = 256;
// The inter-level codeword tables are kept when they take at most this many bytes in all.
constexpr int64_t kMaxTableBytes = int64_t{64} << 20;

float SquaredNorm(const float* x, int64_t d) {
  float sum = 0;
  for (int64_t j = 0; j < d; ++j) sum += x[j] * x[j];
  return sum;
}

// A candidate of the last level: its error, the beam entry it extends, its code.
struct Candidate {
  float error;
  int32_t entry;
  int32_t code;
  bool operator>(const Candidate& other) const {
    if (error != other.error) return error > other.error;
    if (entry != other.entry) return entry > other.entry;
    return code > other.code;
  }
};

}  // namespace

SidOccupancy::SidOccupancy(std::vector<int64_t> codebook_sizes) {
  level_counts_.reserve(codebook_sizes.size());
  for (int64_t k : codebook_sizes) level_counts_.emplace_back(static_cast<size_t>(k), 0);
  prefixes_.resize(static_cast<size_t>(std::max<int64_t>(0, levels() - 2)));
}

void SidOccupancy::Add(const int32_t* codes) {
  for (int64_t l = 0; l < levels(); ++l) ++level_counts_[l][codes[l]];
  for (size_t j = 0; j < prefixes_.size(); ++j) {
    ++prefixes_[j][Key(codes, static_cast<int64_t>(j) + 2)];
  }
  ++tuples_[Key(codes)];
  ++items_;
}

namespace {
void DecrementKey(absl::flat_hash_map<std::string, int64_t>& counts, absl::string_view key) {
  const auto it = counts.find(key);
  if (it != counts.end() && --it->second <= 0) counts.erase(it);
}
}  // namespace

void SidOccupancy::Remove(const int32_t* codes) {
  for (int64_t l = 0; l < levels(); ++l) --level_counts_[l][codes[l]];
  for (size_t j = 0; j < prefixes_.size(); ++j) {
    DecrementKey(prefixes_[j], Key(codes, static_cast<int64_t>(j) + 2));
  }
  DecrementKey(tuples_, Key(codes));
  --items_;
}

int64_t SidOccupancy::prefix_count(const int32_t* prefix, int64_t length) const {
  if (length == 0) return items_;
  if (length == 1) return level_counts_[0][prefix[0]];
  const auto& counts = length == levels() ? tuples_ : prefixes_[length - 2];
  const auto it = counts.find(Key(prefix, length));
  return it == counts.end() ? 0 : it->second;
}

std::vector<std::pair<int32_t, int64_t>> SidOccupancy::NextCodes(const int32_t* prefix,
                                                                 int64_t length) const {
  std::vector<std::pair<int32_t, int64_t>> next;
  const auto k = static_cast<int32_t>(level_counts_[length].size());
  if (length == 0) {
    for (int32_t c = 0; c < k; ++c) {
      if (level_counts_[0][c] > 0) next.emplace_back(c, level_counts_[0][c]);
    }
    return next;
  }
  if (prefix_count(prefix, length) == 0) return next;
  std::vector<int32_t> child(prefix, prefix + length);
  child.push_back(0);
  for (int32_t c = 0; c < k; ++c) {
    if (level_counts_[length][c] == 0) continue;  // no item anywhere holds c at this level
    child.back() = c;
    if (const int64_t count = prefix_count(child.data(), length + 1); count > 0) {
      next.emplace_back(c, count);
    }
  }
  return next;
}

int64_t SidOccupancy::tuple_count(const int32_t* codes) const {
  const auto it = tuples_.find(Key(codes));
  return it == tuples_.end() ? 0 : it->second;
}

int64_t SidOccupancy::largest_tuple() const {
  int64_t largest = 0;
  for (const auto& [key, count] : tuples_) largest = std::max(largest, count);
  return largest;
}

// Buffers of one row's beam search, reused from row to row: the beam's partial tuples (codes,
// squared residual norms and, without the tables, residuals), the next level's, one entry's
// products with a codebook, and the candidates of a level.
struct SidAssigner::Scratch {
  std::vector<int32_t> codes, next_codes;        // beam x L
  std::vector<float> errors, next_errors;        // beam
  std::vector<float> residuals, next_residuals;  // beam x d (explicit path only)
  std::vector<float> dots;                       // k_l
  std::vector<Candidate> candidates;
};

SidAssigner::SidAssigner(const ResidualQuantizer* quantizer)
    : quantizer_(quantizer), d_(quantizer->dimension()) {
  const int64_t levels = quantizer->levels();
  int64_t table_bytes = 0;
  for (int64_t l = 0; l < levels; ++l) {
    const int64_t k = quantizer->codebook_size(l);
    packed_.emplace_back(quantizer->codebook(l).data(), k, d_);
    norms_.push_back(SquaredNorms(quantizer->codebook(l).data(), k, d_));
    for (int64_t j = 0; j < l; ++j) {
      table_bytes += quantizer->codebook_size(j) * k * static_cast<int64_t>(sizeof(float));
    }
  }
  table_bytes_ = table_bytes;
  use_tables_ = table_bytes <= kMaxTableBytes;
  if (!use_tables_) return;
  cross_.resize(static_cast<size_t>(levels));
  for (int64_t j = 0; j < levels; ++j) {
    cross_[j].resize(static_cast<size_t>(levels));
    for (int64_t l = j + 1; l < levels; ++l) {
      std::vector<float>& table = cross_[j][l];
      table.resize(static_cast<size_t>(quantizer->codebook_size(j) * quantizer->codebook_size(l)));
      packed_[l].Multiply(quantizer->codebook(j).data(), quantizer->codebook_size(j), table.data(),
                          quantizer->codebook_size(l));
    }
  }
}

float SidAssigner::Error(const float* x, const int32_t* codes) const {
  float sum = 0;
  for (int64_t j = 0; j < d_; ++j) {
    float r = x[j];
    for (int64_t l = 0; l < quantizer_->levels(); ++l) {
      r -= quantizer_->codebook(l)[static_cast<int64_t>(codes[l]) * d_ + j];
    }
    sum += r * r;
  }
  return sum;
}

float SidAssigner::Search(const float* x, float squared_norm,
                          const std::vector<const float*>& products, int beam_width,
                          const CapacityLimits* limits, const SidOccupancy& occupancy, Scratch* s,
                          int32_t* codes) const {
  const int64_t levels = quantizer_->levels();
  const auto allowed = [&](int64_t level, int32_t code) {
    return limits == nullptr || occupancy.level_count(level, code) < limits->size_max[level];
  };
  // The beam: `width` partial tuples, entry b's codes at s->codes[b * levels ...].
  size_t width = 1;
  s->codes.assign(static_cast<size_t>(levels), 0);
  s->errors.assign(1, squared_norm);
  if (!use_tables_) s->residuals.assign(x, x + d_);
  for (int64_t l = 0; l < levels; ++l) {
    const int64_t k = quantizer_->codebook_size(l);
    const float* norms = norms_[l].data();
    s->dots.resize(static_cast<size_t>(k));
    float* dots = s->dots.data();
    s->candidates.clear();
    for (size_t b = 0; b < width; ++b) {
      const int32_t* entry_codes = s->codes.data() + b * levels;
      // dots = r_b . C_l^T, with r_b = x - sum_{j<l} C_j[c_j].
      if (use_tables_) {
        std::copy_n(products[l], k, dots);
        for (int64_t j = 0; j < l; ++j) {
          const float* row = cross_[j][l].data() + static_cast<int64_t>(entry_codes[j]) * k;
          for (int64_t c = 0; c < k; ++c) dots[c] -= row[c];
        }
      } else {
        packed_[l].Multiply(s->residuals.data() + b * d_, 1, dots, k);
      }
      const float error = s->errors[b];
      for (int64_t c = 0; c < k; ++c) {
        if (!allowed(l, static_cast<int32_t>(c))) continue;
        s->candidates.push_back({std::max(0.0f, error - 2 * dots[c] + norms[c]),
                                 static_cast<int32_t>(b), static_cast<int32_t>(c)});
      }
    }
    std::vector<Candidate>& candidates = s->candidates;
    if (candidates.empty()) return -1;
    const auto less = [](const Candidate& a, const Candidate& b) { return b > a; };
    if (l + 1 == levels) {
      // The last level: the best candidate whose tuple has room, in increasing error. Without
      // limits that is the smallest; with them, usually one of the first few.
      const auto write = [&](const Candidate& best) {
        std::copy_n(s->codes.data() + best.entry * levels, l, codes);
        codes[l] = best.code;
      };
      if (limits == nullptr) {
        const Candidate best = *std::min_element(candidates.begin(), candidates.end(), less);
        write(best);
        return best.error;
      }
      size_t sorted = 0;
      while (sorted < candidates.size()) {
        const size_t next = std::min(candidates.size(), std::max<size_t>(8, 4 * sorted));
        std::partial_sort(candidates.begin() + sorted, candidates.begin() + next, candidates.end(),
                          less);
        for (size_t i = sorted; i < next; ++i) {
          write(candidates[i]);
          if (occupancy.tuple_count(codes) < limits->suffix_cap) return candidates[i].error;
        }
        sorted = next;
      }
      return -1;
    }
    // Keep the beam_width best partial tuples (ties by entry and code: deterministic).
    const size_t keep = std::min(candidates.size(), static_cast<size_t>(beam_width));
    if (keep < candidates.size()) {
      std::nth_element(candidates.begin(), candidates.begin() + keep, candidates.end(), less);
    }
    std::sort(candidates.begin(), candidates.begin() + keep, less);
    s->next_codes.resize(keep * levels);
    s->next_errors.resize(keep);
    if (!use_tables_) s->next_residuals.resize(keep * d_);
    for (size_t i = 0; i < keep; ++i) {
      const Candidate& chosen = candidates[i];
      std::copy_n(s->codes.data() + chosen.entry * levels, l, s->next_codes.data() + i * levels);
      s->next_codes[i * levels + l] = chosen.code;
      s->next_errors[i] = chosen.error;
      if (!use_tables_) {
        const float* parent = s->residuals.data() + chosen.entry * d_;
        const float* codeword =
            quantizer_->codebook(l).data() + static_cast<int64_t>(chosen.code) * d_;
        float* residual = s->next_residuals.data() + i * d_;
        for (int64_t j = 0; j < d_; ++j) residual[j] = parent[j] - codeword[j];
      }
    }
    s->codes.swap(s->next_codes);
    s->errors.swap(s->next_errors);
    if (!use_tables_) s->residuals.swap(s->next_residuals);
    width = keep;
  }
  return -1;  // not reached: the last level returns
}

absl::Status SidAssigner::Check(const float* x, int64_t n, const CapacityLimits& limits,
                                const SidAssignOptions& options,
                                const SidOccupancy& occupancy) const {
  const int64_t levels = quantizer_->levels();
  if (options.beam_width < 1 || options.beam_width > kMaxBeamWidth) {
    return absl::InvalidArgumentError(
        absl::StrFormat("beam_width %d is outside 1..%d", options.beam_width, kMaxBeamWidth));
  }
  if (limits.suffix_cap < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("suffix_cap %d is below 1", limits.suffix_cap));
  }
  if (static_cast<int64_t>(limits.size_max.size()) != levels) {
    return absl::InvalidArgumentError(
        absl::StrFormat("size_max has %d entries for %d levels", limits.size_max.size(), levels));
  }
  for (int64_t l = 0; l < levels; ++l) {
    if (limits.size_max[l] < 1) {
      return absl::InvalidArgumentError(
          absl::StrFormat("size_max[%d] = %d is below 1", l, limits.size_max[l]));
    }
  }
  bool same_shape = occupancy.levels() == levels;
  for (int64_t l = 0; same_shape && l < levels; ++l) {
    same_shape =
        static_cast<int64_t>(occupancy.level_counts(l).size()) == quantizer_->codebook_size(l);
  }
  if (!same_shape) {
    return absl::InvalidArgumentError("occupancy does not have the quantizer's levels and sizes");
  }
  if (n < 0) return absl::InvalidArgumentError(absl::StrFormat("n = %d is negative", n));
  for (int64_t i = 0; i < n * d_; ++i) {
    if (!std::isfinite(x[i])) {
      return absl::InvalidArgumentError(
          absl::StrFormat("x[row %d, component %d] = %g", i / d_, i % d_, x[i]));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<SidAssignment> SidAssigner::Run(const float* x, int64_t n,
                                               const CapacityLimits& limits,
                                               const SidAssignOptions& options,
                                               SidOccupancy* occupancy, bool take) const {
  if (auto status = Check(x, n, limits, options, *occupancy); !status.ok()) return status;
  const int64_t levels = quantizer_->levels();
  SidAssignment out;
  out.levels = levels;
  out.codes.resize(static_cast<size_t>(n * levels));
  out.nearest_codes.resize(static_cast<size_t>(n * levels));
  out.error.resize(static_cast<size_t>(n));
  out.nearest_error.resize(static_cast<size_t>(n));
  out.displaced.assign(static_cast<size_t>(n), 0);
  out.overflow.assign(static_cast<size_t>(n), 0);

  // x . C_l^T for a block of rows at a time (only with the tables; without them the beam
  // multiplies each entry's residual itself).
  std::vector<std::vector<float>> products(static_cast<size_t>(levels));
  std::vector<const float*> row_products(static_cast<size_t>(levels), nullptr);
  Scratch scratch;
  for (int64_t begin = 0; begin < n; begin += kBlockRows) {
    const int64_t rows = std::min(kBlockRows, n - begin);
    if (use_tables_) {
      for (int64_t l = 0; l < levels; ++l) {
        const int64_t k = quantizer_->codebook_size(l);
        products[l].resize(static_cast<size_t>(rows * k));
        packed_[l].Multiply(x + begin * d_, rows, products[l].data(), k);
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = begin + r;
      const float* row = x + i * d_;
      if (use_tables_) {
        for (int64_t l = 0; l < levels; ++l) {
          row_products[l] = products[l].data() + r * quantizer_->codebook_size(l);
        }
      }
      const float norm = SquaredNorm(row, d_);
      int32_t* nearest = out.nearest_codes.data() + i * levels;
      int32_t* codes = out.codes.data() + i * levels;
      out.nearest_error[i] = Search(row, norm, row_products, options.beam_width, nullptr,
                                    *occupancy, &scratch, nearest);
      // The nearest tuple when it has room; else the best with room the beam finds.
      bool room = occupancy->tuple_count(nearest) < limits.suffix_cap;
      for (int64_t l = 0; room && l < levels; ++l) {
        room = occupancy->level_count(l, nearest[l]) < limits.size_max[l];
      }
      float error = room ? out.nearest_error[i] : -1;
      if (room) {
        std::copy_n(nearest, levels, codes);
      } else {
        error = Search(row, norm, row_products, options.beam_width, &limits, *occupancy, &scratch,
                       codes);
      }
      if (error < 0) {  // nothing with room within the beam
        std::copy_n(nearest, levels, codes);
        error = out.nearest_error[i];
        out.overflow[i] = 1;
      }
      out.error[i] = error;
      out.displaced[i] = std::equal(codes, codes + levels, nearest) ? 0 : 1;
      if (take) occupancy->Add(codes);
    }
  }
  return out;
}

absl::StatusOr<SidAssignment> SidAssigner::Assign(const float* x, int64_t n,
                                                  const CapacityLimits& limits,
                                                  const SidAssignOptions& options,
                                                  SidOccupancy* occupancy) const {
  return Run(x, n, limits, options, occupancy, /*take=*/true);
}

absl::StatusOr<SidAssignment> SidAssigner::Propose(const float* x, int64_t n,
                                                   const CapacityLimits& limits,
                                                   const SidAssignOptions& options,
                                                   const SidOccupancy& occupancy) const {
  // Run only reads the occupancy when take is false.
  return Run(x, n, limits, options, const_cast<SidOccupancy*>(&occupancy), /*take=*/false);
}

absl::StatusOr<SidAssignment> AssignUnderCapacity(const ResidualQuantizer& quantizer,
                                                  const float* x, int64_t n,
                                                  const CapacityLimits& limits,
                                                  const SidAssignOptions& options,
                                                  SidOccupancy* occupancy) {
  return SidAssigner(&quantizer).Assign(x, n, limits, options, occupancy);
}

absl::StatusOr<SidAssignment> ProposeUnderCapacity(const ResidualQuantizer& quantizer,
                                                   const float* x, int64_t n,
                                                   const CapacityLimits& limits,
                                                   const SidAssignOptions& options,
                                                   const SidOccupancy& occupancy) {
  return SidAssigner(&quantizer).Propose(x, n, limits, options, occupancy);
}

SizeBounds BoundsInForce(const SizeBounds& trained, int64_t n_trained, int64_t n_now, int64_t k,
                         std::optional<double> slack) {
  if (slack.has_value()) return BoundsFromSlack(n_now, k, *slack);
  const double scale =
      static_cast<double>(n_now) / static_cast<double>(std::max<int64_t>(n_trained, 1));
  SizeBounds bounds;
  bounds.size_min = static_cast<int64_t>(std::floor(static_cast<double>(trained.size_min) * scale));
  bounds.size_max = static_cast<int64_t>(std::ceil(static_cast<double>(trained.size_max) * scale));
  bounds.size_min = std::min(bounds.size_min, n_now / k);
  bounds.size_max = std::max(bounds.size_max, (n_now + k - 1) / k);
  return bounds;
}

absl::StatusOr<CollisionReport> ResolveCollisions(const ResidualQuantizer& quantizer,
                                                  const float* x, int64_t n,
                                                  const CapacityLimits& limits,
                                                  const SidAssignOptions& options,
                                                  std::vector<int32_t>* codes) {
  const int64_t levels = quantizer.levels();
  const int64_t d = quantizer.dimension();
  if (static_cast<int64_t>(codes->size()) != n * levels) {
    return absl::InvalidArgumentError(
        absl::StrFormat("codes has %d values for %d rows x %d levels", codes->size(), n, levels));
  }
  for (int64_t i = 0; i < n * levels; ++i) {
    const int64_t k = quantizer.codebook_size(i % levels);
    if ((*codes)[i] < 0 || (*codes)[i] >= k) {
      return absl::InvalidArgumentError(
          absl::StrFormat("codes[row %d, level %d] = %d is outside 0..%d", i / levels, i % levels,
                          (*codes)[i], k - 1));
    }
  }
  const SidAssigner assigner(&quantizer);
  SidOccupancy occupancy(quantizer.codebook_sizes());
  if (auto status = assigner.Propose(x, 0, limits, options, occupancy); !status.ok()) {
    return status.status();  // the limits and options, checked once
  }
  CollisionReport report;
  std::vector<float> errors(static_cast<size_t>(n));
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    occupancy.Add(codes->data() + i * levels);
    errors[i] = assigner.Error(x + i * d, codes->data() + i * levels);
    total += errors[i];
  }
  const auto collisions = [&] {
    return n - ComputeCollisions(codes->data(), n, levels).unique_tuples;
  };
  report.collisions_before = collisions();
  report.mse_before = n > 0 ? total / static_cast<double>(n * d) : 0;

  // The rows of over-full tuples, by tuple.
  absl::flat_hash_map<std::string, std::vector<int64_t>> groups;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t* row = codes->data() + i * levels;
    if (occupancy.tuple_count(row) <= limits.suffix_cap) continue;
    groups[std::string(reinterpret_cast<const char*>(row),
                       static_cast<size_t>(levels) * sizeof(int32_t))]
        .push_back(i);
  }
  // Each member's regret: the extra error of the best tuple with room it could move to now.
  std::vector<int64_t> members;
  for (const auto& [key, rows] : groups) members.insert(members.end(), rows.begin(), rows.end());
  std::sort(members.begin(), members.end());
  std::vector<float> member_x(members.size() * static_cast<size_t>(d));
  for (size_t m = 0; m < members.size(); ++m) {
    std::copy_n(x + members[m] * d, d, member_x.data() + m * d);
  }
  auto alternatives = assigner.Propose(member_x.data(), static_cast<int64_t>(members.size()),
                                       limits, options, occupancy);
  if (!alternatives.ok()) return alternatives.status();
  absl::flat_hash_map<int64_t, float> regret;
  for (size_t m = 0; m < members.size(); ++m) {
    regret[members[m]] = alternatives->overflow[m] ? std::numeric_limits<float>::infinity()
                                                   : alternatives->error[m] - errors[members[m]];
  }
  // In each tuple the suffix_cap members of largest regret stay; the others move, cheapest
  // first over all tuples.
  std::vector<std::pair<float, int64_t>> movers;
  for (auto& [key, rows] : groups) {
    std::sort(rows.begin(), rows.end(), [&](int64_t a, int64_t b) {
      return regret[a] != regret[b] ? regret[a] > regret[b] : a < b;
    });
    for (size_t r = static_cast<size_t>(limits.suffix_cap); r < rows.size(); ++r) {
      movers.emplace_back(regret[rows[r]], rows[r]);
    }
  }
  std::sort(movers.begin(), movers.end());
  for (const auto& [ignored, row] : movers) {
    int32_t* current = codes->data() + row * levels;
    occupancy.Remove(current);
    auto moved = assigner.Propose(x + row * d, 1, limits, options, occupancy);
    if (!moved.ok()) return moved.status();
    if (!moved->overflow[0] && !std::equal(current, current + levels, moved->codes.begin())) {
      std::copy(moved->codes.begin(), moved->codes.end(), current);
      total += moved->error[0] - errors[row];
      errors[row] = moved->error[0];
      ++report.moved;
    }
    occupancy.Add(current);
  }
  report.collisions_after = collisions();
  report.mse_after = n > 0 ? total / static_cast<double>(n * d) : 0;
  return report;
}

}  // namespace quantd
