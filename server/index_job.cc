#include "server/index_job.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/fastscan.h"
#include "core/kmeans.h"
#include "server/clock.h"
#include "server/index.h"

namespace quantd {
namespace {

constexpr uint32_t kDefaultCoarseIterations = 10;
constexpr uint32_t kDefaultPqIterations = 25;
constexpr uint32_t kMaxIterations = 1000;
// FAISS warns below 39 training points per coarse centroid.
constexpr int64_t kMinPointsPerList = 39;
constexpr int64_t kMaxDefaultM = 64;

// The largest divisor of d that is at most cap (cap >= 1).
int64_t LargestDivisorAtMost(int64_t d, int64_t cap) {
  for (int64_t m = std::min(cap, d); m > 1; --m) {
    if (d % m == 0) return m;
  }
  return 1;
}

}  // namespace

int64_t IndexTrainingRows(const v1::TrainIndexRequest& request, int64_t items) {
  return request.sample_size() > 0 && request.sample_size() < static_cast<uint64_t>(items)
             ? static_cast<int64_t>(request.sample_size())
             : items;
}

absl::StatusOr<IndexPlan> IndexPlanFromRequest(const v1::TrainIndexRequest& request, int64_t items,
                                               int64_t d, Metric metric) {
  const int64_t n = IndexTrainingRows(request, items);
  if (n < 1) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "collection '%s' holds no items: upsert some before TrainIndex", request.collection()));
  }
  IndexPlan plan;
  IvfPqOptions& options = plan.options;
  options.metric = metric;
  options.num_threads = 0;
  options.seed = request.seed();
  std::vector<std::string> why;  // the defaults chosen, each with its reason

  if (!v1::IndexLayout_IsValid(request.layout())) {
    return absl::InvalidArgumentError(
        absl::StrFormat("layout %d is not an IndexLayout", static_cast<int>(request.layout())));
  }
  if (request.layout() == v1::INDEX_LAYOUT_UNSPECIFIED) {
    // Fast-scan takes 4-bit codes and at most 256 sub-quantizers: an explicit nbits 8 or a
    // larger m keeps the plain layout.
    const bool fits = (request.nbits() == 0 || request.nbits() == 4) && request.m() <= 256;
    options.fast_scan = items >= kFastScanMinItems && fits;
    why.push_back(absl::StrFormat(
        "%s layout: %d items %s %d%s", options.fast_scan ? "fast-scan" : "plain", items,
        items >= kFastScanMinItems ? ">=" : "<", kFastScanMinItems,
        items >= kFastScanMinItems && !fits ? ", but nbits 8 or m > 256 was asked" : ""));
  } else {
    options.fast_scan = request.layout() == v1::INDEX_LAYOUT_FAST_SCAN;
  }

  if (request.nlist() == 0) {
    const auto rule = static_cast<int64_t>(std::llround(4.0 * std::sqrt(static_cast<double>(n))));
    options.nlist = std::clamp<int64_t>(rule, 1, std::max<int64_t>(1, n / kMinPointsPerList));
    why.push_back(
        absl::StrFormat("nlist %d: round(4 sqrt(%d)) in [1, %d / 39]", options.nlist, n, n));
  } else {
    options.nlist = request.nlist();
    if (options.nlist > n) {
      return absl::InvalidArgumentError(
          absl::StrFormat("nlist %d exceeds the %d training items", request.nlist(), n));
    }
  }

  if (request.m() == 0) {
    // Plain: 4 dimensions a sub-code (at most 64 sub-codes). Fast-scan: twice as many 4-bit
    // sub-codes, the same bytes, when that divides d.
    const int64_t plain_cap = std::min<int64_t>(kMaxDefaultM, std::max<int64_t>(1, d / 4));
    const int64_t plain_m = LargestDivisorAtMost(d, plain_cap);
    options.m = options.fast_scan
                    ? LargestDivisorAtMost(d, std::min<int64_t>(fastscan::kMaxM, 2 * plain_m))
                    : plain_m;
    why.push_back(absl::StrFormat("m %d: %.3g dimensions a sub-code", options.m,
                                  static_cast<double>(d) / static_cast<double>(options.m)));
  } else {
    options.m = request.m();
    if (d % options.m != 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("m %d does not divide dimension %d", request.m(), d));
    }
  }

  if (request.nbits() == 0) {
    options.nbits = options.fast_scan || n < 256 ? 4 : 8;
  } else if (request.nbits() == 4 || request.nbits() == 8) {
    options.nbits = static_cast<int>(request.nbits());
  } else {
    return absl::InvalidArgumentError(absl::StrFormat("nbits %d is not 4 or 8", request.nbits()));
  }
  if (options.fast_scan && (options.nbits != 4 || options.m > fastscan::kMaxM)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("layout INDEX_LAYOUT_FAST_SCAN needs nbits 4 (got %d) and m <= %d (got %d)",
                        options.nbits, fastscan::kMaxM, options.m));
  }
  if (n < (int64_t{1} << options.nbits)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("nbits %d needs at least %d training items, the collection gives %d",
                        options.nbits, int64_t{1} << options.nbits, n));
  }

  if (!v1::RefineCodes_IsValid(request.refine_codes())) {
    return absl::InvalidArgumentError(absl::StrFormat("refine_codes %d is not a RefineCodes",
                                                      static_cast<int>(request.refine_codes())));
  }
  if (request.refine_codes() == v1::REFINE_CODES_UNSPECIFIED) {
    options.refine_codes = options.fast_scan ? RefineCodes::kSq8 : RefineCodes::kNone;
    why.push_back(options.fast_scan
                      ? "SQ8 refine codes: fast-scan ranks coarsely, refine re-ranks from memory"
                      : "no refine codes: the plain layout's refine reads the stored vectors");
  } else {
    options.refine_codes =
        request.refine_codes() == v1::REFINE_CODES_SQ8 ? RefineCodes::kSq8 : RefineCodes::kNone;
  }

  const uint32_t coarse =
      request.coarse_iterations() == 0 ? kDefaultCoarseIterations : request.coarse_iterations();
  if (coarse > kMaxIterations) {
    return absl::InvalidArgumentError(absl::StrFormat("coarse_iterations %d exceeds %d",
                                                      request.coarse_iterations(), kMaxIterations));
  }
  const uint32_t pq = request.pq_iterations() == 0 ? kDefaultPqIterations : request.pq_iterations();
  if (pq > kMaxIterations) {
    return absl::InvalidArgumentError(
        absl::StrFormat("pq_iterations %d exceeds %d", request.pq_iterations(), kMaxIterations));
  }
  options.coarse_iterations = static_cast<int>(coarse);
  options.pq_iterations = static_cast<int>(pq);
  const int64_t code_bytes =
      options.fast_scan ? fastscan::PaddedM(options.m) / 2 : (options.m * options.nbits + 7) / 8;
  const int64_t refine_bytes = options.refine_codes == RefineCodes::kSq8 ? d : 0;
  plan.decision = absl::StrFormat(
      "%s, m %d x %d bit, %d B a vector in the lists (%d B code + 8 B id%s)",
      options.fast_scan ? "fast-scan" : "plain", options.m, options.nbits,
      code_bytes + 8 + refine_bytes, code_bytes,
      refine_bytes > 0 ? absl::StrFormat(" + %d B SQ8 refine code", refine_bytes) : "");
  if (!why.empty()) plan.decision += "; defaults: " + absl::StrJoin(why, "; ");
  return plan;
}

const JobKind& IndexJob::Kind() {
  static const JobKind* kind =
      new JobKind{"train_index", "index",
                  [](const Storage& storage, const storage::JobRecord& record) -> uint32_t {
                    auto index = storage.indexes().GetIndex(record.collection());
                    if (!index.ok() || (*index)->record.job_id() != record.id()) return 0;
                    return (*index)->record.version();
                  }};
  return *kind;
}

absl::Status IndexJob::Validate(const CollectionInfo& info) const {
  return IndexPlanFromRequest(request_, static_cast<int64_t>(info.item_count), info.dimension,
                              info.metric)
      .status();
}

absl::StatusOr<JobResult> IndexJob::Run(const JobContext& context) {
  const auto start = std::chrono::steady_clock::now();
  auto items = context.LoadItems();
  if (!items.ok()) return items.status();
  const int64_t n = static_cast<int64_t>(items->ids.size());
  const int64_t d = items->info.dimension;
  // Items may have been deleted since the request was checked: check again on what is loaded.
  auto plan = IndexPlanFromRequest(request_, n, d, items->info.metric);
  if (!plan.ok()) return plan.status();
  IvfPqOptions* options = &plan->options;
  if (context.cancelled()) return absl::CancelledError("cancelled");

  // Training rows: all items or a seeded sample (the index normalises cosine rows itself).
  const int64_t rows = IndexTrainingRows(request_, n);
  std::vector<float> sample;
  const float* train = items->vectors.data();
  if (rows < n) {
    const std::vector<int64_t> picked =
        SampleRows(n, rows, request_.seed() ^ 0x2545f4914f6cdd1dull);
    sample.resize(static_cast<size_t>(rows * d));
    for (int64_t i = 0; i < rows; ++i) {
      std::copy_n(items->vectors.data() + picked[i] * d, d, sample.data() + i * d);
    }
    train = sample.data();
  }
  // Training reports its progress (coarse k-means iterations, then PQ sub-quantizers) and stops
  // within one of those steps of a cancel.
  context.SetPhase("training", 0.05);
  options->on_progress = [&context](double done) {
    context.SetPhase("training", 0.05 + 0.55 * done);
    return !context.cancelled();
  };
  auto trained = IvfPqIndex::Train(train, rows, d, *options);
  if (!trained.ok()) return trained.status();
  sample = std::vector<float>();
  if (context.cancelled()) return absl::CancelledError("cancelled");

  // Every item's (list, code): lists is n, codes n x code_size; batched, in blocks so that
  // cancellation and progress are checked as it goes.
  context.SetPhase("encoding", 0.6);
  const int64_t code_size = trained->code_size();
  const int64_t refine_size = trained->refine_code_size();
  std::vector<int32_t> lists(static_cast<size_t>(n));
  std::vector<uint8_t> codes(static_cast<size_t>(n * code_size));
  std::vector<uint8_t> refine_codes(static_cast<size_t>(n * refine_size));
  constexpr int64_t kEncodeBlock = 16384;
  for (int64_t first = 0; first < n; first += kEncodeBlock) {
    if (context.cancelled()) return absl::CancelledError("cancelled");
    context.SetPhase("encoding", 0.6 + 0.35 * static_cast<double>(first) / static_cast<double>(n));
    const int64_t block = std::min(kEncodeBlock, n - first);
    if (auto status = trained->EncodeBatch(
            absl::MakeConstSpan(items->vectors.data() + first * d, static_cast<size_t>(block * d)),
            lists.data() + first, codes.data() + first * code_size,
            refine_codes.data() + first * refine_size);
        !status.ok()) {
      return status;
    }
  }
  if (context.cancelled()) return absl::CancelledError("cancelled");

  storage::IndexRecord record;
  record.set_nlist(static_cast<uint64_t>(options->nlist));
  record.set_m(static_cast<uint32_t>(options->m));
  record.set_nbits(static_cast<uint32_t>(options->nbits));
  record.set_seed(request_.seed());
  record.set_trained_items(static_cast<uint64_t>(rows));
  record.set_coarse_iterations(static_cast<uint32_t>(options->coarse_iterations));
  record.set_pq_iterations(static_cast<uint32_t>(options->pq_iterations));
  record.set_create_time_ms(NowMs());
  record.set_job_id(context.job_id());
  record.set_train_seconds(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  context.SetPhase("committing", 0.95);
  auto version = context.storage()->indexes().CommitIndex(request_.collection(), std::move(record),
                                                          std::move(*trained), *items, lists, codes,
                                                          refine_codes);
  if (!version.ok()) return version.status();
  return JobResult{*version, /*activated=*/true, plan->decision};
}

}  // namespace quantd
