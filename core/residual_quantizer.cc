#include "core/residual_quantizer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_format.h"
#include "core/balanced_kmeans.h"
#include "core/blob_codec.h"
#include "core/semantic_id.h"
#include "core/vectors.h"

namespace quantd {
namespace {

// Rows encoded per block, so Encode's residual buffer stays small.
constexpr int64_t kEncodeBlockRows = 4096;

// Serialize(): magic and format version.
constexpr char kMagic[8] = {'Q', 'D', 'R', 'E', 'S', 'Q', '\0', '\0'};
constexpr uint32_t kVersion = 1;

}  // namespace

absl::StatusOr<ResidualQuantizer> ResidualQuantizer::FromCodebooks(
    int64_t d, std::vector<int64_t> ks, std::vector<std::vector<float>> codebooks) {
  if (d < 1) return absl::InvalidArgumentError(absl::StrFormat("dimension %d < 1", d));
  if (ks.empty() || ks.size() != codebooks.size() || static_cast<int>(ks.size()) > kMaxSidLevels) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%d codebook sizes for %d codebooks (1..%d levels)", ks.size(),
                        codebooks.size(), kMaxSidLevels));
  }
  for (size_t l = 0; l < ks.size(); ++l) {
    if (ks[l] < 1 || static_cast<int64_t>(codebooks[l].size()) != ks[l] * d) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "codebook %d has %d values, expected k %d x d %d", l, codebooks[l].size(), ks[l], d));
    }
  }
  ResidualQuantizer rq;
  rq.d_ = d;
  rq.ks_ = std::move(ks);
  rq.codebooks_ = std::move(codebooks);
  for (size_t l = 0; l < rq.ks_.size(); ++l) {
    const std::vector<float>& codebook = rq.codebooks_[l];
    rq.packed_.emplace_back(codebook.data(), rq.ks_[l], d);
    // The same norms AssignNearest computes, so encoding reproduces training assignments.
    rq.norms_.push_back(SquaredNorms(codebook.data(), rq.ks_[l], d));
  }
  return rq;
}

void ResidualQuantizer::Encode(const float* x, int64_t n, int32_t* codes, int num_threads) const {
  const int64_t levels = this->levels();
  std::vector<float> residual;
  std::vector<int32_t> labels;
  for (int64_t start = 0; start < n; start += kEncodeBlockRows) {
    const int64_t rows = std::min(kEncodeBlockRows, n - start);
    residual.assign(x + start * d_, x + (start + rows) * d_);
    labels.resize(static_cast<size_t>(rows));
    for (int64_t l = 0; l < levels; ++l) {
      AssignNearestPacked(residual.data(), rows, packed_[l], norms_[l].data(), labels.data(),
                          nullptr, num_threads);
      for (int64_t i = 0; i < rows; ++i) {
        codes[(start + i) * levels + l] = labels[i];
        const float* codeword = codebooks_[l].data() + static_cast<int64_t>(labels[i]) * d_;
        float* r = residual.data() + i * d_;
        for (int64_t j = 0; j < d_; ++j) r[j] -= codeword[j];
      }
    }
  }
}

void ResidualQuantizer::Decode(const int32_t* codes, int64_t n, float* out) const {
  const int64_t levels = this->levels();
  std::fill(out, out + n * d_, 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    float* row = out + i * d_;
    for (int64_t l = 0; l < levels; ++l) {
      const float* codeword =
          codebooks_[l].data() + static_cast<int64_t>(codes[i * levels + l]) * d_;
      for (int64_t j = 0; j < d_; ++j) row[j] += codeword[j];
    }
  }
}

std::vector<double> ResidualQuantizer::LevelMse(const float* x, int64_t n,
                                                const int32_t* codes) const {
  const int64_t levels = this->levels();
  std::vector<double> squared(static_cast<size_t>(levels), 0.0);
  std::vector<float> residual(static_cast<size_t>(d_));
  for (int64_t i = 0; i < n; ++i) {
    std::copy_n(x + i * d_, d_, residual.data());
    for (int64_t l = 0; l < levels; ++l) {
      const float* codeword =
          codebooks_[l].data() + static_cast<int64_t>(codes[i * levels + l]) * d_;
      double sum = 0;
      for (int64_t j = 0; j < d_; ++j) {
        residual[j] -= codeword[j];
        sum += static_cast<double>(residual[j]) * residual[j];
      }
      squared[l] += sum;
    }
  }
  for (double& value : squared) value = n > 0 ? value / static_cast<double>(n * d_) : 0;
  return squared;
}

std::string ResidualQuantizer::Serialize() const {
  BlobWriter w;
  w.PutArray(kMagic, sizeof(kMagic));
  w.Put(kVersion);
  w.Put(d_);
  w.Put(levels());
  w.PutArray(ks_.data(), ks_.size());
  for (const std::vector<float>& codebook : codebooks_)
    w.PutArray(codebook.data(), codebook.size());
  return w.Take();
}

absl::StatusOr<ResidualQuantizer> ResidualQuantizer::Deserialize(absl::string_view blob) {
  BlobReader r(blob, "residual quantizer");
  char magic[sizeof(kMagic)];
  if (absl::Status s = r.GetArray(magic, sizeof(magic), "magic"); !s.ok()) return s;
  if (std::memcmp(magic, kMagic, sizeof(kMagic)) != 0) {
    return absl::InvalidArgumentError("not a residual quantizer blob (bad magic)");
  }
  uint32_t version = 0;
  int64_t d = 0, levels = 0;
  absl::Status s = r.Get(&version, "version");
  if (s.ok() && version != kVersion) {
    return absl::InvalidArgumentError(
        absl::StrFormat("residual quantizer blob version %d, expected %d", version, kVersion));
  }
  if (s.ok()) s = r.Get(&d, "d");
  if (s.ok()) s = r.Get(&levels, "L");
  if (!s.ok()) return s;
  if (d < 1 || d > kMaxDimension) {
    return absl::InvalidArgumentError(absl::StrFormat("d %d is outside [1, %d]", d, kMaxDimension));
  }
  if (levels < 1 || levels > kMaxSidLevels) {
    return absl::InvalidArgumentError(
        absl::StrFormat("L %d is outside [1, %d]", levels, kMaxSidLevels));
  }
  std::vector<int64_t> ks(static_cast<size_t>(levels));
  if (s = r.GetArray(ks.data(), ks.size(), "codebook sizes"); !s.ok()) return s;
  std::vector<std::vector<float>> codebooks;
  codebooks.reserve(ks.size());
  for (int64_t l = 0; l < levels; ++l) {
    const int64_t k = ks[l];
    if (k < 1 || k > std::numeric_limits<int32_t>::max()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("codebook %d size k %d is outside [1, 2^31)", l, k));
    }
    // k x d floats must fit in what is left, checked before allocating them.
    if (static_cast<uint64_t>(k) > r.remaining() / sizeof(float) / static_cast<uint64_t>(d)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "residual quantizer blob truncated: codebook %d (k %d x d %d) needs more than the %d "
          "bytes left",
          l, k, d, r.remaining()));
    }
    std::vector<float> codebook(static_cast<size_t>(k * d));
    if (s = r.GetArray(codebook.data(), codebook.size(), "codebook"); !s.ok()) return s;
    for (size_t i = 0; i < codebook.size(); ++i) {
      if (!std::isfinite(codebook[i])) {
        return absl::InvalidArgumentError(
            absl::StrFormat("codebook %d [row %d, component %d] = %f: values must be finite", l,
                            static_cast<int64_t>(i) / d, static_cast<int64_t>(i) % d, codebook[i]));
      }
    }
    codebooks.push_back(std::move(codebook));
  }
  if (r.remaining() != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("residual quantizer blob has %d trailing bytes", r.remaining()));
  }
  return FromCodebooks(d, std::move(ks), std::move(codebooks));
}

absl::StatusOr<RqTrainResult> TrainResidualQuantizer(const float* x, int64_t n, int64_t d,
                                                     const RqOptions& options) {
  const int64_t levels = static_cast<int64_t>(options.levels.size());
  if (levels < 1 || levels > kMaxSidLevels) {
    return absl::InvalidArgumentError(
        absl::StrFormat("levels %d is outside 1..%d", levels, kMaxSidLevels));
  }
  // Checked once before any level trains (every level runs with them).
  if (auto status = ValidateKMeansOptions(options.kmeans); !status.ok()) {
    return absl::Status(status.code(), absl::StrFormat("kmeans.%s", status.message()));
  }
  std::vector<SizeBounds> bounds(static_cast<size_t>(levels));
  for (int64_t l = 0; l < levels; ++l) {
    const RqLevelOptions& level = options.levels[l];
    if (auto status = ValidateKMeansInput(x, n, d, level.k); !status.ok()) {
      return absl::Status(status.code(), absl::StrFormat("level %d: %s", l, status.message()));
    }
    if (!level.balanced) continue;
    bounds[l] = level.bounds.size_max > 0 ? level.bounds
                                          : BoundsFromSlack(n, level.k, options.balance_slack);
    if (auto status = CheckBoundsFeasible(n, level.k, bounds[l]); !status.ok()) {
      return absl::Status(status.code(), absl::StrFormat("level %d: %s", l, status.message()));
    }
  }

  RqTrainResult result;
  result.codes.resize(static_cast<size_t>(n * levels));
  std::vector<float> residual(x, x + n * d);
  std::vector<int64_t> ks;
  std::vector<std::vector<float>> codebooks;
  for (int64_t l = 0; l < levels; ++l) {
    const RqLevelOptions& level = options.levels[l];
    KMeansOptions kmeans = options.kmeans;
    kmeans.k = level.k;
    kmeans.seed = options.kmeans.seed + static_cast<uint64_t>(l);
    kmeans.initial_centroids = level.initial_centroids;
    kmeans.on_iteration = nullptr;
    if (options.on_progress) {
      kmeans.on_iteration = [&options, l](int iteration, double objective) {
        return options.on_progress(static_cast<int>(l), iteration, objective);
      };
    }
    auto trained = level.balanced ? TrainBalancedKMeans(residual.data(), n, d, bounds[l], kmeans)
                                  : TrainKMeans(residual.data(), n, d, kmeans);
    if (!trained.ok()) return trained.status();
    RqLevelReport report;
    report.k = level.k;
    report.balanced = level.balanced;
    report.bounds = bounds[l];
    report.iterations = trained->iterations;
    report.total_iterations = trained->total_iterations;
    report.restart = trained->restart;
    report.objective = trained->objective;
    double squared = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int32_t code = trained->assignments[i];
      result.codes[i * levels + l] = code;
      const float* codeword = trained->centroids.data() + static_cast<int64_t>(code) * d;
      float* r = residual.data() + i * d;
      for (int64_t j = 0; j < d; ++j) {
        r[j] -= codeword[j];
        squared += static_cast<double>(r[j]) * r[j];
      }
    }
    report.mse_after = squared / static_cast<double>(n * d);
    result.levels.push_back(report);
    ks.push_back(level.k);
    codebooks.push_back(std::move(trained->centroids));
  }
  auto quantizer = ResidualQuantizer::FromCodebooks(d, std::move(ks), std::move(codebooks));
  if (!quantizer.ok()) return quantizer.status();
  result.quantizer = std::move(*quantizer);
  return result;
}

}  // namespace quantd
