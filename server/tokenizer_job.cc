#include "server/tokenizer_job.h"

#include <algorithm>
#include <chrono>
#include <vector>

#include "absl/strings/str_format.h"
#include "core/kmeans.h"
#include "core/vectors.h"
#include "server/clock.h"
#include "server/tokenizer.h"

namespace quantd {
namespace {

constexpr uint32_t kDefaultIterations = 25;
constexpr uint32_t kMaxIterations = 1000;
constexpr int64_t kMaxCodebookSize = 65536;
constexpr double kDefaultSlack = 0.1;

}  // namespace

absl::StatusOr<RqOptions> TrainOptionsFromRequest(const v1::TrainTokenizerRequest& request,
                                                  int64_t items) {
  RqOptions options;
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
  if (!request.balanced() && (request.size_bounds_size() > 0 || request.has_balance_slack())) {
    return absl::InvalidArgumentError("size_bounds and balance_slack need balanced = true");
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
  for (size_t l = 0; l < sizes.size(); ++l) {
    RqLevelOptions level;
    level.k = sizes[l];
    level.balanced = request.balanced();
    if (request.size_bounds_size() > 0) {
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
  options.kmeans.seed = request.seed();
  options.kmeans.num_threads = 0;
  return options;
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
  return TrainOptionsFromRequest(request_, static_cast<int64_t>(info.item_count)).status();
}

absl::StatusOr<uint32_t> TokenizerJob::Run(const JobContext& context) {
  const auto start = std::chrono::steady_clock::now();
  auto items = context.LoadItems();
  if (!items.ok()) return items.status();
  const int64_t n = static_cast<int64_t>(items->ids.size());
  const int64_t d = items->info.dimension;
  auto options = TrainOptionsFromRequest(request_, n);
  if (!options.ok()) return options.status();
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
  options->on_progress = [&](int level, int iteration, double) {
    context.SetPhase(
        absl::StrFormat("training level %d/%d", level + 1, levels),
        0.02 + 0.83 * (level + std::min(1.0, (iteration + 1.0) / max_iterations)) / levels);
    return !context.cancelled();
  };
  context.SetPhase(absl::StrFormat("training level 1/%d", levels), 0.02);
  auto trained = TrainResidualQuantizer(train.data(), m, d, *options);
  if (!trained.ok()) return trained.status();
  if (context.cancelled()) return absl::CancelledError("cancelled");

  // Codes of every item: the training labels for trained rows, nearest codes for the others.
  context.SetPhase("encoding", 0.86);
  std::vector<int32_t> codes(static_cast<size_t>(n * levels));
  if (m == n) {
    codes = trained->codes;
  } else {
    std::vector<float> all =
        normalize ? NormalizedRows(items->vectors.data(), n, d) : std::vector<float>();
    trained->quantizer.Encode(normalize ? all.data() : items->vectors.data(), n, codes.data());
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
  record.set_balanced(request_.balanced());
  record.set_seed(request_.seed());
  record.set_max_iterations(static_cast<uint32_t>(max_iterations));
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
  }
  record.set_train_seconds(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  context.SetPhase("committing", 0.95);
  return context.storage()->tokenizers().CommitTokenizer(
      request_.collection(), std::move(record), std::move(trained->quantizer), *items, codes);
}

}  // namespace quantd
