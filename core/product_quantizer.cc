#include "core/product_quantizer.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <utility>

#include "absl/strings/str_format.h"
#include "core/parallel.h"
#include "core/vectors.h"

namespace quantd {
namespace {

// Rows encoded per block: bounds the sub-vector and label buffers (block x dsub, block).
constexpr int64_t kEncodeBlockRows = 8192;

// Copies columns [col, col + width) of the n rows of x (row stride d) into out (n x width).
void CopyColumns(const float* x, int64_t n, int64_t d, int64_t col, int64_t width, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(out + i * width, x + i * d + col, sizeof(float) * width);
  }
}

}  // namespace

absl::Status ProductQuantizer::ValidateShape(int64_t d, int64_t m, int nbits) {
  if (d < 1) return absl::InvalidArgumentError(absl::StrFormat("d %d must be at least 1", d));
  if (m < 1) return absl::InvalidArgumentError(absl::StrFormat("M %d must be at least 1", m));
  if (d % m != 0) {
    return absl::InvalidArgumentError(absl::StrFormat("d %d is not divisible by M %d", d, m));
  }
  if (nbits != 4 && nbits != 8) {
    return absl::InvalidArgumentError(absl::StrFormat("nbits %d: must be 4 or 8", nbits));
  }
  return absl::OkStatus();
}

void ProductQuantizer::Init() {
  dsub_ = d_ / m_;
  ksub_ = int64_t{1} << nbits_;
  code_size_ = (m_ * nbits_ + 7) / 8;
  packed_.clear();
  packed_.reserve(static_cast<size_t>(m_));
  centroid_norms_.resize(static_cast<size_t>(m_ * ksub_));
  for (int64_t m = 0; m < m_; ++m) {
    packed_.emplace_back(centroid(m, 0), ksub_, dsub_);
    const std::vector<float> norms = SquaredNorms(centroid(m, 0), ksub_, dsub_);
    std::copy(norms.begin(), norms.end(), centroid_norms_.begin() + m * ksub_);
  }
}

absl::StatusOr<ProductQuantizer> ProductQuantizer::Train(const float* data, int64_t n, int64_t d,
                                                         const ProductQuantizerOptions& options) {
  if (auto status = ValidateShape(d, options.m, options.nbits); !status.ok()) return status;
  const int64_t ksub = int64_t{1} << options.nbits;
  if (n < ksub) {
    return absl::InvalidArgumentError(
        absl::StrFormat("n %d training rows < 2^nbits %d centroids per sub-quantizer", n, ksub));
  }
  if (options.num_threads < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("num_threads %d: must be at least 0", options.num_threads));
  }
  if (auto status = ValidateKMeansInput(data, n, d, 1); !status.ok()) return status;

  ProductQuantizer pq;
  pq.d_ = d;
  pq.m_ = options.m;
  pq.nbits_ = options.nbits;
  const int64_t dsub = d / options.m;
  pq.centroids_.resize(static_cast<size_t>(options.m * ksub * dsub));
  // Sub-spaces are trained in parallel, one k-means each (k-means on dsub columns is too small
  // to spread over threads well); each result is the same for any thread count.
  const int threads = ResolveThreads(options.num_threads);
  const int workers = static_cast<int>(std::min<int64_t>(threads, options.m));
  const int threads_per_kmeans = std::max(1, threads / workers);
  std::vector<absl::Status> statuses(static_cast<size_t>(options.m));
  std::mutex progress_mu;
  int64_t trained = 0;                 // guarded by progress_mu
  std::atomic<bool> cancelled{false};  // set once on_progress returns false
  ParallelFor(options.m, workers, [&](int64_t m) {
    if (cancelled) return;
    std::vector<float> slice(static_cast<size_t>(n * dsub));  // n x dsub, sub-space m
    CopyColumns(data, n, d, m * dsub, dsub, slice.data());
    KMeansOptions kmeans;
    kmeans.k = ksub;
    kmeans.max_iterations = options.max_iterations;
    kmeans.tolerance = options.tolerance;
    kmeans.init = options.init;
    kmeans.seed = options.seed + static_cast<uint64_t>(m);
    kmeans.max_points_per_centroid = options.max_points_per_centroid;
    kmeans.num_threads = threads_per_kmeans;
    auto result = TrainKMeans(slice.data(), n, dsub, kmeans);
    if (!result.ok()) {
      statuses[m] = result.status();
      return;
    }
    std::copy(result->centroids.begin(), result->centroids.end(),
              pq.centroids_.begin() + m * ksub * dsub);
    if (options.on_progress) {
      std::lock_guard lock(progress_mu);
      ++trained;
      if (!options.on_progress(static_cast<double>(trained) / static_cast<double>(options.m))) {
        cancelled = true;
      }
    }
  });
  if (cancelled) return absl::CancelledError("product quantizer training cancelled");
  for (const absl::Status& status : statuses) {
    if (!status.ok()) return status;
  }
  pq.Init();
  return pq;
}

absl::StatusOr<ProductQuantizer> ProductQuantizer::FromCentroids(int64_t d, int64_t m, int nbits,
                                                                 std::vector<float> centroids) {
  if (auto status = ValidateShape(d, m, nbits); !status.ok()) return status;
  const int64_t expected = (int64_t{1} << nbits) * d;  // M x ksub x dsub = ksub x d
  if (static_cast<int64_t>(centroids.size()) != expected) {
    return absl::InvalidArgumentError(
        absl::StrFormat("centroids size %d != M %d x 2^nbits %d x dsub %d", centroids.size(), m,
                        int64_t{1} << nbits, d / m));
  }
  if (auto status = ValidateKMeansInput(centroids.data(), expected / d, d, 1); !status.ok()) {
    return status;
  }
  ProductQuantizer pq;
  pq.d_ = d;
  pq.m_ = m;
  pq.nbits_ = nbits;
  pq.centroids_ = std::move(centroids);
  pq.Init();
  return pq;
}

absl::Status ProductQuantizer::Encode(absl::Span<const float> x, uint8_t* codes,
                                      int num_threads) const {
  if (d_ == 0) return absl::FailedPreconditionError("product quantizer is not trained");
  if (x.size() % static_cast<size_t>(d_) != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("vectors size %d is not a multiple of d %d", x.size(), d_));
  }
  const int64_t n = static_cast<int64_t>(x.size()) / d_;
  if (n == 0) return absl::OkStatus();
  if (auto status = CheckVectors(x.data(), n, d_, Metric::kL2); !status.ok()) return status;
  EncodeUnchecked(x.data(), n, codes, num_threads);
  return absl::OkStatus();
}

void ProductQuantizer::EncodeUnchecked(const float* x, int64_t n, uint8_t* codes,
                                       int num_threads) const {
  const int64_t block = std::min(n, kEncodeBlockRows);
  std::vector<float> sub(static_cast<size_t>(block * dsub_));  // block x dsub
  std::vector<int32_t> labels(static_cast<size_t>(block));
  for (int64_t row0 = 0; row0 < n; row0 += block) {
    const int64_t rows = std::min(block, n - row0);
    uint8_t* out = codes + row0 * code_size_;
    if (nbits_ == 4) std::memset(out, 0, static_cast<size_t>(rows * code_size_));
    for (int64_t m = 0; m < m_; ++m) {
      CopyColumns(x + row0 * d_, rows, d_, m * dsub_, dsub_, sub.data());
      AssignNearestPacked(sub.data(), rows, packed_[m], centroid_norms_.data() + m * ksub_,
                          labels.data(), nullptr, num_threads);
      if (nbits_ == 8) {
        for (int64_t i = 0; i < rows; ++i)
          out[i * code_size_ + m] = static_cast<uint8_t>(labels[i]);
      } else {
        const int shift = (m & 1) ? 4 : 0;
        for (int64_t i = 0; i < rows; ++i) {
          out[i * code_size_ + (m >> 1)] |= static_cast<uint8_t>(labels[i] << shift);
        }
      }
    }
  }
}

void ProductQuantizer::Decode(const uint8_t* codes, int64_t n, float* out) const {
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* code = codes + i * code_size_;
    for (int64_t m = 0; m < m_; ++m) {
      std::memcpy(out + i * d_ + m * dsub_, centroid(m, GetCode(code, m)), sizeof(float) * dsub_);
    }
  }
}

void ProductQuantizer::InnerProductTables(const float* x, int64_t nq, float* tables) const {
  if (nq <= 0) return;
  std::vector<float> sub(static_cast<size_t>(nq * dsub_));  // nq x dsub
  for (int64_t m = 0; m < m_; ++m) {
    CopyColumns(x, nq, d_, m * dsub_, dsub_, sub.data());
    // Rows of the output are tables of consecutive queries: stride M x ksub.
    packed_[m].Multiply(sub.data(), nq, tables + m * ksub_, m_ * ksub_);
  }
}

void ProductQuantizer::L2Tables(const float* x, int64_t nq, float* tables) const {
  InnerProductTables(x, nq, tables);
  for (int64_t q = 0; q < nq; ++q) {
    for (int64_t m = 0; m < m_; ++m) {
      const float* xm = x + q * d_ + m * dsub_;
      float x_norm = 0;
      for (int64_t j = 0; j < dsub_; ++j) x_norm += xm[j] * xm[j];
      float* t = tables + (q * m_ + m) * ksub_;
      const float* c_norm = centroid_norms_.data() + m * ksub_;
      for (int64_t j = 0; j < ksub_; ++j) t[j] = std::max(0.0f, x_norm - 2.0f * t[j] + c_norm[j]);
    }
  }
}

float ProductQuantizer::TableSum(const float* table, const uint8_t* code) const {
  float sum = 0;
  for (int64_t m = 0; m < m_; ++m) sum += table[m * ksub_ + GetCode(code, m)];
  return sum;
}

}  // namespace quantd
