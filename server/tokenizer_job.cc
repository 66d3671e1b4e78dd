#include "server/tokenizer_job.h"

#include <algorithm>
#include <chrono>
#include <vector>

#include "absl/strings/str_format.h"
#include "core/kmeans.h"
#include "core/semantic_id.h"
#include "core/sid_assignment.h"
#include "core/vectors.h"
#include "server/clock.h"
#include "server/tokenizer.h"

namespace quantd {
namespace {

constexpr uint32_t kDefaultIterations = 25;
constexpr uint32_t kMaxIterations = 1000;
constexpr int64_t kMaxCodebookSize = 65536;
constexpr double kDefaultSlack = 0.1;
constexpr uint32_t kMaxRestarts = 10;

// Mean squared error per component of rows x (n x d) against their decoded codes (n x L).
double MeanSquaredError(const ResidualQuantizer& quantizer, const float* x, int64_t n,
                        const int32_t* codes) {
  if (n == 0) return 0;
  return quantizer.LevelMse(x, n, codes).back();
}

}  // namespace

absl::StatusOr<TokenizerTrainPlan> TrainPlanFromRequest(const v1::TrainTokenizerRequest& request,
                                                        int64_t items) {
  TokenizerTrainPlan plan;
  RqOptions& options = plan.rq;
  std::vector<int64_t> sizes(request.codebook_sizes().begin(), request.codebook_sizes().end());
  if (sizes.empty()) sizes = {256, 256, 256};
  if (sizes.size() > 16) {
    return absl::InvalidArgumentError(
        absl::StrFormat("codebook_sizes has %d levels, at most 16", sizes.size()));
  }
  const int64_t training_items =
      request.sample_size() > 0 && request.sample_size() < static_cast<uint64_t>(items)
          ? static_cast<int64_t>(request.sample_size())
          : items;
  for (size_t l = 0; l < sizes.size(); ++l) {
    if (sizes[l] < 1 || sizes[l] > kMaxCodebookSize) {
      return absl::InvalidArgumentError(absl::StrFormat("codebook_sizes[%d] = %d is outside 1..%d",
                                                        l, sizes[l], kMaxCodebookSize));
    }
    if (sizes[l] > training_items) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "codebook_sizes[%d] = %d exceeds the %d training items", l, sizes[l], training_items));
    }
  }
  // Which levels are balanced: level_balanced, one entry per level, or `balanced` for all.
  std::vector<bool> balanced(sizes.size(), request.balanced());
  if (request.level_balanced_size() > 0) {
    if (request.level_balanced_size() != static_cast<int>(sizes.size())) {
      return absl::InvalidArgumentError(
          absl::StrFormat("level_balanced has %d entries for %d levels",
                          request.level_balanced_size(), sizes.size()));
    }
    if (request.balanced()) {
      return absl::InvalidArgumentError(
          "give balanced (every level) or level_balanced (per level), not both");
    }
    for (size_t l = 0; l < sizes.size(); ++l) balanced[l] = request.level_balanced(l);
  }
  const bool any_balanced = std::find(balanced.begin(), balanced.end(), true) != balanced.end();
  if (!any_balanced && (request.size_bounds_size() > 0 || request.has_balance_slack())) {
    return absl::InvalidArgumentError(
        "size_bounds and balance_slack need balanced = true (or a balanced level in "
        "level_balanced)");
  }
  if (request.size_bounds_size() > 0 && request.has_balance_slack()) {
    return absl::InvalidArgumentError("give size_bounds or balance_slack, not both");
  }
  if (request.size_bounds_size() > 0 &&
      request.size_bounds_size() != static_cast<int>(sizes.size())) {
    return absl::InvalidArgumentError(absl::StrFormat("size_bounds has %d entries for %d levels",
                                                      request.size_bounds_size(), sizes.size()));
  }
  options.balance_slack = request.has_balance_slack() ? request.balance_slack() : kDefaultSlack;
  if (!(options.balance_slack >= 0 && options.balance_slack <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("balance_slack %g is outside 0..1", options.balance_slack));
  }
  if (any_balanced && request.size_bounds_size() == 0) plan.balance_slack = options.balance_slack;
  for (size_t l = 0; l < sizes.size(); ++l) {
    RqLevelOptions level;
    level.k = sizes[l];
    level.balanced = balanced[l];
    if (request.size_bounds_size() > 0 && balanced[l]) {
      const v1::SizeBounds& bounds = request.size_bounds(static_cast<int>(l));
      if (bounds.size_max() > static_cast<uint64_t>(training_items) ||
          bounds.size_min() > bounds.size_max()) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "size_bounds[%d] = [%d, %d]: need size_min <= size_max <= %d training items", l,
            bounds.size_min(), bounds.size_max(), training_items));
      }
      level.bounds.size_min = static_cast<int64_t>(bounds.size_min());
      level.bounds.size_max = static_cast<int64_t>(bounds.size_max());
      if (auto status = CheckBoundsFeasible(training_items, level.k, level.bounds); !status.ok()) {
        return absl::InvalidArgumentError(
            absl::StrFormat("size_bounds[%d]: %s", l, status.message()));
      }
    }
    options.levels.push_back(level);
  }
  const uint32_t iterations =
      request.max_iterations() == 0 ? kDefaultIterations : request.max_iterations();
  if (iterations > kMaxIterations) {
    return absl::InvalidArgumentError(
        absl::StrFormat("max_iterations %d exceeds %d", request.max_iterations(), kMaxIterations));
  }
  options.kmeans.max_iterations = static_cast<int>(iterations);
  if (request.has_tolerance()) {
    if (!(request.tolerance() >= 0 && request.tolerance() < 1)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("tolerance %g is outside [0, 1)", request.tolerance()));
    }
    options.kmeans.tolerance = request.tolerance();
  }
  const uint32_t restarts = request.restarts() == 0 ? 1 : request.restarts();
  if (restarts > kMaxRestarts) {
    return absl::InvalidArgumentError(
        absl::StrFormat("restarts %d is outside 1..%d", request.restarts(), kMaxRestarts));
  }
  options.kmeans.restarts = static_cast<int>(restarts);
  options.kmeans.seed = request.seed();
  options.kmeans.num_threads = 0;

  // Assignment of new items.
  switch (request.assignment()) {
    case v1::ASSIGNMENT_UNSPECIFIED:
      plan.assignment = any_balanced ? v1::ASSIGNMENT_CAPACITY : v1::ASSIGNMENT_NEAREST;
      break;
    case v1::ASSIGNMENT_NEAREST:
    case v1::ASSIGNMENT_CAPACITY:
      plan.assignment = request.assignment();
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrFormat("assignment %d is not an Assignment value (1 nearest, 2 capacity)",
                          static_cast<int>(request.assignment())));
  }
  const bool capacity = plan.assignment == v1::ASSIGNMENT_CAPACITY;
  if (!capacity && (request.has_beam_width() || request.has_suffix_cap())) {
    return absl::InvalidArgumentError(
        "beam_width and suffix_cap apply to assignment ASSIGNMENT_CAPACITY only");
  }
  if (capacity) {
    plan.beam_width =
        request.has_beam_width() ? static_cast<int>(request.beam_width()) : kDefaultBeamWidth;
    if (request.has_beam_width() &&
        (request.beam_width() < 1 || request.beam_width() > kMaxBeamWidth)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("beam_width %d is outside 1..%d", request.beam_width(), kMaxBeamWidth));
    }
    if (request.has_suffix_cap() && request.suffix_cap() < 1) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "suffix_cap %d is below 1 (1 allows one item per code tuple)", request.suffix_cap()));
    }
    plan.suffix_cap = request.suffix_cap();
  }
  return plan;
}

const JobKind& TokenizerJob::Kind() {
  static const JobKind* kind =
      new JobKind{"train_tokenizer", "tokenizer",
                  [](const Storage& storage, const storage::JobRecord& record) -> uint32_t {
                    auto tokenizer = storage.tokenizers().GetTokenizer(record.collection());
                    if (!tokenizer.ok() || (*tokenizer)->record().job_id() != record.id()) return 0;
                    return (*tokenizer)->version();
                  }};
  return *kind;
}

absl::Status TokenizerJob::Validate(const CollectionInfo& info) const {
  return TrainPlanFromRequest(request_, static_cast<int64_t>(info.item_count)).status();
}

absl::StatusOr<uint32_t> TokenizerJob::Run(const JobContext& context) {
  const auto start = std::chrono::steady_clock::now();
  auto items = context.LoadItems();
  if (!items.ok()) return items.status();
  const int64_t n = static_cast<int64_t>(items->ids.size());
  const int64_t d = items->info.dimension;
  auto plan = TrainPlanFromRequest(request_, n);
  if (!plan.ok()) return plan.status();
  RqOptions* options = &plan->rq;
  if (context.cancelled()) return absl::CancelledError("cancelled");

  // Training rows: all items or a seeded sample; normalised for cosine collections.
  const bool normalize = items->info.metric == Metric::kCosine;
  const int64_t m = request_.sample_size() > 0 && request_.sample_size() < static_cast<uint64_t>(n)
                        ? static_cast<int64_t>(request_.sample_size())
                        : n;
  std::vector<int64_t> rows;
  std::vector<float> train;
  if (m < n) {
    rows = SampleRows(n, m, request_.seed() ^ 0x5851f42d4c957f2dull);
    train.resize(static_cast<size_t>(m * d));
    for (int64_t i = 0; i < m; ++i) {
      std::copy_n(items->vectors.data() + rows[i] * d, d, train.data() + i * d);
    }
  } else {
    train = items->vectors;
  }
  if (normalize) NormalizeRows(train.data(), m, d);

  const int levels = static_cast<int>(options->levels.size());
  const int max_iterations = options->kmeans.max_iterations;
  const int restarts = options->kmeans.restarts;
  options->on_progress = [&](int level, int iteration, double) {
    context.SetPhase(
        absl::StrFormat("training level %d/%d", level + 1, levels),
        0.02 + 0.78 * (level + std::min(1.0, (iteration + 1.0) / (max_iterations * restarts))) /
                   levels);
    return !context.cancelled();
  };
  context.SetPhase(absl::StrFormat("training level 1/%d", levels), 0.02);
  auto trained = TrainResidualQuantizer(train.data(), m, d, *options);
  if (!trained.ok()) return trained.status();
  if (context.cancelled()) return absl::CancelledError("cancelled");

  // Codes of every item: the training labels for trained rows, nearest codes for the others.
  context.SetPhase("encoding", 0.81);
  std::vector<float> all =
      normalize ? NormalizedRows(items->vectors.data(), n, d) : std::vector<float>();
  const float* x = normalize ? all.data() : items->vectors.data();
  std::vector<int32_t> codes(static_cast<size_t>(n * levels));
  if (m == n) {
    codes = trained->codes;
  } else {
    trained->quantizer.Encode(x, n, codes.data());
    for (int64_t i = 0; i < m; ++i) {
      std::copy_n(trained->codes.data() + i * levels, levels, codes.data() + rows[i] * levels);
    }
  }
  if (context.cancelled()) return absl::CancelledError("cancelled");

  storage::TokenizerRecord record;
  record.set_dimension(static_cast<uint32_t>(d));
  for (const RqLevelOptions& level : options->levels) {
    record.add_codebook_sizes(static_cast<uint32_t>(level.k));
  }
  record.set_normalize(normalize);
  record.set_balanced(std::all_of(options->levels.begin(), options->levels.end(),
                                  [](const RqLevelOptions& level) { return level.balanced; }));
  record.set_seed(request_.seed());
  record.set_max_iterations(static_cast<uint32_t>(max_iterations));
  record.set_tolerance(options->kmeans.tolerance);
  record.set_restarts(static_cast<uint32_t>(restarts));
  record.set_trained_items(static_cast<uint64_t>(m));
  record.set_create_time_ms(NowMs());
  record.set_job_id(context.job_id());
  for (const RqLevelReport& report : trained->levels) {
    storage::TokenizerRecord::Level* level = record.add_levels();
    level->set_balanced(report.balanced);
    level->set_size_min(static_cast<uint64_t>(report.bounds.size_min));
    level->set_size_max(static_cast<uint64_t>(report.bounds.size_max));
    level->set_iterations(static_cast<uint32_t>(report.iterations));
    level->set_mse_after(report.mse_after);
    level->set_objective(report.objective);
  }
  record.set_assignment(plan->assignment);
  if (plan->balance_slack) record.set_balance_slack(*plan->balance_slack);

  // Capacity assignment holds the training items to the same rule as new ones: items beyond
  // the suffix cap of their tuple move to the nearest tuple with room (collision resolution).
  if (plan->assignment == v1::ASSIGNMENT_CAPACITY) {
    int64_t cap = plan->suffix_cap;
    if (cap == 0) {
      const CollisionStats collisions = ComputeCollisions(codes.data(), n, levels);
      cap = std::max<int64_t>(1, collisions.largest_group - 1);
    }
    record.set_beam_width(static_cast<uint32_t>(plan->beam_width));
    record.set_suffix_cap(static_cast<uint32_t>(std::min<int64_t>(cap, UINT32_MAX)));
    context.SetPhase("resolving collisions", 0.86);
    SidAssignOptions assign;
    assign.beam_width = plan->beam_width;
    auto resolved = ResolveCollisions(
        trained->quantizer, x, n, CapacityLimitsOf(record, trained->quantizer.codebook_sizes(), n),
        assign, &codes);
    if (!resolved.ok()) return resolved.status();
    record.set_collisions_before_resolution(static_cast<uint64_t>(resolved->collisions_before));
    record.set_collisions_after_resolution(static_cast<uint64_t>(resolved->collisions_after));
    record.set_mse_before_resolution(resolved->mse_before);
    record.set_mse_after_resolution(resolved->mse_after);
    record.set_resolution_moved(static_cast<uint64_t>(resolved->moved));
    if (context.cancelled()) return absl::CancelledError("cancelled");
  }
  record.set_committed_items(static_cast<uint64_t>(n));
  record.set_committed_mse(MeanSquaredError(trained->quantizer, x, n, codes.data()));
  record.set_train_seconds(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  context.SetPhase("committing", 0.95);
  return context.storage()->tokenizers().CommitTokenizer(
      request_.collection(), std::move(record), std::move(trained->quantizer), *items, codes);
}

}  // namespace quantd
