#include "server/tokenizer_job.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/balanced_assignment.h"
#include "core/kmeans.h"
#include "core/semantic_id.h"
#include "core/sid_assignment.h"
#include "core/vectors.h"
#include "server/clock.h"
#include "server/metric_proto.h"
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
  if (auto status = ValidateActivation(request.activation()); !status.ok()) return status;
  return plan;
}

absl::Status ValidateActivation(v1::Activation activation, absl::string_view field) {
  if (v1::Activation_IsValid(activation)) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrFormat("%s %d is not an Activation value (1 always, 2 never, 3 if better)", field,
                      static_cast<int>(activation)));
}

namespace {

bool ActivatesAlways(v1::Activation activation) {
  return activation == v1::ACTIVATION_ALWAYS || activation == v1::ACTIVATION_UNSPECIFIED;
}

// The version a job of `record` committed: a kept version made by that job (0: none).
uint32_t CommittedBy(const Storage& storage, const storage::JobRecord& record) {
  auto set = storage.tokenizers().GetVersions(record.collection());
  if (!set.ok() || *set == nullptr) return 0;
  for (const auto& [version, tokenizer] : (*set)->versions) {
    if (tokenizer->record().job_id() == record.id()) return version;
  }
  return 0;
}

// Capacity assignment holds the items it encodes to the same rule as new ones: items beyond the
// suffix cap of their tuple move to the nearest tuple with room (collision resolution). Fills
// the record's capacity fields; codes (n x L) are changed in place.
absl::Status ResolveUnderCapacity(const JobContext& context, const ResidualQuantizer& quantizer,
                                  const float* x, int64_t n, int beam_width, int64_t suffix_cap,
                                  storage::TokenizerRecord* record, std::vector<int32_t>* codes) {
  const int64_t levels = quantizer.levels();
  int64_t cap = suffix_cap;
  if (cap == 0) {
    const CollisionStats collisions = ComputeCollisions(codes->data(), n, levels);
    cap = std::max<int64_t>(1, collisions.largest_group - 1);
  }
  record->set_beam_width(static_cast<uint32_t>(beam_width));
  record->set_suffix_cap(static_cast<uint32_t>(std::min<int64_t>(cap, UINT32_MAX)));
  context.SetPhase("resolving collisions", 0.86);
  SidAssignOptions assign;
  assign.beam_width = beam_width;
  auto resolved = ResolveCollisions(
      quantizer, x, n, CapacityLimitsOf(*record, quantizer.codebook_sizes(), n), assign, codes);
  if (!resolved.ok()) return resolved.status();
  record->set_collisions_before_resolution(static_cast<uint64_t>(resolved->collisions_before));
  record->set_collisions_after_resolution(static_cast<uint64_t>(resolved->collisions_after));
  record->set_mse_before_resolution(resolved->mse_before);
  record->set_mse_after_resolution(resolved->mse_after);
  record->set_resolution_moved(static_cast<uint64_t>(resolved->moved));
  return absl::OkStatus();
}

// Collision rate and MSE per component of one tokenization of the same rows.
struct Quality {
  double collision_rate = 0;
  double mse = 0;
};
Quality QualityOf(const ResidualQuantizer& quantizer, const float* x, int64_t n,
                  const int32_t* codes) {
  return Quality{ComputeCollisions(codes, n, quantizer.levels()).collision_rate,
                 MeanSquaredError(quantizer, x, n, codes)};
}

// Starts every level of `options` from the codebooks of version `parent` (warm_start).
absl::Status WarmStart(const JobContext& context, uint32_t parent, int64_t d, RqOptions* options) {
  if (parent == 0) {
    return absl::FailedPreconditionError(
        absl::StrFormat("warm_start: collection '%s' has no active tokenizer version to start from",
                        context.collection()));
  }
  auto tokenizer = context.storage()->tokenizers().GetTokenizer(context.collection(), parent);
  if (!tokenizer.ok()) return tokenizer.status();
  const ResidualQuantizer& quantizer = (*tokenizer)->quantizer();
  std::vector<int64_t> sizes;
  for (const RqLevelOptions& level : options->levels) sizes.push_back(level.k);
  if (quantizer.dimension() != d || quantizer.codebook_sizes() != sizes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "warm_start: codebook_sizes [%s] differ from the active version %d's [%s]",
        absl::StrJoin(sizes, ", "), parent, absl::StrJoin(quantizer.codebook_sizes(), ", ")));
  }
  for (size_t l = 0; l < options->levels.size(); ++l) {
    options->levels[l].initial_centroids = quantizer.codebook(static_cast<int64_t>(l));
  }
  return absl::OkStatus();
}

// The first steps of a tokenizer job: the version reserved (before the snapshot, so that every
// item written after it is re-assigned at the commit), then the snapshot.
struct VersionStart {
  std::unique_ptr<Tokenizers::PendingVersion> pending;
  ItemSet items;
};
absl::StatusOr<VersionStart> StartVersion(const JobContext& context, v1::Activation activation) {
  auto pending = context.storage()->tokenizers().BeginVersion(
      context.collection(), context.collection_id(), ActivatesAlways(activation));
  if (!pending.ok()) return pending.status();
  auto items = context.LoadItems();
  if (!items.ok()) return items.status();
  return VersionStart{std::move(*pending), std::move(*items)};
}

}  // namespace

const JobKind& TokenizerJob::Kind() {
  static const JobKind* kind = new JobKind{"train_tokenizer", "tokenizer", CommittedBy};
  return *kind;
}

const JobKind& ImportTokenizerJob::Kind() {
  static const JobKind* kind = new JobKind{"import_tokenizer", "tokenizer", CommittedBy};
  return *kind;
}

absl::StatusOr<JobResult> FinishTokenizerVersion(
    const JobContext& context, Tokenizers::PendingVersion& pending, storage::TokenizerRecord record,
    ResidualQuantizer quantizer, const ItemSet& items, const float* x, std::vector<int32_t> codes,
    const TokenizerTrainPlan& plan, v1::Activation policy,
    std::chrono::steady_clock::time_point start) {
  Tokenizers& tokenizers = context.storage()->tokenizers();
  const int64_t n = static_cast<int64_t>(items.ids.size());
  const int64_t d = items.info.dimension;
  const int64_t levels = quantizer.levels();
  if (plan.assignment == v1::ASSIGNMENT_CAPACITY) {
    if (auto status = ResolveUnderCapacity(context, quantizer, x, n, plan.beam_width,
                                           plan.suffix_cap, &record, &codes);
        !status.ok()) {
      return status;
    }
    if (context.cancelled()) return absl::CancelledError("cancelled");
  }
  record.set_train_seconds(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  context.SetPhase("comparing with the active version", 0.9);

  // The parent version's SIDs of the same items (those that still have one), for suffix
  // carry-over and ACTIVATION_IF_BETTER.
  std::vector<int64_t> preferred(static_cast<size_t>(n), -1);
  std::shared_ptr<const Tokenizer> parent;
  std::vector<int64_t> common_rows;   // rows of `items` with a parent SID
  std::vector<int32_t> parent_codes;  // common_rows.size() x parent levels
  if (pending.parent_version() > 0) {
    auto found = tokenizers.GetTokenizer(context.collection(), pending.parent_version());
    if (found.ok()) parent = *found;
  }
  if (parent != nullptr) {
    auto sids = tokenizers.ExportSids(context.collection(), *parent);
    if (!sids.ok()) return sids.status();
    const int64_t parent_levels = sids->levels;
    size_t j = 0;
    for (int64_t i = 0; i < n; ++i) {  // both in id order
      while (j < sids->ids.size() && sids->ids[j] < items.ids[i]) ++j;
      if (j == sids->ids.size() || sids->ids[j] != items.ids[i]) continue;
      const int32_t* old_codes = sids->codes.data() + j * parent_levels;
      common_rows.push_back(i);
      parent_codes.insert(parent_codes.end(), old_codes, old_codes + parent_levels);
      if (parent_levels == levels &&
          std::equal(old_codes, old_codes + levels, codes.data() + i * levels)) {
        preferred[i] = sids->suffixes[j];
      }
    }
  }
  int64_t carried = 0;
  const std::vector<uint32_t> suffixes =
      AssignSuffixes(codes.data(), n, levels, preferred, &carried);
  const Quality quality = QualityOf(quantizer, x, n, codes.data());
  record.set_committed_items(static_cast<uint64_t>(n));
  record.set_committed_mse(quality.mse);
  record.set_committed_collision_rate(quality.collision_rate);
  record.set_suffixes_carried(static_cast<uint64_t>(carried));
  record.set_parent_version(pending.parent_version());

  Tokenizers::Activation activation;
  switch (policy) {
    case v1::ACTIVATION_NEVER:
      activation.activate = false;
      activation.decision = "not activated (activation: never)";
      break;
    case v1::ACTIVATION_IF_BETTER: {
      if (parent == nullptr) {
        activation.decision = "activated: there is no active version to compare with";
        break;
      }
      // Both tokenizations of the items the parent has a SID for.
      const auto m = static_cast<int64_t>(common_rows.size());
      std::vector<float> rows(static_cast<size_t>(m * d));
      std::vector<int32_t> new_codes(static_cast<size_t>(m * levels));
      for (int64_t r = 0; r < m; ++r) {
        std::copy_n(x + common_rows[r] * d, d, rows.data() + r * d);
        std::copy_n(codes.data() + common_rows[r] * levels, levels, new_codes.data() + r * levels);
      }
      const Quality ours = QualityOf(quantizer, rows.data(), m, new_codes.data());
      const Quality theirs = QualityOf(parent->quantizer(), rows.data(), m, parent_codes.data());
      const bool better = ours.collision_rate <= theirs.collision_rate && ours.mse <= theirs.mse &&
                          (ours.collision_rate < theirs.collision_rate || ours.mse < theirs.mse);
      activation.activate = better;
      activation.only_if_parent_active = true;
      activation.decision = absl::StrFormat(
          "%s (activation: if better): collision rate %.4f%% vs %.4f%%, MSE %.6g vs %.6g of "
          "version %d over %d items",
          better ? "activated" : "not activated", 100 * ours.collision_rate,
          100 * theirs.collision_rate, ours.mse, theirs.mse, parent->version(), m);
      break;
    }
    default:
      activation.decision = "activated (activation: always)";
      break;
  }
  if (context.cancelled()) return absl::CancelledError("cancelled");

  context.SetPhase("writing SIDs", 0.92);
  if (auto status = tokenizers.WriteVersionRows(
          pending, levels, items.ids, codes, suffixes,
          [&](int64_t done, int64_t total) {
            context.SetPhase("writing SIDs",
                             0.92 + 0.06 * static_cast<double>(done) /
                                        static_cast<double>(std::max<int64_t>(total, 1)));
          });
      !status.ok()) {
    return status;
  }
  if (context.cancelled()) return absl::CancelledError("cancelled");
  context.SetPhase("committing", 0.98);
  auto committed = tokenizers.CommitVersion(pending, std::move(record), std::move(quantizer), items,
                                            codes, std::move(activation));
  if (!committed.ok()) return committed.status();
  return JobResult{committed->version, committed->activated, committed->decision};
}

absl::Status TokenizerJob::Validate(const CollectionInfo& info) const {
  return TrainPlanFromRequest(request_, static_cast<int64_t>(info.item_count)).status();
}

absl::StatusOr<JobResult> TokenizerJob::Run(const JobContext& context) {
  const auto start = std::chrono::steady_clock::now();
  auto started = StartVersion(context, request_.activation());
  if (!started.ok()) return started.status();
  auto& [pending, items] = *started;
  const int64_t n = static_cast<int64_t>(items.ids.size());
  const int64_t d = items.info.dimension;
  auto plan = TrainPlanFromRequest(request_, n);
  if (!plan.ok()) return plan.status();
  RqOptions* options = &plan->rq;
  if (context.cancelled()) return absl::CancelledError("cancelled");

  // Training rows: all items or a seeded sample; normalised for cosine collections.
  const bool normalize = items.info.metric == Metric::kCosine;
  const int64_t m = request_.sample_size() > 0 && request_.sample_size() < static_cast<uint64_t>(n)
                        ? static_cast<int64_t>(request_.sample_size())
                        : n;
  std::vector<int64_t> rows;
  std::vector<float> train;
  if (m < n) {
    rows = SampleRows(n, m, request_.seed() ^ 0x5851f42d4c957f2dull);
    train.resize(static_cast<size_t>(m * d));
    for (int64_t i = 0; i < m; ++i) {
      std::copy_n(items.vectors.data() + rows[i] * d, d, train.data() + i * d);
    }
  } else {
    train = items.vectors;
  }
  if (normalize) NormalizeRows(train.data(), m, d);

  if (request_.warm_start()) {
    if (auto status = WarmStart(context, pending->parent_version(), d, options); !status.ok()) {
      return status;
    }
  }
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
      normalize ? NormalizedRows(items.vectors.data(), n, d) : std::vector<float>();
  const float* x = normalize ? all.data() : items.vectors.data();
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
  record.set_source("trained");
  return FinishTokenizerVersion(context, *pending, std::move(record), std::move(trained->quantizer),
                                items, x, std::move(codes), *plan, request_.activation(), start);
}

namespace {

// The parameters of an import as a training request, for TrainPlanFromRequest's checks of the
// assignment rule: its codebook sizes are the manifest's.
v1::TrainTokenizerRequest ImportParameters(const v1::ImportTokenizerRequest& request) {
  v1::TrainTokenizerRequest parameters = request.manifest().parameters();
  parameters.set_collection(request.collection());
  parameters.clear_codebook_sizes();
  for (uint32_t k : request.manifest().codebook_sizes()) parameters.add_codebook_sizes(k);
  parameters.clear_sample_size();
  parameters.set_activation(request.activation());
  return parameters;
}

// Checks an import against a collection of `info` with `items` items and builds its plan and
// quantizer. INVALID_ARGUMENT naming the field and value.
struct ImportPlan {
  TokenizerTrainPlan plan;
  ResidualQuantizer quantizer;
};
absl::StatusOr<ImportPlan> ImportPlanFor(const v1::ImportTokenizerRequest& request,
                                         const CollectionInfo& info, int64_t items) {
  const v1::TokenizerManifest& manifest = request.manifest();
  if (manifest.dimension() != static_cast<uint64_t>(info.dimension)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("manifest.dimension %d does not match collection '%s' (dimension %d)",
                        manifest.dimension(), info.name, info.dimension));
  }
  if (manifest.metric() != v1::METRIC_UNSPECIFIED &&
      manifest.metric() != MetricToProto(info.metric)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "manifest.metric %s does not match collection '%s' (%s); leave it unset to encode by the "
        "collection's metric",
        v1::Metric_Name(manifest.metric()), info.name,
        v1::Metric_Name(MetricToProto(info.metric))));
  }
  const int levels = manifest.codebook_sizes_size();
  if (levels < 1 || levels > 16) {
    return absl::InvalidArgumentError(
        absl::StrFormat("manifest.codebook_sizes has %d levels; 1..16 are allowed", levels));
  }
  const int64_t d = info.dimension;
  int64_t total = 0;
  int64_t largest = 0;
  for (int l = 0; l < levels; ++l) {
    const int64_t k = manifest.codebook_sizes(l);
    if (k < 1 || k > kMaxCodebookSize) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "manifest.codebook_sizes[%d] = %d is outside 1..%d", l, k, kMaxCodebookSize));
    }
    total += k * d;
    largest = std::max(largest, k);
  }
  if (request.codebooks_size() != total) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "codebooks has %d values; codebook_sizes %s x dimension %d needs %d",
        request.codebooks_size(), absl::StrJoin(manifest.codebook_sizes(), "+"), d, total));
  }
  for (int i = 0; i < request.codebooks_size(); ++i) {
    if (!std::isfinite(request.codebooks(i))) {
      return absl::InvalidArgumentError(
          absl::StrFormat("codebooks[%d] = %g is not finite", i, request.codebooks(i)));
    }
  }
  // Codebooks trained elsewhere may have more codes than the collection has items.
  auto plan = TrainPlanFromRequest(ImportParameters(request), std::max(items, largest));
  if (!plan.ok()) return plan.status();
  std::vector<int64_t> ks(manifest.codebook_sizes().begin(), manifest.codebook_sizes().end());
  std::vector<std::vector<float>> codebooks;
  const float* next = request.codebooks().data();
  for (int64_t k : ks) {
    codebooks.emplace_back(next, next + k * d);
    next += k * d;
  }
  auto quantizer = ResidualQuantizer::FromCodebooks(d, ks, std::move(codebooks));
  if (!quantizer.ok()) return quantizer.status();
  return ImportPlan{std::move(*plan), std::move(*quantizer)};
}

}  // namespace

absl::Status ImportTokenizerJob::Validate(const CollectionInfo& info) const {
  return ImportPlanFor(request_, info, static_cast<int64_t>(info.item_count)).status();
}

absl::StatusOr<JobResult> ImportTokenizerJob::Run(const JobContext& context) {
  const auto start = std::chrono::steady_clock::now();
  auto started = StartVersion(context, request_.activation());
  if (!started.ok()) return started.status();
  auto& [pending, items] = *started;
  const int64_t n = static_cast<int64_t>(items.ids.size());
  const int64_t d = items.info.dimension;
  auto import = ImportPlanFor(request_, items.info, n);
  if (!import.ok()) return import.status();
  const ResidualQuantizer& quantizer = import->quantizer;
  const TokenizerTrainPlan& plan = import->plan;
  const int64_t levels = quantizer.levels();

  context.SetPhase("encoding", 0.05);
  const bool normalize = items.info.metric == Metric::kCosine;
  std::vector<float> all =
      normalize ? NormalizedRows(items.vectors.data(), n, d) : std::vector<float>();
  const float* x = normalize ? all.data() : items.vectors.data();
  std::vector<int32_t> codes(static_cast<size_t>(n * levels));
  quantizer.Encode(x, n, codes.data());
  if (context.cancelled()) return absl::CancelledError("cancelled");

  storage::TokenizerRecord record;
  record.set_dimension(static_cast<uint32_t>(d));
  for (int64_t k : quantizer.codebook_sizes()) record.add_codebook_sizes(static_cast<uint32_t>(k));
  record.set_normalize(normalize);
  record.set_seed(request_.manifest().parameters().seed());
  record.set_trained_items(static_cast<uint64_t>(std::max<int64_t>(n, 1)));
  record.set_create_time_ms(NowMs());
  record.set_job_id(context.job_id());
  record.set_source("imported");
  bool all_balanced = true;
  for (int64_t l = 0; l < levels; ++l) {
    const RqLevelOptions& options = plan.rq.levels[l];
    storage::TokenizerRecord::Level* level = record.add_levels();
    level->set_balanced(options.balanced);
    all_balanced = all_balanced && options.balanced;
    if (!options.balanced) continue;
    // The bounds in force scale from these with the item count (see BoundsInForceOf).
    const SizeBounds bounds = plan.balance_slack ? BoundsFromSlack(std::max<int64_t>(n, 1),
                                                                   options.k, *plan.balance_slack)
                                                 : options.bounds;
    level->set_size_min(static_cast<uint64_t>(bounds.size_min));
    level->set_size_max(static_cast<uint64_t>(bounds.size_max));
  }
  record.set_balanced(all_balanced);
  record.set_assignment(plan.assignment);
  if (plan.balance_slack) record.set_balance_slack(*plan.balance_slack);
  return FinishTokenizerVersion(context, *pending, std::move(record), std::move(import->quantizer),
                                items, x, std::move(codes), plan, request_.activation(), start);
}

}  // namespace quantd
