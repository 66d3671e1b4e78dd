#include "server/tokenizer_job.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/balanced_assignment.h"
#include "core/kmeans.h"
#include "core/semantic_id.h"
#include "core/sid_assignment.h"
#include "core/vectors.h"
#include "server/clock.h"
#include "server/metric_proto.h"
#include "server/rqvae_model.h"
#include "server/tokenizer.h"
#include "server/torch_import.h"

namespace quantd {
namespace {

constexpr uint32_t kDefaultIterations = 25;
constexpr uint32_t kMaxIterations = 1000;
constexpr int64_t kMaxCodebookSize = 65536;
constexpr double kDefaultSlack = 0.1;
constexpr uint32_t kMaxRestarts = 10;

}  // namespace

namespace {

// The RQ-KMeans fields an RQ-VAE request may not set: INVALID_ARGUMENT naming the first set.
absl::Status CheckNoKMeansFields(const v1::TrainTokenizerRequest& request) {
  const char* field = nullptr;
  if (request.balanced()) {
    field = "balanced";
  } else if (request.level_balanced_size() > 0) {
    field = "level_balanced";
  } else if (request.size_bounds_size() > 0) {
    field = "size_bounds";
  } else if (request.has_balance_slack()) {
    field = "balance_slack";
  } else if (request.max_iterations() != 0) {
    field = "max_iterations";
  } else if (request.has_tolerance()) {
    field = "tolerance";
  } else if (request.restarts() != 0) {
    field = "restarts";
  } else if (request.warm_start()) {
    field = "warm_start";
  }
  if (field == nullptr) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrFormat(
      "%s applies to method TOKENIZER_METHOD_RQ_KMEANS only, not TOKENIZER_METHOD_RQ_VAE", field));
}

}  // namespace

absl::StatusOr<TokenizerTrainPlan> TrainPlanFromRequest(const v1::TrainTokenizerRequest& request,
                                                        int64_t items, int64_t dimension) {
  TokenizerTrainPlan plan;
  if (!v1::TokenizerMethod_IsValid(request.method())) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "method %d is not a TokenizerMethod value (1 RQ-KMeans, 2 RQ-VAE)", request.method()));
  }
  const bool rqvae = request.method() == v1::TOKENIZER_METHOD_RQ_VAE;
  if (!rqvae && request.has_rqvae()) {
    return absl::InvalidArgumentError("rqvae options need method TOKENIZER_METHOD_RQ_VAE");
  }
  if (rqvae) {
    if (auto status = CheckNoKMeansFields(request); !status.ok()) return status;
  }
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
  if (rqvae) {
    auto rqvae_options =
        RqVaeOptionsFromProto(request.rqvae(), sizes, dimension, training_items, request.seed());
    if (!rqvae_options.ok()) return rqvae_options.status();
    plan.rqvae = *std::move(rqvae_options);
    plan.index_generation = request.rqvae().index_generation() == v1::INDEX_GENERATION_UNSPECIFIED
                                ? v1::INDEX_GENERATION_EXACT_FREE_CODES
                                : request.rqvae().index_generation();
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
Quality QualityOf(const TokenizerModel& model, const float* x, int64_t n, const int32_t* codes) {
  return Quality{ComputeCollisions(codes, n, model.quantizer.levels()).collision_rate,
                 model.ReconstructionMse(x, n, codes)};
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
  if ((*tokenizer)->rqvae() != nullptr) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "warm_start: the active version %d is an RQ-VAE tokenizer; warm start starts k-means from "
        "RQ-KMeans codebooks",
        parent));
  }
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
    TokenizerModel model, const ItemSet& items, const float* x, std::vector<int32_t> codes,
    const TokenizerTrainPlan& plan, v1::Activation policy,
    std::chrono::steady_clock::time_point start) {
  Tokenizers& tokenizers = context.storage()->tokenizers();
  const int64_t n = static_cast<int64_t>(items.ids.size());
  const int64_t d = items.info.dimension;
  const int64_t levels = model.quantizer.levels();
  if (plan.assignment == v1::ASSIGNMENT_CAPACITY) {
    std::vector<float> buffer;
    const float* rows = model.QuantizerRows(x, n, &buffer);
    if (auto status = ResolveUnderCapacity(context, model.quantizer, rows, n, plan.beam_width,
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
  const Quality quality = QualityOf(model, x, n, codes.data());
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
      const Quality ours = QualityOf(model, rows.data(), m, new_codes.data());
      const Quality theirs = QualityOf(parent->model(), rows.data(), m, parent_codes.data());
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
  auto committed = tokenizers.CommitVersion(pending, std::move(record), std::move(model), items,
                                            codes, std::move(activation));
  if (!committed.ok()) return committed.status();
  return JobResult{committed->version, committed->activated, committed->decision};
}

namespace {

// Rows a training request of a collection of n items trains on: sample_size, or all.
int64_t TrainingRows(const v1::TrainTokenizerRequest& request, int64_t n) {
  return request.sample_size() > 0 && request.sample_size() < static_cast<uint64_t>(n)
             ? static_cast<int64_t>(request.sample_size())
             : n;
}

// Codes of rows x (n x d, prepared) under an RQ-VAE: nearest, then re-assigned as `mode` says.
absl::StatusOr<GeneratedIndices> GenerateCodes(const RqVae& model, const float* x, int64_t n,
                                               v1::IndexGeneration mode) {
  if (mode != v1::INDEX_GENERATION_NONE) {
    GenerateIndicesOptions options;
    options.mode = mode == v1::INDEX_GENERATION_SEED_SINKHORN
                       ? GenerateIndicesOptions::Mode::kSeedSinkhorn
                       : GenerateIndicesOptions::Mode::kExactFreeCodes;
    return GenerateIndices(model, x, n, options);
  }
  GeneratedIndices nearest;
  nearest.codes.resize(static_cast<size_t>(n * model.levels()));
  model.Encode(x, n, nearest.codes.data());
  const CollisionStats collisions = ComputeCollisions(nearest.codes.data(), n, model.levels());
  nearest.collisions_before = nearest.collisions_after = n - collisions.unique_tuples;
  return nearest;
}

// The levels of an RQ-VAE tokenizer's record: none balanced; the mean squared residual per
// component of the latents of rows x (n x d, prepared) after each level, with codes (n x L).
void AddRqVaeLevels(const TokenizerModel& model, const float* x, int64_t n,
                    const std::vector<int32_t>& codes, storage::TokenizerRecord* record) {
  std::vector<float> buffer;
  const float* latents = model.QuantizerRows(x, n, &buffer);
  for (double mse : model.quantizer.LevelMse(latents, n, codes.data())) {
    record->add_levels()->set_mse_after(mse);
  }
}

// One epoch's figures as a job phase.
std::string EpochPhase(const RqVaeEpochReport& report, int epochs) {
  std::string phase = absl::StrFormat(
      "epoch %d/%d: loss %.5g (reconstruction %.5g, quantization %.5g)", report.epoch + 1, epochs,
      report.loss.total, report.loss.recon, report.loss.quant);
  if (report.evaluated) {
    absl::StrAppendFormat(&phase, ", collisions %.3f%%, codes used %s", 100 * report.collision_rate,
                          absl::StrJoin(report.codes_used, "/"));
  }
  return phase;
}

}  // namespace

absl::StatusOr<JobResult> TokenizerJob::RunRqVae(const JobContext& context,
                                                 Tokenizers::PendingVersion& pending,
                                                 const ItemSet& items,
                                                 const std::vector<float>& train, int64_t m,
                                                 const TokenizerTrainPlan& plan,
                                                 std::chrono::steady_clock::time_point start) {
  const RqVaeOptions& options = *plan.rqvae;
  const int64_t n = static_cast<int64_t>(items.ids.size());
  const int64_t d = items.info.dimension;
  context.SetPhase(absl::StrFormat("epoch 1/%d", options.epochs), 0.02);
  auto trained = TrainRqVae(train.data(), m, d, options, [&](const RqVaeEpochReport& report) {
    context.SetPhase(EpochPhase(report, options.epochs),
                     0.02 + 0.78 * (report.epoch + 1.0) / options.epochs);
    return !context.cancelled();
  });
  if (!trained.ok()) {
    if (context.cancelled()) return absl::CancelledError("cancelled");
    return trained.status();
  }
  const double train_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  // Every item's codes: nearest, then colliding items re-assigned at the last level.
  context.SetPhase("generating indices", 0.81);
  const bool normalize = items.info.metric == Metric::kCosine;
  std::vector<float> all =
      normalize ? NormalizedRows(items.vectors.data(), n, d) : std::vector<float>();
  const float* x = normalize ? all.data() : items.vectors.data();
  auto generated = GenerateCodes(trained->model, x, n, plan.index_generation);
  if (!generated.ok()) return generated.status();
  if (context.cancelled()) return absl::CancelledError("cancelled");

  storage::TokenizerRecord record;
  record.set_method(v1::TOKENIZER_METHOD_RQ_VAE);
  record.set_dimension(static_cast<uint32_t>(d));
  for (int64_t k : options.num_emb_list) record.add_codebook_sizes(static_cast<uint32_t>(k));
  record.set_normalize(normalize);
  record.set_seed(request_.seed());
  record.set_trained_items(static_cast<uint64_t>(m));
  record.set_create_time_ms(NowMs());
  record.set_job_id(context.job_id());
  record.set_assignment(plan.assignment);
  record.set_source("trained");

  const RqVaeEpochReport& kept = trained->epochs[static_cast<size_t>(trained->model_epoch)];
  v1::RqVaeStats stats;
  stats.set_source("trained");
  stats.set_epochs(static_cast<uint32_t>(trained->epochs.size()));
  stats.set_model_epoch(static_cast<uint32_t>(trained->model_epoch));
  stats.set_keep(RqVaeOptionsToProto(options).keep());
  stats.set_loss(kept.loss.total);
  stats.set_reconstruction_loss(kept.loss.recon);
  stats.set_quantization_loss(kept.loss.quant);
  stats.set_collision_rate(kept.collision_rate);
  stats.set_index_generation(plan.index_generation);
  stats.set_collisions_before(static_cast<uint64_t>(generated->collisions_before));
  stats.set_collisions_after(static_cast<uint64_t>(generated->collisions_after));
  stats.set_moved(static_cast<uint64_t>(generated->moved));
  stats.set_rounds(static_cast<uint32_t>(generated->rounds));
  double epoch_seconds = 0;
  for (const RqVaeEpochReport& report : trained->epochs) epoch_seconds += report.seconds;
  stats.set_seconds_per_epoch(epoch_seconds / static_cast<double>(trained->epochs.size()));
  stats.set_train_seconds(train_seconds);
  stats.set_parameters(static_cast<uint64_t>(RqVaeParameterCount(options, d)));
  stats.set_training_memory_bytes(static_cast<uint64_t>(RqVaeJobBytes(options, n, m, d)));
  auto model = TokenizerModel::OfRqVae(std::move(trained->model));
  if (!model.ok()) return model.status();
  AddRqVaeLevels(*model, x, n, generated->codes, &record);
  *stats.mutable_options() = RqVaeOptionsToProto(model->rqvae->options());
  record.set_rqvae_stats(stats.SerializeAsString());
  return FinishTokenizerVersion(context, pending, std::move(record), std::move(*model), items, x,
                                std::move(generated->codes), plan, request_.activation(), start);
}

int64_t RqVaeJobBytes(const RqVaeOptions& options, int64_t n, int64_t m, int64_t d) {
  const auto f = static_cast<int64_t>(sizeof(float));
  const auto levels = static_cast<int64_t>(options.num_emb_list.size());
  return 2 * n * d * f + m * d * f + RqVaeTrainingBytes(options, d, m) +
         n * (3 * options.e_dim + 2 * levels) * f;
}

absl::Status TokenizerJob::Validate(const CollectionInfo& info) const {
  const auto n = static_cast<int64_t>(info.item_count);
  auto plan = TrainPlanFromRequest(request_, n, info.dimension);
  if (!plan.ok()) return plan.status();
  return CheckMemory(*plan, n, info.dimension);
}

absl::Status TokenizerJob::CheckMemory(const TokenizerTrainPlan& plan, int64_t n, int64_t d) const {
  if (!plan.rqvae || memory_limit_bytes_ <= 0) return absl::OkStatus();
  const int64_t m = TrainingRows(request_, n);
  const int64_t bytes = RqVaeJobBytes(*plan.rqvae, n, m, d);
  if (bytes <= memory_limit_bytes_) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrFormat(
      "RQ-VAE training of %d items (%d trained on) of dimension %d would hold about %d MiB "
      "(%d parameters x 5, batch_size %d, the items and their latents), over the server's "
      "--training_memory_mb %d: lower rqvae.layers, rqvae.batch_size or sample_size, or raise "
      "the limit",
      n, m, d, (bytes + (1 << 20) - 1) >> 20, RqVaeParameterCount(*plan.rqvae, d),
      plan.rqvae->batch_size, memory_limit_bytes_ >> 20));
}

absl::StatusOr<JobResult> TokenizerJob::Run(const JobContext& context) {
  const auto start = std::chrono::steady_clock::now();
  auto started = StartVersion(context, request_.activation());
  if (!started.ok()) return started.status();
  auto& [pending, items] = *started;
  const int64_t n = static_cast<int64_t>(items.ids.size());
  const int64_t d = items.info.dimension;
  auto plan = TrainPlanFromRequest(request_, n, d);
  if (!plan.ok()) return plan.status();
  if (auto status = CheckMemory(*plan, n, d); !status.ok()) return status;
  RqOptions* options = &plan->rq;
  if (context.cancelled()) return absl::CancelledError("cancelled");

  // Training rows: all items or a seeded sample; normalised for cosine collections.
  const bool normalize = items.info.metric == Metric::kCosine;
  const int64_t m = TrainingRows(request_, n);
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
  if (plan->rqvae) return RunRqVae(context, *pending, items, train, m, *plan, start);

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
  return FinishTokenizerVersion(context, *pending, std::move(record),
                                TokenizerModel{std::move(trained->quantizer), nullptr}, items, x,
                                std::move(codes), *plan, request_.activation(), start);
}

namespace {

// The parameters of an import as a training request, for TrainPlanFromRequest's checks of the
// assignment rule, with codebook sizes `sizes`. An RQ-VAE's come as RQ-KMeans parameters
// without balanced levels (its own options are the model's).
absl::StatusOr<v1::TrainTokenizerRequest> ImportParameters(
    const v1::ImportTokenizerRequest& request, absl::Span<const int64_t> sizes, bool rqvae) {
  v1::TrainTokenizerRequest parameters = request.manifest().parameters();
  if (rqvae) {
    if (auto status = CheckNoKMeansFields(parameters); !status.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("manifest.parameters: ", status.message()));
    }
    parameters.clear_method();
    parameters.clear_rqvae();
  }
  parameters.set_collection(request.collection());
  parameters.clear_codebook_sizes();
  for (int64_t k : sizes) parameters.add_codebook_sizes(static_cast<uint32_t>(k));
  parameters.clear_sample_size();
  parameters.set_activation(request.activation());
  return parameters;
}

// Checks an import against a collection of `info` with `items` items and builds its plan and
// model. INVALID_ARGUMENT naming the field and value.
struct ImportPlan {
  TokenizerTrainPlan plan;
  TokenizerModel model;
  // RQ-VAE: where the model came from (RqVaeStats.source, the checkpoint's figures).
  std::optional<v1::RqVaeStats> rqvae_stats;
};

// The manifest's dimension and metric against the collection's.
absl::Status CheckManifest(const v1::TokenizerManifest& manifest, const CollectionInfo& info,
                           bool dimension_optional) {
  if (manifest.dimension() != static_cast<uint64_t>(info.dimension) &&
      !(dimension_optional && manifest.dimension() == 0)) {
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
  return absl::OkStatus();
}

// The plan of an import of `sizes` codebooks (assignment rule from the manifest's parameters).
absl::StatusOr<TokenizerTrainPlan> ImportTrainPlan(const v1::ImportTokenizerRequest& request,
                                                   absl::Span<const int64_t> sizes, bool rqvae,
                                                   const CollectionInfo& info, int64_t items) {
  auto parameters = ImportParameters(request, sizes, rqvae);
  if (!parameters.ok()) return parameters.status();
  // Codebooks trained elsewhere may have more codes than the collection has items.
  const int64_t largest = *std::max_element(sizes.begin(), sizes.end());
  return TrainPlanFromRequest(*parameters, std::max(items, largest), info.dimension);
}

absl::StatusOr<ImportPlan> CodebooksImportPlan(const v1::ImportTokenizerRequest& request,
                                               const CollectionInfo& info, int64_t items) {
  const v1::TokenizerManifest& manifest = request.manifest();
  if (auto status = CheckManifest(manifest, info, /*dimension_optional=*/false); !status.ok()) {
    return status;
  }
  const int levels = manifest.codebook_sizes_size();
  if (levels < 1 || levels > 16) {
    return absl::InvalidArgumentError(
        absl::StrFormat("manifest.codebook_sizes has %d levels; 1..16 are allowed", levels));
  }
  const int64_t d = info.dimension;
  int64_t total = 0;
  for (int l = 0; l < levels; ++l) {
    const int64_t k = manifest.codebook_sizes(l);
    if (k < 1 || k > kMaxCodebookSize) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "manifest.codebook_sizes[%d] = %d is outside 1..%d", l, k, kMaxCodebookSize));
    }
    total += k * d;
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
  std::vector<int64_t> ks(manifest.codebook_sizes().begin(), manifest.codebook_sizes().end());
  auto plan = ImportTrainPlan(request, ks, /*rqvae=*/false, info, items);
  if (!plan.ok()) return plan.status();
  std::vector<std::vector<float>> codebooks;
  const float* next = request.codebooks().data();
  for (int64_t k : ks) {
    codebooks.emplace_back(next, next + k * d);
    next += k * d;
  }
  auto quantizer = ResidualQuantizer::FromCodebooks(d, ks, std::move(codebooks));
  if (!quantizer.ok()) return quantizer.status();
  return ImportPlan{std::move(*plan), TokenizerModel{std::move(*quantizer), nullptr}, std::nullopt};
}

// The codebook sizes of an RQ-VAE model message: the manifest's, or the rows of its
// rq.vq_layers.{l}.embedding.weight tensors (l = 0, 1, ... while they exist).
std::vector<int64_t> RqVaeCodebookSizes(const v1::ImportTokenizerRequest& request) {
  const auto& listed = request.manifest().codebook_sizes();
  if (!listed.empty()) return std::vector<int64_t>(listed.begin(), listed.end());
  std::vector<int64_t> sizes;
  for (int l = 0; l <= kMaxSidLevels; ++l) {
    const std::string name = absl::StrFormat("rq.vq_layers.%d.embedding.weight", l);
    const auto tensor =
        std::find_if(request.rqvae().tensors().begin(), request.rqvae().tensors().end(),
                     [&](const v1::Tensor& t) { return t.name() == name; });
    if (tensor == request.rqvae().tensors().end() || tensor->shape_size() != 2) break;
    sizes.push_back(tensor->shape(0));
  }
  return sizes;
}

absl::StatusOr<ImportPlan> RqVaeImportPlan(const v1::ImportTokenizerRequest& request,
                                           const CollectionInfo& info, int64_t items) {
  const v1::TokenizerManifest& manifest = request.manifest();
  if (auto status = CheckManifest(manifest, info, /*dimension_optional=*/true); !status.ok()) {
    return status;
  }
  v1::RqVaeStats stats;
  absl::StatusOr<RqVae> model = absl::InternalError("no model");
  if (request.has_rqvae()) {
    const std::vector<int64_t> sizes = RqVaeCodebookSizes(request);
    if (sizes.empty() || sizes.size() > kMaxSidLevels) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "rqvae: %d codebooks (manifest.codebook_sizes or rq.vq_layers.{l}.embedding.weight "
          "tensors); 1..%d are allowed",
          sizes.size(), kMaxSidLevels));
    }
    model = RqVaeModelFromProto(request.rqvae(), sizes, info.dimension, "rqvae");
    stats.set_source("model");
  } else {
    model = RqVaeFromTorchImport(request, info.dimension, &stats);
  }
  if (!model.ok()) return model.status();
  std::vector<int64_t> sizes;
  for (int64_t l = 0; l < model->levels(); ++l) sizes.push_back(model->codebook_size(l));
  if (!manifest.codebook_sizes().empty() &&
      !std::equal(sizes.begin(), sizes.end(), manifest.codebook_sizes().begin(),
                  manifest.codebook_sizes().end())) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "manifest.codebook_sizes [%s] differ from the model's [%s]",
        absl::StrJoin(manifest.codebook_sizes(), ", "), absl::StrJoin(sizes, ", ")));
  }
  for (int64_t k : sizes) {
    if (k > kMaxCodebookSize) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "the model's codebook of %d codes is over the %d a level may have", k, kMaxCodebookSize));
    }
  }
  auto plan = ImportTrainPlan(request, sizes, /*rqvae=*/true, info, items);
  if (!plan.ok()) return plan.status();
  const v1::IndexGeneration generation = manifest.parameters().rqvae().index_generation();
  if (!v1::IndexGeneration_IsValid(generation)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "manifest.parameters.rqvae.index_generation %d is not an IndexGeneration value",
        static_cast<int>(generation)));
  }
  plan->index_generation = generation == v1::INDEX_GENERATION_UNSPECIFIED
                               ? v1::INDEX_GENERATION_EXACT_FREE_CODES
                               : generation;
  *stats.mutable_options() = RqVaeOptionsToProto(model->options());
  stats.set_index_generation(plan->index_generation);
  stats.set_parameters(
      static_cast<uint64_t>(RqVaeParameterCount(model->options(), info.dimension)));
  auto tokenizer_model = TokenizerModel::OfRqVae(*std::move(model));
  if (!tokenizer_model.ok()) return tokenizer_model.status();
  return ImportPlan{std::move(*plan), std::move(*tokenizer_model), std::move(stats)};
}

absl::StatusOr<ImportPlan> ImportPlanFor(const v1::ImportTokenizerRequest& request,
                                         const CollectionInfo& info, int64_t items) {
  const int sources = (request.codebooks_size() > 0 ? 1 : 0) + (request.has_rqvae() ? 1 : 0) +
                      (request.torch_checkpoint().empty() ? 0 : 1);
  if (sources != 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "give exactly one of codebooks (RQ-KMeans), rqvae or torch_checkpoint (RQ-VAE); %d given",
        sources));
  }
  if (request.codebooks_size() > 0) return CodebooksImportPlan(request, info, items);
  return RqVaeImportPlan(request, info, items);
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
  TokenizerModel& model = import->model;
  const TokenizerTrainPlan& plan = import->plan;
  const int64_t levels = model.quantizer.levels();

  context.SetPhase("encoding", 0.05);
  const bool normalize = items.info.metric == Metric::kCosine;
  std::vector<float> all =
      normalize ? NormalizedRows(items.vectors.data(), n, d) : std::vector<float>();
  const float* x = normalize ? all.data() : items.vectors.data();
  std::vector<int32_t> codes(static_cast<size_t>(n * levels));
  storage::TokenizerRecord record;
  if (model.rqvae == nullptr) {
    model.quantizer.Encode(x, n, codes.data());
  } else if (n > 0) {
    context.SetPhase("generating indices", 0.05);
    auto generated = GenerateCodes(*model.rqvae, x, n, plan.index_generation);
    if (!generated.ok()) return generated.status();
    codes = std::move(generated->codes);
    v1::RqVaeStats& stats = *import->rqvae_stats;
    stats.set_collisions_before(static_cast<uint64_t>(generated->collisions_before));
    stats.set_collisions_after(static_cast<uint64_t>(generated->collisions_after));
    stats.set_moved(static_cast<uint64_t>(generated->moved));
    stats.set_rounds(static_cast<uint32_t>(generated->rounds));
    AddRqVaeLevels(model, x, n, codes, &record);
  }
  if (context.cancelled()) return absl::CancelledError("cancelled");

  record.set_dimension(static_cast<uint32_t>(d));
  for (int64_t k : model.quantizer.codebook_sizes()) {
    record.add_codebook_sizes(static_cast<uint32_t>(k));
  }
  record.set_normalize(normalize);
  record.set_seed(request_.manifest().parameters().seed());
  record.set_trained_items(static_cast<uint64_t>(std::max<int64_t>(n, 1)));
  record.set_create_time_ms(NowMs());
  record.set_job_id(context.job_id());
  record.set_source("imported");
  record.set_assignment(plan.assignment);
  if (model.rqvae != nullptr) {
    record.set_method(v1::TOKENIZER_METHOD_RQ_VAE);
    record.set_rqvae_stats(import->rqvae_stats->SerializeAsString());
    return FinishTokenizerVersion(context, *pending, std::move(record), std::move(model), items, x,
                                  std::move(codes), plan, request_.activation(), start);
  }
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
  if (plan.balance_slack) record.set_balance_slack(*plan.balance_slack);
  return FinishTokenizerVersion(context, *pending, std::move(record), std::move(model), items, x,
                                std::move(codes), plan, request_.activation(), start);
}

}  // namespace quantd
