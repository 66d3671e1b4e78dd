#include "core/ivf_pq.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_format.h"
#include "core/blob_codec.h"
#include "core/fastscan.h"
#include "core/parallel.h"
#include "core/pq8_scan.h"
#include "core/top_k.h"

namespace quantd {
namespace {

// Queries searched together: one coarse product (block x nlist) and one inner-product table
// product (block x M x ksub) per block. Blocks are fixed by query index, so a query's arithmetic
// does not depend on how blocks are spread over threads.
constexpr int64_t kQueryBlock = 16;
// Queries one SearchBlock call scans together (a multiple of kQueryBlock): fast-scan groups the
// (query, list) pairs of this many queries by list, so a list is read once for every query of the
// batch that probes it (with nprobe 16 of 1024 lists, a block of 16 queries rarely shares a list,
// 512 queries share each list about 8 ways; measured on the 1M mixture, ns per code at batch
// 16 / 64 / 256 / 512 / 1024: 0.72 / 0.66 / 0.62 / 0.56 / 0.55). Capped so the batch's coarse
// rows (batch x nlist floats) stay within kMaxCoarseBytes. The plain layouts keep blocks of
// kQueryBlock: their float tables (M x 256 a query for 8 bits) would grow with the batch, and their
// scan is bound by table lookups, not by reading the codes.
constexpr int64_t kMaxScanBatch = 512;
constexpr int64_t kMaxCoarseBytes = int64_t{4} << 20;
int64_t ScanBatch(bool fast_scan, int64_t nlist) {
  if (!fast_scan) return kQueryBlock;
  const int64_t blocks = kMaxCoarseBytes / (kQueryBlock * nlist * int64_t{sizeof(float)});
  return std::clamp(blocks, int64_t{1}, kMaxScanBatch / kQueryBlock) * kQueryBlock;
}
// Rows assigned / encoded per block on Add (bounds the residual buffer: block x d floats).
constexpr int64_t kAddBlock = 8192;

// Share of the training progress given to the coarse k-means (the rest: the PQ sub-quantizers).
constexpr double kCoarseShare = 0.6;

constexpr char kMagic[8] = {'Q', 'D', 'I', 'V', 'F', 'P', 'Q', '\0'};
constexpr uint32_t kVersion = 1;          // plain layout
constexpr uint32_t kFastScanVersion = 2;  // adds the fast-scan flag
constexpr uint32_t kRefineVersion = 3;    // adds the refine kind and its quantizer

// out[j] = a[j] + b[j]: the fused per-list table (M x ksub floats, once per probed list, which
// on short lists costs as much as the scan). Cloned for AVX-512 / AVX2 and chosen at load time.
__attribute__((target_clones("avx512f", "avx2", "default"))) void AddTables(
    const float* __restrict a, const float* __restrict b, int64_t n, float* __restrict out) {
  for (int64_t j = 0; j < n; ++j) out[j] = a[j] + b[j];
}

// 4 bits: byte b of a code holds sub-codes 2b (low nibble) and 2b + 1 (high nibble); tables
// are M x 16. The bytes are read 8 at a time (16 sub-codes) and summed into four accumulators
// (the low and high nibbles of even and of odd bytes), which breaks the chain of dependent adds
// that bounded this loop.
void Scan4(const uint8_t* codes, const uint64_t* ids, int64_t n, int64_t m_count, int64_t code_size,
           const float* sim, float base, TopK& top) {
  const int64_t pairs = m_count / 2;
  const int64_t words = pairs / 8;
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* c = codes + i * code_size;
    float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (int64_t w = 0; w < words; ++w) {
      uint64_t bytes;
      std::memcpy(&bytes, c + 8 * w, sizeof(bytes));
      const float* t = sim + w * 256;  // 16 sub-quantizers of 16 entries a word
      for (int j = 0; j < 8; j += 2) {
        a0 += t[(2 * j) * 16 + ((bytes >> (8 * j)) & 15)];
        a1 += t[(2 * j + 1) * 16 + ((bytes >> (8 * j + 4)) & 15)];
        a2 += t[(2 * j + 2) * 16 + ((bytes >> (8 * j + 8)) & 15)];
        a3 += t[(2 * j + 3) * 16 + ((bytes >> (8 * j + 12)) & 15)];
      }
    }
    for (int64_t b = 8 * words; b < pairs; ++b) {
      a0 += sim[(2 * b) * 16 + (c[b] & 15)];
      a1 += sim[(2 * b + 1) * 16 + (c[b] >> 4)];
    }
    if (m_count & 1) a0 += sim[(m_count - 1) * 16 + (c[pairs] & 15)];
    const float distance = base + ((a0 + a1) + (a2 + a3));
    if (distance <= top.threshold()) top.Push(distance, ids[i]);
  }
}

// Exact internal distance between the query v and a stored vector y (d floats; cosine: both
// unit): squared L2 (l2) or minus the inner product. In double, and a NaN (inf - inf from huge
// components) ranks last, as the sorts of candidates need a strict weak order.
float ExactDistance(const float* v, const float* y, int64_t d, bool l2) {
  double distance = 0;
  if (l2) {
    for (int64_t j = 0; j < d; ++j) {
      const double diff = static_cast<double>(v[j]) - y[j];
      distance += diff * diff;
    }
  } else {
    for (int64_t j = 0; j < d; ++j) distance -= static_cast<double>(v[j]) * y[j];
  }
  const float rounded = static_cast<float>(distance);
  return std::isnan(rounded) ? std::numeric_limits<float>::infinity() : rounded;
}

// The first k of `best` (sorted by Before) into out, with the metric's own distance values.
void Report(Metric metric, const std::vector<Candidate>& best, int64_t k,
            std::vector<IvfPqNeighbor>& out) {
  const size_t count = std::min(best.size(), static_cast<size_t>(k));
  out.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    const Candidate& c = best[i];
    const float distance = metric == Metric::kL2       ? c.distance
                           : metric == Metric::kCosine ? 1.0f - 0.5f * c.distance
                                                       : -c.distance;
    out.push_back({c.id, distance});
  }
}

}  // namespace

absl::StatusOr<IvfPqIndex> IvfPqIndex::Train(const float* data, int64_t n, int64_t d,
                                             const IvfPqOptions& options) {
  if (auto status = ProductQuantizer::ValidateShape(d, options.m, options.nbits); !status.ok()) {
    return status;
  }
  if (d > kMaxDimension) {
    return absl::InvalidArgumentError(absl::StrFormat("d %d exceeds %d", d, kMaxDimension));
  }
  if (options.nlist < 1 || options.nlist > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("nlist %d must be in [1, 2^31)", options.nlist));
  }
  const int64_t ksub = int64_t{1} << options.nbits;
  if (n < options.nlist) {
    return absl::InvalidArgumentError(
        absl::StrFormat("n %d training rows < nlist %d", n, options.nlist));
  }
  if (n < ksub) {
    return absl::InvalidArgumentError(
        absl::StrFormat("n %d training rows < 2^nbits %d centroids per sub-quantizer", n, ksub));
  }
  if (options.pq_training_rows < ksub) {
    return absl::InvalidArgumentError(
        absl::StrFormat("pq_training_rows %d < 2^nbits %d", options.pq_training_rows, ksub));
  }
  if (options.fast_scan && (options.nbits != 4 || options.m > fastscan::kMaxM)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("fast_scan needs nbits 4 (got %d) and M <= %d (got %d)", options.nbits,
                        fastscan::kMaxM, options.m));
  }
  if (options.refine_codes != RefineCodes::kNone && options.refine_codes != RefineCodes::kSq8) {
    return absl::InvalidArgumentError(absl::StrFormat("refine_codes %d is not a refine code kind",
                                                      static_cast<int>(options.refine_codes)));
  }
  if (options.coarse_iterations < 0 || options.pq_iterations < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("iterations (coarse %d, pq %d) must be at least 0",
                        options.coarse_iterations, options.pq_iterations));
  }
  if (options.coarse_max_points_per_centroid < 0 || options.num_threads < 0 ||
      options.max_precomputed_table_bytes < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "coarse_max_points_per_centroid %d, num_threads %d, max_precomputed_table_bytes %d "
        "must be at least 0",
        options.coarse_max_points_per_centroid, options.num_threads,
        options.max_precomputed_table_bytes));
  }
  if (data == nullptr) return absl::InvalidArgumentError("data is null");
  if (auto status = CheckVectors(data, n, d, options.metric, "data"); !status.ok()) return status;

  IvfPqIndex index;
  index.metric_ = options.metric;
  index.d_ = d;
  index.nlist_ = options.nlist;
  index.num_threads_ = options.num_threads;
  index.fast_scan_ = options.fast_scan;
  index.refine_codes_ = options.refine_codes;
  const bool cosine = options.metric == Metric::kCosine;
  const int threads = ResolveThreads(options.num_threads);
  if (n < 39 * options.nlist) {
    index.training_warning_ = absl::StrFormat(
        "n %d training rows < 39 x nlist %d = %d: the coarse clustering may be poor (FAISS "
        "warns below 39 rows per centroid)",
        n, options.nlist, 39 * options.nlist);
  }

  // Copies of the sampled rows, normalised for cosine (rows: increasing row numbers).
  auto gather = [&](const std::vector<int64_t>& rows) {
    std::vector<float> out(rows.size() * static_cast<size_t>(d));
    for (size_t i = 0; i < rows.size(); ++i) {
      std::memcpy(out.data() + i * d, data + rows[i] * d, sizeof(float) * d);
    }
    if (cosine) NormalizeRows(out.data(), static_cast<int64_t>(rows.size()), d);
    return out;
  };

  // Coarse quantizer: k-means on at most nlist x coarse_max_points_per_centroid rows.
  {
    const int64_t per = options.coarse_max_points_per_centroid;
    const int64_t rows = per > 0 && per <= n / options.nlist ? options.nlist * per : n;
    const std::vector<float> sample = gather(SampleRows(n, rows, options.seed));
    KMeansOptions kmeans;
    kmeans.k = options.nlist;
    kmeans.max_iterations = options.coarse_iterations;
    kmeans.tolerance = 0;
    kmeans.init = options.init;
    kmeans.seed = options.seed;
    kmeans.max_points_per_centroid = 0;  // sampled above
    kmeans.spherical = cosine;
    kmeans.num_threads = threads;
    if (options.on_progress) {
      const double iterations = std::max(1, options.coarse_iterations);
      kmeans.on_iteration = [&options, iterations](int iteration, double) {
        return options.on_progress(kCoarseShare * (iteration + 1) / iterations);
      };
    }
    auto coarse = TrainKMeans(sample.data(), rows, d, kmeans);
    if (!coarse.ok()) return coarse.status();
    index.coarse_ = std::move(coarse->centroids);
  }
  index.coarse_packed_.emplace_back(index.coarse_.data(), index.nlist_, d);
  index.coarse_norms_ = SquaredNorms(index.coarse_.data(), index.nlist_, d);

  // PQ on the residuals of at most pq_training_rows rows to their lists.
  {
    const int64_t rows = std::min(n, options.pq_training_rows);
    std::vector<float> residuals = gather(SampleRows(n, rows, options.seed ^ 0x51ed270b27a3d1ULL));
    std::vector<int32_t> lists(static_cast<size_t>(rows));
    index.AssignLists(residuals.data(), rows, lists.data(), threads);
    for (int64_t i = 0; i < rows; ++i) {
      const float* c = index.coarse_.data() + static_cast<int64_t>(lists[i]) * d;
      float* r = residuals.data() + i * d;
      for (int64_t j = 0; j < d; ++j) r[j] -= c[j];
    }
    ProductQuantizerOptions pq_options;
    pq_options.m = options.m;
    pq_options.nbits = options.nbits;
    pq_options.max_iterations = options.pq_iterations;
    pq_options.init = options.init;
    pq_options.tolerance = 0;
    pq_options.seed = options.seed + 1;
    pq_options.num_threads = threads;
    if (options.on_progress) {
      pq_options.on_progress = [&options](double done) {
        return options.on_progress(kCoarseShare + (1 - kCoarseShare) * done);
      };
    }
    auto pq = ProductQuantizer::Train(residuals.data(), rows, d, pq_options);
    if (!pq.ok()) return pq.status();
    index.pq_ = std::move(*pq);
  }
  if (options.refine_codes == RefineCodes::kSq8) {
    // SQ8 ranges over every training row (normalised for cosine, one row at a time).
    std::vector<float> lo(data, data + d), hi(data, data + d), row(static_cast<size_t>(d));
    for (int64_t i = 0; i < n; ++i) {
      std::memcpy(row.data(), data + i * d, sizeof(float) * d);
      if (cosine) NormalizeRows(row.data(), 1, d);
      if (i == 0) lo = hi = row;
      for (int64_t j = 0; j < d; ++j) {
        lo[j] = std::min(lo[j], row[j]);
        hi[j] = std::max(hi[j], row[j]);
      }
    }
    std::vector<float> step(static_cast<size_t>(d));
    for (int64_t j = 0; j < d; ++j) step[j] = (hi[j] - lo[j]) / 255.0f;
    auto sq = ScalarQuantizer8::FromRanges(std::move(lo), std::move(step));
    if (!sq.ok()) return sq.status();
    index.sq_ = std::move(*sq);
  }
  index.Init(options.max_precomputed_table_bytes);
  return index;
}

void IvfPqIndex::Init(int64_t max_precomputed_table_bytes) {
  max_precomputed_table_bytes_ = max_precomputed_table_bytes;
  if (coarse_packed_.empty()) {
    coarse_packed_.emplace_back(coarse_.data(), nlist_, d_);
    coarse_norms_ = SquaredNorms(coarse_.data(), nlist_, d_);
  }
  lists_.resize(static_cast<size_t>(nlist_));
  precomputed_.clear();
  const int64_t table = pq_.m() * pq_.ksub();
  if (metric_ != Metric::kInnerProduct &&
      nlist_ <= max_precomputed_table_bytes / (table * static_cast<int64_t>(sizeof(float)))) {
    // <c_l,m, y_mj> for every list: the PQ's inner-product tables of the coarse centroids.
    precomputed_.resize(static_cast<size_t>(nlist_ * table));
    pq_.InnerProductTables(coarse_.data(), nlist_, precomputed_.data());
    std::vector<float> y_norms(static_cast<size_t>(table));  // M x ksub, ||y_mj||^2
    for (int64_t m = 0; m < pq_.m(); ++m) {
      for (int64_t j = 0; j < pq_.ksub(); ++j) {
        const float* y = pq_.centroid(m, j);
        float s = 0;
        for (int64_t t = 0; t < pq_.dsub(); ++t) s += y[t] * y[t];
        y_norms[m * pq_.ksub() + j] = s;
      }
    }
    for (int64_t l = 0; l < nlist_; ++l) {
      float* t = precomputed_.data() + l * table;
      for (int64_t j = 0; j < table; ++j) t[j] = y_norms[j] + 2.0f * t[j];
    }
  }
}

void IvfPqIndex::AssignLists(const float* x, int64_t n, int32_t* lists, int num_threads) const {
  if (n <= 0) return;
  if (metric_ != Metric::kInnerProduct) {  // cosine: unit rows and centroids, nearest = largest IP
    AssignNearestPacked(x, n, coarse_packed_[0], coarse_norms_.data(), lists, nullptr, num_threads);
    return;
  }
  // Largest inner product (first one on ties), in row blocks of a bounded tile.
  const int64_t block = std::max<int64_t>(1, std::min<int64_t>(1024, (int64_t{1} << 22) / nlist_));
  const int64_t num_blocks = (n + block - 1) / block;
  ParallelFor(num_blocks, num_threads, [&](int64_t b) {
    const int64_t row0 = b * block;
    const int64_t rows = std::min(block, n - row0);
    std::vector<float> tile(static_cast<size_t>(rows * nlist_));
    coarse_packed_[0].Multiply(x + row0 * d_, rows, tile.data(), nlist_);
    for (int64_t i = 0; i < rows; ++i) {
      const float* t = tile.data() + i * nlist_;
      lists[row0 + i] = static_cast<int32_t>(std::max_element(t, t + nlist_) - t);
    }
  });
}

void IvfPqIndex::EncodeResiduals(const float* x, int64_t n, const int32_t* lists, uint8_t* codes,
                                 int num_threads) const {
  const int64_t block = std::min(n, kAddBlock);
  std::vector<float> residuals(static_cast<size_t>(block * d_));
  for (int64_t row0 = 0; row0 < n; row0 += block) {
    const int64_t rows = std::min(block, n - row0);
    for (int64_t i = 0; i < rows; ++i) {
      const float* v = x + (row0 + i) * d_;
      const float* c = coarse_.data() + static_cast<int64_t>(lists[row0 + i]) * d_;
      float* r = residuals.data() + i * d_;
      for (int64_t j = 0; j < d_; ++j) r[j] = v[j] - c[j];
    }
    pq_.EncodeUnchecked(residuals.data(), rows, codes + row0 * pq_.code_size(), num_threads);
  }
}

void IvfPqIndex::Append(uint64_t id, int32_t list, const uint8_t* code,
                        const uint8_t* refine_code) {
  InvertedList& l = lists_[list];
  const int64_t i = static_cast<int64_t>(l.ids.size());
  where_[id] = Location{list, i};
  l.ids.push_back(id);
  if (refine_code != nullptr) {
    l.refine.insert(l.refine.end(), refine_code, refine_code + refine_code_size());
  }
  if (!fast_scan_) {
    l.codes.insert(l.codes.end(), code, code + pq_.code_size());
    return;
  }
  if (i % fastscan::kBlockSize == 0) {  // a fresh block of code-0 slots
    l.codes.resize(l.codes.size() + static_cast<size_t>(fastscan::BlockBytes(pq_.m())), 0);
  }
  fastscan::SetCode(l.codes.data(), pq_.m(), i, code);
}

void IvfPqIndex::ListCode(const InvertedList& l, int64_t offset, uint8_t* code) const {
  if (fast_scan_) {
    fastscan::GetCode(l.codes.data(), pq_.m(), offset, code);
  } else {
    std::memcpy(code, l.codes.data() + offset * pq_.code_size(),
                static_cast<size_t>(pq_.code_size()));
  }
}

absl::Status IvfPqIndex::Add(absl::Span<const uint64_t> ids, absl::Span<const float> vectors) {
  if (d_ == 0) return absl::FailedPreconditionError("IVF-PQ index is not trained");
  const int64_t n = static_cast<int64_t>(ids.size());
  if (static_cast<int64_t>(vectors.size()) != n * d_) {
    return absl::InvalidArgumentError(
        absl::StrFormat("vectors size %d != ids %d x d %d", vectors.size(), n, d_));
  }
  if (n == 0) return absl::OkStatus();
  if (auto status = CheckVectors(vectors.data(), n, d_, metric_, "vectors"); !status.ok()) {
    return status;
  }
  absl::flat_hash_set<uint64_t> batch;
  batch.reserve(ids.size());
  for (int64_t i = 0; i < n; ++i) {
    if (where_.contains(ids[i])) {
      return absl::AlreadyExistsError(
          absl::StrFormat("ids[%d] = %d is already in the index", i, ids[i]));
    }
    if (!batch.insert(ids[i]).second) {
      return absl::AlreadyExistsError(
          absl::StrFormat("ids[%d] = %d appears twice in the batch", i, ids[i]));
    }
  }
  const int threads = ResolveThreads(num_threads_);
  std::vector<float> normalized;
  const float* x = vectors.data();
  if (metric_ == Metric::kCosine) {
    normalized.assign(vectors.begin(), vectors.end());
    NormalizeRows(normalized.data(), n, d_);
    x = normalized.data();
  }
  std::vector<int32_t> lists(static_cast<size_t>(n));
  AssignLists(x, n, lists.data(), threads);
  std::vector<uint8_t> codes(static_cast<size_t>(n * pq_.code_size()));
  EncodeResiduals(x, n, lists.data(), codes.data(), threads);
  const int64_t rs = refine_code_size();
  std::vector<uint8_t> refine(static_cast<size_t>(n * rs));
  if (rs > 0) sq_.Encode(x, n, refine.data());
  where_.reserve(where_.size() + ids.size());
  for (int64_t i = 0; i < n; ++i) {
    Append(ids[i], lists[i], codes.data() + i * pq_.code_size(),
           rs > 0 ? refine.data() + i * rs : nullptr);
  }
  return absl::OkStatus();
}

int64_t IvfPqIndex::Remove(absl::Span<const uint64_t> ids) {
  int64_t removed = 0;
  const int64_t cs = pq_.code_size();
  std::vector<uint8_t> code(static_cast<size_t>(cs));
  for (uint64_t id : ids) {
    auto it = where_.find(id);
    if (it == where_.end()) continue;
    const Location at = it->second;
    where_.erase(it);
    InvertedList& l = lists_[at.list];
    const int64_t last = static_cast<int64_t>(l.ids.size()) - 1;
    // The last entry fills the hole, so a list stays dense: fast-scan lists keep exactly
    // NumBlocks(size) blocks, the last one partly filled, and never leak holes.
    if (at.offset != last) {
      l.ids[at.offset] = l.ids[last];
      if (fast_scan_) {
        ListCode(l, last, code.data());
        fastscan::SetCode(l.codes.data(), pq_.m(), at.offset, code.data());
      } else {
        std::memcpy(l.codes.data() + at.offset * cs, l.codes.data() + last * cs,
                    static_cast<size_t>(cs));
      }
      if (!l.refine.empty()) {
        const int64_t rs = refine_code_size();
        std::memcpy(l.refine.data() + at.offset * rs, l.refine.data() + last * rs,
                    static_cast<size_t>(rs));
      }
      where_[l.ids[at.offset]].offset = at.offset;
    }
    l.ids.pop_back();
    if (!l.refine.empty()) l.refine.resize(static_cast<size_t>(last * refine_code_size()));
    if (fast_scan_) {
      fastscan::ClearCode(l.codes.data(), pq_.m(), last);
      l.codes.resize(
          static_cast<size_t>(fastscan::NumBlocks(last) * fastscan::BlockBytes(pq_.m())));
    } else {
      l.codes.resize(static_cast<size_t>(last * cs));
    }
    ++removed;
  }
  return removed;
}

absl::StatusOr<std::vector<float>> IvfPqIndex::Reconstruct(uint64_t id) const {
  auto it = where_.find(id);
  if (it == where_.end()) {
    return absl::NotFoundError(absl::StrFormat("id %d is not in the index", id));
  }
  const Location at = it->second;
  std::vector<float> out(static_cast<size_t>(d_));
  std::vector<uint8_t> code(static_cast<size_t>(pq_.code_size()));
  ListCode(lists_[at.list], at.offset, code.data());
  pq_.Decode(code.data(), 1, out.data());
  const float* c = coarse_.data() + static_cast<int64_t>(at.list) * d_;
  for (int64_t j = 0; j < d_; ++j) out[j] += c[j];
  return out;
}

absl::StatusOr<IvfPqEncoded> IvfPqIndex::EncodeForList(absl::Span<const float> vector) const {
  if (d_ == 0) return absl::FailedPreconditionError("IVF-PQ index is not trained");
  if (static_cast<int64_t>(vector.size()) != d_) {
    return absl::InvalidArgumentError(absl::StrFormat("vector size %d != d %d", vector.size(), d_));
  }
  if (auto status = CheckVectors(vector.data(), 1, d_, metric_, "vector"); !status.ok()) {
    return status;
  }
  std::vector<float> x(vector.begin(), vector.end());
  if (metric_ == Metric::kCosine) NormalizeRows(x.data(), 1, d_);
  int32_t list = 0;
  AssignLists(x.data(), 1, &list, 1);
  IvfPqEncoded encoded;
  encoded.list = list;
  encoded.code.resize(static_cast<size_t>(pq_.code_size()));
  EncodeResiduals(x.data(), 1, &list, encoded.code.data(), 1);
  encoded.refine_code.resize(static_cast<size_t>(refine_code_size()));
  if (!encoded.refine_code.empty()) sq_.Encode(x.data(), 1, encoded.refine_code.data());
  return encoded;
}

absl::Status IvfPqIndex::EncodeBatch(absl::Span<const float> vectors, int32_t* lists,
                                     uint8_t* codes, uint8_t* refine_codes) const {
  if (d_ == 0) return absl::FailedPreconditionError("IVF-PQ index is not trained");
  if (vectors.size() % static_cast<size_t>(d_) != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("vectors size %d is not a multiple of d %d", vectors.size(), d_));
  }
  const int64_t n = static_cast<int64_t>(vectors.size()) / d_;
  if (n == 0) return absl::OkStatus();
  if (auto status = CheckVectors(vectors.data(), n, d_, metric_, "vectors"); !status.ok()) {
    return status;
  }
  const int threads = ResolveThreads(num_threads_);
  std::vector<float> normalized;
  const float* x = vectors.data();
  if (metric_ == Metric::kCosine) {
    normalized.assign(vectors.begin(), vectors.end());
    NormalizeRows(normalized.data(), n, d_);
    x = normalized.data();
  }
  AssignLists(x, n, lists, threads);
  EncodeResiduals(x, n, lists, codes, threads);
  if (refine_codes != nullptr && refine_code_size() > 0) sq_.Encode(x, n, refine_codes);
  return absl::OkStatus();
}

absl::Status IvfPqIndex::AddEncoded(uint64_t id, int64_t list, absl::Span<const uint8_t> code,
                                    absl::Span<const uint8_t> refine_code) {
  if (d_ == 0) return absl::FailedPreconditionError("IVF-PQ index is not trained");
  if (list < 0 || list >= nlist_) {
    return absl::InvalidArgumentError(
        absl::StrFormat("list %d is outside [0, nlist %d)", list, nlist_));
  }
  if (static_cast<int64_t>(code.size()) != pq_.code_size()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("code size %d != code_size %d", code.size(), pq_.code_size()));
  }
  if (static_cast<int64_t>(refine_code.size()) != refine_code_size()) {
    return absl::InvalidArgumentError(absl::StrFormat("refine code size %d != refine_code_size %d",
                                                      refine_code.size(), refine_code_size()));
  }
  if (where_.contains(id)) {
    return absl::AlreadyExistsError(absl::StrFormat("id %d is already in the index", id));
  }
  Append(id, static_cast<int32_t>(list), code.data(),
         refine_code.empty() ? nullptr : refine_code.data());
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::vector<IvfPqNeighbor>>> IvfPqIndex::Search(
    absl::Span<const float> queries, const IvfPqSearchParams& params) const {
  if (d_ == 0) return absl::FailedPreconditionError("IVF-PQ index is not trained");
  if (queries.size() % static_cast<size_t>(d_) != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("queries size %d is not a multiple of d %d", queries.size(), d_));
  }
  if (params.k < 1) return absl::InvalidArgumentError(absl::StrFormat("k %d < 1", params.k));
  if (params.nprobe < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("nprobe %d < 1", params.nprobe));
  }
  if (params.refine < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("refine %d < 1", params.refine));
  }
  if (params.k > std::numeric_limits<int32_t>::max() / params.refine) {
    return absl::InvalidArgumentError(
        absl::StrFormat("k %d x refine %d is too large", params.k, params.refine));
  }
  if (params.num_threads < 0) {
    return absl::InvalidArgumentError(absl::StrFormat("num_threads %d < 0", params.num_threads));
  }
  const int64_t nq = static_cast<int64_t>(queries.size()) / d_;
  if (auto status = CheckVectors(queries.data(), nq, d_, metric_, "queries"); !status.ok()) {
    return status;
  }
  std::vector<float> normalized;
  const float* x = queries.data();
  if (metric_ == Metric::kCosine) {
    normalized.assign(queries.begin(), queries.end());
    NormalizeRows(normalized.data(), nq, d_);
    x = normalized.data();
  }
  const int64_t nprobe = std::min(params.nprobe, nlist_);  // clamped: every list at most once
  std::vector<std::vector<IvfPqNeighbor>> results(static_cast<size_t>(nq));
  // More threads than the machine has would only add start-up cost. One thread is taken as is:
  // ResolveThreads(0) (glibc's get_nprocs) opens and reads a sysfs file, a few microseconds a
  // call, which a one-query search (the serving case) would pay every time.
  const int threads =
      params.num_threads == 1 ? 1 : std::min(ResolveThreads(params.num_threads), ResolveThreads(0));
  // At most a thread's share of the queries (rounded up to whole blocks), so every thread gets a
  // batch; the results do not depend on the batch size.
  const int64_t share = (nq + threads - 1) / threads;
  const int64_t batch = std::min(ScanBatch(fast_scan_, nlist_),
                                 (share + kQueryBlock - 1) / kQueryBlock * kQueryBlock);
  const int64_t num_blocks = (nq + batch - 1) / batch;
  ParallelFor(num_blocks, threads, [&](int64_t b) {
    SearchBlock(x, b * batch, std::min(nq, (b + 1) * batch), params, nprobe, results);
  });
  return results;
}

void IvfPqIndex::SearchBlock(const float* queries, int64_t q0, int64_t q1,
                             const IvfPqSearchParams& params, int64_t nprobe,
                             std::vector<std::vector<IvfPqNeighbor>>& results) const {
  const int64_t nb = q1 - q0;
  const float* xb = queries + q0 * d_;
  const int64_t table = pq_.m() * pq_.ksub();
  // Cosine is searched as L2 between unit vectors: ||x - y||^2 = 2 - 2 cos, and the L2 form
  // keeps the error of the reconstruction's norm out of the ranking (an IP table would not).
  const bool l2 = metric_ != Metric::kInnerProduct;
  const bool use_precomputed = l2 && !precomputed_.empty();

  // Coarse distances (nb x nlist; L2 distance, or minus the inner product) and query tables
  // (nb x M x ksub: -2 <x_m, y_mj> for L2 with the precomputed table, -<x_m, y_mj> for IP /
  // cosine; unused when L2 builds residual tables per list), computed kQueryBlock queries at a
  // time (q0 is a multiple of kQueryBlock), so a query's arithmetic is that of its fixed block
  // of 16 whatever the grouping.
  std::vector<float> coarse(static_cast<size_t>(nb * nlist_));
  std::vector<float> ip(!l2 || use_precomputed ? static_cast<size_t>(nb * table) : 0);
  for (int64_t s0 = 0; s0 < nb; s0 += kQueryBlock) {
    const int64_t sb = std::min(kQueryBlock, nb - s0);
    coarse_packed_[0].Multiply(xb + s0 * d_, sb, coarse.data() + s0 * nlist_, nlist_);
    if (!ip.empty()) pq_.InnerProductTables(xb + s0 * d_, sb, ip.data() + s0 * table);
  }
  for (int64_t q = 0; q < nb; ++q) {
    float* row = coarse.data() + q * nlist_;
    if (l2) {
      const float* v = xb + q * d_;
      float norm = 0;
      for (int64_t j = 0; j < d_; ++j) norm += v[j] * v[j];
      for (int64_t l = 0; l < nlist_; ++l) row[l] = norm - 2.0f * row[l] + coarse_norms_[l];
    } else {
      for (int64_t l = 0; l < nlist_; ++l) row[l] = -row[l];
    }
  }
  const float ip_scale = l2 ? -2.0f : -1.0f;
  for (float& v : ip) v *= ip_scale;

  const bool rerank = params.refine > 1 && (params.fetch || refine_codes_ != RefineCodes::kNone);
  const int64_t depth = rerank ? params.k * params.refine : params.k;
  std::vector<std::pair<float, int32_t>> order(static_cast<size_t>(nlist_));
  std::vector<float> sim(static_cast<size_t>(table));
  std::vector<float> residual(l2 && !use_precomputed ? static_cast<size_t>(d_) : 0);
  pq8::Scratch pq8_scratch;
  const int64_t m_count = pq_.m();
  const int64_t cs = pq_.code_size();
  const int64_t lut_bytes = fast_scan_ ? fastscan::LutBytes(m_count) : 0;
  // Fast-scan: the quantised tables of one list's group of queries (nb x lut_bytes, slot j for
  // the group's j-th query); for IP the table is per query (lut_query, nb x lut_bytes, quantised
  // once, with query_bias / query_inv_scale) and only the bias changes per list.
  std::vector<uint8_t> luts(static_cast<size_t>(nb * lut_bytes));
  std::vector<uint8_t> lut_query(fast_scan_ && !l2 ? luts.size() : 0);
  std::vector<float> query_bias(static_cast<size_t>(nb)), query_inv_scale(static_cast<size_t>(nb));
  // Counts, as before grouping, the codes each query's probed (and widened) lists hold, summed
  // over the queries: a list scanned once for a group of g queries counts g times its size.
  int64_t scanned = 0;
  int64_t summed = 0;  // see IvfPqSearchParams::codes_summed

  // The nprobe nearest lists of query q, nearest first (ties by list number), into order[0,
  // nprobe): a max-heap of the nprobe best (distance, list) pairs seen, which a later list
  // enters only with a strictly smaller distance (its number is larger than every list held).
  // As partial_sort over all nlist pairs, without writing them (that fill and the pair
  // comparisons took about a tenth of a batch search at nprobe 16 of 1024 lists).
  const auto nearest = order.begin() + nprobe;
  auto probe_order = [&](int64_t q) {
    const float* row = coarse.data() + q * nlist_;
    for (int64_t l = 0; l < nprobe; ++l) order[l] = {row[l], static_cast<int32_t>(l)};
    std::make_heap(order.begin(), nearest);
    for (int64_t l = nprobe; l < nlist_; ++l) {
      if (!(row[l] < order[0].first)) continue;
      std::pop_heap(order.begin(), nearest);
      order[nprobe - 1] = {row[l], static_cast<int32_t>(l)};
      std::push_heap(order.begin(), nearest);
    }
    std::sort_heap(order.begin(), nearest);
  };
  // Every list in coarse order (nearest first, ties by list number), for the widening.
  auto full_order = [&](int64_t q) {
    const float* row = coarse.data() + q * nlist_;
    for (int64_t l = 0; l < nlist_; ++l) order[l] = {row[l], static_cast<int32_t>(l)};
    std::sort(order.begin(), order.end());
  };
  // Fast-scan table of query q on `list` (coarse term `base`) into lut; returns the scan's
  // parameters for top.
  auto fast_table = [&](int64_t q, int32_t list, float base, uint8_t* lut, TopK& top) {
    const float* ip_q = ip.empty() ? nullptr : ip.data() + q * table;
    fastscan::QueryTable t{lut, 0.0f, 0.0f, &top};
    if (use_precomputed) {  // the list's term plus the query's, fused
      fastscan::QuantizeLut(precomputed_.data() + list * table, ip_q, m_count, base, lut, &t.bias,
                            &t.inv_scale);
    } else if (l2) {
      const float* v = xb + q * d_;
      const float* c = coarse_.data() + list * d_;
      for (int64_t j = 0; j < d_; ++j) residual[j] = v[j] - c[j];
      pq_.L2Tables(residual.data(), 1, sim.data());
      fastscan::QuantizeLut(sim.data(), nullptr, m_count, 0.0f, lut, &t.bias, &t.inv_scale);
    } else {
      t.lut = lut_query.data() + q * lut_bytes;
      t.bias = base + query_bias[q];
      t.inv_scale = query_inv_scale[q];
    }
    return t;
  };
  // Plain layouts: scans `list` (coarse term `base`) for query q into top.
  auto plain_scan = [&](int64_t q, int32_t list, float base, TopK& top) {
    const InvertedList& inv = lists_[list];
    const int64_t size = static_cast<int64_t>(inv.ids.size());
    if (size == 0) return;
    const float* ip_q = ip.empty() ? nullptr : ip.data() + q * table;
    const float* s = sim.data();
    if (use_precomputed) {
      const float* t = precomputed_.data() + list * table;
      AddTables(t, ip_q, table, sim.data());
    } else if (l2) {
      const float* v = xb + q * d_;
      const float* c = coarse_.data() + list * d_;
      for (int64_t j = 0; j < d_; ++j) residual[j] = v[j] - c[j];
      pq_.L2Tables(residual.data(), 1, sim.data());
      base = 0;
    } else {
      s = ip_q;
    }
    const uint8_t* codes = inv.codes.data();
    const uint64_t* ids = inv.ids.data();
    if (pq_.nbits() == 4) {
      Scan4(codes, ids, size, m_count, cs, s, base, top);
      return;
    }
    pq8::ScanCounts counts;
    pq8::Scan(codes, ids, size, m_count, s, base, top, pq8_scratch, &counts);
    summed += size - counts.filtered + counts.rescored;
  };
  // One query's scan of one list, for the widening (query by query).
  auto scan_list = [&](int64_t q, int32_t list, float base, TopK& top) {
    if (!fast_scan_) return plain_scan(q, list, base, top);
    const InvertedList& inv = lists_[list];
    const int64_t size = static_cast<int64_t>(inv.ids.size());
    if (size == 0) return;
    const fastscan::QueryTable t = fast_table(q, list, base, luts.data(), top);
    fastscan::Scan(inv.codes.data(), size, m_count, t.lut, t.bias, t.inv_scale, inv.ids.data(),
                   top);
  };

  // Query grouping (issue #14): the batch's (query, list) pairs ordered by list, so each probed
  // list is scanned once for all the batch's queries that probe it (fast-scan: the multi-query
  // kernel reads its blocks once a group of kMaxQueries; plain: the queries one after another
  // while the codes are in cache). Each query keeps its own heap; a heap's final k best do not
  // depend on the order its lists are scanned in (candidates are ranked by (distance, id), and
  // every scan's threshold test is conservative), so the results are those of scanning query by
  // query. Groups run in the order of their nearest probe (smallest probe rank, then list
  // number), so a lone query still scans its lists nearest first.
  struct Probe {
    int32_t list;
    int32_t q;     // in the batch
    int32_t rank;  // the list's place in the query's probe order
    float base;    // coarse term: L2 distance to the centroid, or minus the inner product
  };
  std::vector<Probe> probes;
  probes.reserve(static_cast<size_t>(nb * nprobe));
  std::vector<TopK> tops;
  tops.reserve(static_cast<size_t>(nb));
  for (int64_t q = 0; q < nb; ++q) {
    probe_order(q);
    int64_t probed = 0;  // candidates the probed lists can give: the most the heap will hold
    for (int64_t p = 0; p < nprobe; ++p) {
      probed += static_cast<int64_t>(lists_[order[p].second].ids.size());
      probes.push_back(
          {order[p].second, static_cast<int32_t>(q), static_cast<int32_t>(p), order[p].first});
    }
    scanned += probed;
    tops.emplace_back(depth, probed, params.selector);
    if (!lut_query.empty()) {
      fastscan::QuantizeLut(ip.data() + q * table, nullptr, m_count, 0.0f,
                            lut_query.data() + q * lut_bytes, &query_bias[q], &query_inv_scale[q]);
    }
  }
  // Groups: [start, end) of `grouped` (the probes ordered by list, then query) for one list, run
  // by (smallest rank, list).
  struct Group {
    int32_t rank;
    int32_t list;
    int32_t start;
    int32_t end;
  };
  std::vector<Group> groups;
  std::vector<Probe> grouped;
  if (nb == 1) {  // one query: its lists in probe order, no sorting
    grouped = std::move(probes);
    for (size_t i = 0; i < grouped.size(); ++i) {
      groups.push_back(
          {grouped[i].rank, grouped[i].list, static_cast<int32_t>(i), static_cast<int32_t>(i + 1)});
    }
  } else {
    // Counting sort by bucket (stable: queries ascending within a bucket). A query's nearest
    // list (rank 0) goes to bucket nlist + list, apart from the pairs of rank >= 1 (bucket
    // list), and those groups run first: every heap then starts from its nearest list, whose
    // candidates set a tight threshold early (scanning a far list first makes many more
    // candidates pass the threshold test and enter the heap). The nearest lists of a batch are
    // mostly different lists, so little sharing is lost by scanning them apart.
    auto bucket = [&](const Probe& pr) { return pr.rank == 0 ? nlist_ + pr.list : pr.list; };
    std::vector<int32_t> first(static_cast<size_t>(2 * nlist_) + 1, 0);
    for (const Probe& pr : probes) ++first[bucket(pr) + 1];
    for (int64_t l = 0; l < 2 * nlist_; ++l) first[l + 1] += first[l];
    grouped.resize(probes.size());
    std::vector<int32_t> next(first.begin(), first.end() - 1);
    for (const Probe& pr : probes) grouped[next[bucket(pr)]++] = pr;
    for (size_t i = 0; i < grouped.size();) {
      size_t j = i;
      int32_t rank = grouped[i].rank;
      for (; j < grouped.size() && bucket(grouped[j]) == bucket(grouped[i]); ++j) {
        rank = std::min(rank, grouped[j].rank);
      }
      groups.push_back({rank, grouped[i].list, static_cast<int32_t>(i), static_cast<int32_t>(j)});
      i = j;
    }
    std::sort(groups.begin(), groups.end(), [](const Group& x, const Group& y) {
      return x.rank < y.rank || (x.rank == y.rank && x.list < y.list);
    });
  }
  std::vector<fastscan::QueryTable> group_tables;
  group_tables.reserve(static_cast<size_t>(nb));
  for (const Group& g : groups) {
    const InvertedList& inv = lists_[g.list];
    const int64_t size = static_cast<int64_t>(inv.ids.size());
    if (size == 0) continue;
    if (!fast_scan_) {
      for (int32_t i = g.start; i < g.end; ++i) {
        plain_scan(grouped[i].q, g.list, grouped[i].base, tops[grouped[i].q]);
      }
      continue;
    }
    group_tables.clear();
    for (int32_t i = g.start; i < g.end; ++i) {
      uint8_t* lut = luts.data() + (i - g.start) * lut_bytes;
      group_tables.push_back(
          fast_table(grouped[i].q, g.list, grouped[i].base, lut, tops[grouped[i].q]));
    }
    fastscan::ScanMulti(inv.codes.data(), size, m_count, inv.ids.data(), group_tables.data(),
                        static_cast<int64_t>(group_tables.size()));
  }

  for (int64_t q = 0; q < nb; ++q) {
    TopK& top = tops[q];
    if (params.selector != nullptr && top.size() < params.k && nprobe < nlist_) {
      // Too few accepted ids in the nprobe lists: the next lists, nearest first, until k.
      full_order(q);
      for (int64_t p = nprobe; p < nlist_ && top.size() < params.k; ++p) {
        scanned += static_cast<int64_t>(lists_[order[p].second].ids.size());
        scan_list(q, order[p].second, order[p].first, top);
      }
    }
    std::vector<Candidate> best =
        depth > params.k ? Rerank(xb + q * d_, top.Take(), params) : top.Sorted();
    Report(metric_, best, params.k, results[q0 + q]);
  }
  if (params.codes_scanned != nullptr) {
    params.codes_scanned->fetch_add(scanned, std::memory_order_relaxed);
  }
  if (params.codes_summed != nullptr) {
    params.codes_summed->fetch_add(summed, std::memory_order_relaxed);
  }
}

std::vector<Candidate> IvfPqIndex::Rerank(const float* v, const std::vector<Candidate>& candidates,
                                          const IvfPqSearchParams& params) const {
  const bool l2 = metric_ != Metric::kInnerProduct;
  std::vector<Candidate> out;
  out.reserve(candidates.size());
  if (params.fetch) {  // exact, from the fetched vectors
    std::vector<float> fetched(static_cast<size_t>(d_));
    for (const Candidate& c : candidates) {
      if (!params.fetch(c.id, fetched.data())) continue;
      if (metric_ == Metric::kCosine) NormalizeRows(fetched.data(), 1, d_);
      out.push_back({ExactDistance(v, fetched.data(), d_, l2), c.id});
    }
  } else {  // the refine codes in memory
    // Three passes, so that the candidates' cache (and, on large collections, TLB) misses
    // overlap instead of following one another: prefetch each id's slot of the id map, look the
    // ids up and prefetch their codes, then compute the distances. On 1M items (128 MB of codes)
    // one candidate at a time cost about 0.7 us, the misses of one lookup and one code in turn.
    const int64_t rs = refine_code_size();
    for (const Candidate& c : candidates) where_.prefetch(c.id);
    std::vector<const uint8_t*> codes(candidates.size());
    for (size_t i = 0; i < candidates.size(); ++i) {
      const Location at = where_.at(candidates[i].id);
      codes[i] = lists_[at.list].refine.data() + at.offset * rs;
      for (int64_t line = 0; line < rs; line += 64) __builtin_prefetch(codes[i] + line);
    }
    for (size_t i = 0; i < candidates.size(); ++i) {
      const float distance = sq_.Distance(v, codes[i], l2);
      out.push_back({std::isnan(distance) ? std::numeric_limits<float>::infinity() : distance,
                     candidates[i].id});
    }
  }
  // Only the k best are reported: ranked, the rest left unordered behind them.
  const auto k = std::min(out.size(), static_cast<size_t>(params.k));
  std::partial_sort(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(k), out.end(),
                    BeforeOrder());
  return out;
}

absl::StatusOr<std::vector<std::vector<IvfPqNeighbor>>> ExactSearch(Metric metric, int64_t d,
                                                                    absl::Span<const float> queries,
                                                                    absl::Span<const uint64_t> ids,
                                                                    absl::Span<const float> vectors,
                                                                    int64_t k) {
  if (d < 1) return absl::InvalidArgumentError(absl::StrFormat("d %d < 1", d));
  if (queries.size() % static_cast<size_t>(d) != 0 ||
      vectors.size() != ids.size() * static_cast<size_t>(d)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("queries (%d values) or vectors (%d values for %d ids) do not fit d %d",
                        queries.size(), vectors.size(), ids.size(), d));
  }
  if (k < 1) return absl::InvalidArgumentError(absl::StrFormat("k %d < 1", k));
  const int64_t nq = static_cast<int64_t>(queries.size()) / d;
  const auto n = static_cast<int64_t>(ids.size());
  if (auto status = CheckVectors(queries.data(), nq, d, metric, "queries"); !status.ok()) {
    return status;
  }
  std::vector<float> normalized_queries, normalized_vectors;
  const float* x = queries.data();
  const float* y = vectors.data();
  if (metric == Metric::kCosine) {
    normalized_queries = NormalizedRows(x, nq, d);
    normalized_vectors = NormalizedRows(y, n, d);
    x = normalized_queries.data();
    y = normalized_vectors.data();
  }
  const bool l2 = metric != Metric::kInnerProduct;
  std::vector<std::vector<IvfPqNeighbor>> results(static_cast<size_t>(nq));
  for (int64_t q = 0; q < nq; ++q) {
    TopK top(k, n);
    for (int64_t i = 0; i < n; ++i) {
      top.Push(ExactDistance(x + q * d, y + i * d, d, l2), ids[i]);
    }
    Report(metric, top.Sorted(), k, results[q]);
  }
  return results;
}

IvfPqStats IvfPqIndex::Stats() const {
  IvfPqStats s;
  s.nlist = nlist_;
  s.m = pq_.m();
  s.nbits = pq_.nbits();
  s.d = d_;
  s.ntotal = size();
  s.code_size = pq_.code_size();
  s.fast_scan = fast_scan_;
  s.refine_codes = refine_codes_;
  s.refine_code_size = refine_code_size();
  s.bytes_per_vector = (fast_scan_ ? fastscan::PaddedM(pq_.m()) / 2 : pq_.code_size()) +
                       static_cast<int64_t>(sizeof(uint64_t)) + s.refine_code_size;
  s.precomputed_table = !precomputed_.empty();
  double sum_squares = 0;
  if (!lists_.empty()) {
    s.list_size_min = std::numeric_limits<int64_t>::max();
    for (const InvertedList& l : lists_) {
      const int64_t size = static_cast<int64_t>(l.ids.size());
      s.list_size_min = std::min(s.list_size_min, size);
      s.list_size_max = std::max(s.list_size_max, size);
      sum_squares += static_cast<double>(size) * size;
      s.memory.codes += static_cast<int64_t>(l.codes.capacity());
      s.memory.ids += static_cast<int64_t>(l.ids.capacity() * sizeof(uint64_t));
      s.memory.refine_codes += static_cast<int64_t>(l.refine.capacity());
      s.refine_code_bytes += static_cast<int64_t>(l.refine.size());
      s.list_code_bytes += static_cast<int64_t>(l.codes.size());
      s.list_code_capacity_bytes += static_cast<int64_t>(l.codes.capacity());
    }
    s.list_size_mean = static_cast<double>(s.ntotal) / static_cast<double>(nlist_);
  }
  if (s.ntotal > 0) {
    s.imbalance_factor = static_cast<double>(nlist_) * sum_squares /
                         (static_cast<double>(s.ntotal) * static_cast<double>(s.ntotal));
  }
  s.memory.id_map =
      static_cast<int64_t>(lists_.capacity() * sizeof(InvertedList) +
                           where_.capacity() * (sizeof(std::pair<uint64_t, Location>) + 1));
  // Centroids are held twice (plain and packed for the products); so are the PQ codebooks.
  s.memory.centroids = static_cast<int64_t>((2 * (coarse_.capacity() + pq_.centroids().capacity()) +
                                             coarse_norms_.capacity() + sq_.lo().capacity() +
                                             sq_.step().capacity()) *
                                            sizeof(float));
  s.memory.tables = static_cast<int64_t>(precomputed_.capacity() * sizeof(float));
  s.memory_bytes = s.memory.codes + s.memory.ids + s.memory.refine_codes + s.memory.id_map +
                   s.memory.centroids + s.memory.tables;
  return s;
}

std::string IvfPqIndex::Serialize(bool include_lists) const {
  BlobWriter w;
  w.PutArray(kMagic, sizeof(kMagic));
  const bool refine = refine_codes_ != RefineCodes::kNone;
  w.Put(refine ? kRefineVersion : fast_scan_ ? kFastScanVersion : kVersion);
  w.Put(static_cast<uint32_t>(metric_));
  w.Put(d_);
  w.Put(nlist_);
  w.Put(pq_.m());
  w.Put(static_cast<int32_t>(pq_.nbits()));
  w.Put(max_precomputed_table_bytes_);
  if (refine || fast_scan_) w.Put(static_cast<uint8_t>(fast_scan_ ? 1 : 0));
  if (refine) {
    w.Put(static_cast<uint8_t>(refine_codes_));
    w.PutArray(sq_.lo().data(), sq_.lo().size());
    w.PutArray(sq_.step().data(), sq_.step().size());
  }
  w.PutArray(coarse_.data(), coarse_.size());
  w.PutArray(pq_.centroids().data(), pq_.centroids().size());
  w.Put(static_cast<uint8_t>(include_lists ? 1 : 0));
  if (include_lists) {
    std::vector<uint8_t> plain;
    for (const InvertedList& l : lists_) {
      const int64_t size = static_cast<int64_t>(l.ids.size());
      w.Put(size);
      w.PutArray(l.ids.data(), l.ids.size());
      if (!fast_scan_) {
        w.PutArray(l.codes.data(), l.codes.size());
      } else {
        plain.resize(static_cast<size_t>(size * pq_.code_size()));
        for (int64_t i = 0; i < size; ++i) ListCode(l, i, plain.data() + i * pq_.code_size());
        w.PutArray(plain.data(), plain.size());
      }
      w.PutArray(l.refine.data(), l.refine.size());
    }
  }
  return w.Take();
}

absl::StatusOr<IvfPqIndex> IvfPqIndex::Deserialize(absl::string_view blob,
                                                   int64_t max_precomputed_table_bytes) {
  BlobReader r(blob, "IVF-PQ");
  char magic[sizeof(kMagic)];
  if (auto s = r.GetArray(magic, sizeof(magic), "magic"); !s.ok()) return s;
  if (std::memcmp(magic, kMagic, sizeof(kMagic)) != 0) {
    return absl::InvalidArgumentError("not an IVF-PQ blob (bad magic)");
  }
  uint32_t version = 0, metric = 0;
  int64_t d = 0, nlist = 0, m = 0, max_table_bytes = 0;
  int32_t nbits = 0;
  absl::Status s = r.Get(&version, "version");
  if (s.ok() && version != kVersion && version != kFastScanVersion && version != kRefineVersion) {
    return absl::InvalidArgumentError(
        absl::StrFormat("IVF-PQ blob version %d, expected %d, %d or %d", version, kVersion,
                        kFastScanVersion, kRefineVersion));
  }
  if (s.ok()) s = r.Get(&metric, "metric");
  if (s.ok()) s = r.Get(&d, "d");
  if (s.ok()) s = r.Get(&nlist, "nlist");
  if (s.ok()) s = r.Get(&m, "M");
  if (s.ok()) s = r.Get(&nbits, "nbits");
  if (s.ok()) s = r.Get(&max_table_bytes, "max_precomputed_table_bytes");
  uint8_t fast_scan = 0;
  if (s.ok() && version >= kFastScanVersion) s = r.Get(&fast_scan, "fast-scan flag");
  uint8_t refine = 0;
  if (s.ok() && version == kRefineVersion) s = r.Get(&refine, "refine kind");
  if (!s.ok()) return s;
  if (refine > static_cast<uint8_t>(RefineCodes::kSq8)) {
    return absl::InvalidArgumentError(absl::StrFormat("refine kind %d is unknown", refine));
  }
  if (metric > static_cast<uint32_t>(Metric::kCosine)) {
    return absl::InvalidArgumentError(absl::StrFormat("metric %d is unknown", metric));
  }
  if (d < 1 || d > kMaxDimension) {
    return absl::InvalidArgumentError(absl::StrFormat("d %d is outside [1, %d]", d, kMaxDimension));
  }
  if (auto shape = ProductQuantizer::ValidateShape(d, m, nbits); !shape.ok()) return shape;
  if (fast_scan > 1 || (fast_scan == 1 && (nbits != 4 || m > fastscan::kMaxM))) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "fast-scan flag %d with nbits %d and M %d is not valid", fast_scan, nbits, m));
  }
  if (nlist < 1 || nlist > std::numeric_limits<int32_t>::max() || max_table_bytes < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "nlist %d or max_precomputed_table_bytes %d out of range", nlist, max_table_bytes));
  }
  if (static_cast<uint64_t>(nlist) > r.remaining() / sizeof(float) / static_cast<uint64_t>(d)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("IVF-PQ blob truncated: nlist %d x d %d centroids need more than %d bytes",
                        nlist, d, r.remaining()));
  }
  IvfPqIndex index;
  index.metric_ = static_cast<Metric>(metric);
  index.d_ = d;
  index.nlist_ = nlist;
  index.fast_scan_ = fast_scan == 1;
  index.refine_codes_ = static_cast<RefineCodes>(refine);
  if (index.refine_codes_ == RefineCodes::kSq8) {
    std::vector<float> lo(static_cast<size_t>(d)), step(static_cast<size_t>(d));
    if (s = r.GetArray(lo.data(), lo.size(), "SQ8 minima"); !s.ok()) return s;
    if (s = r.GetArray(step.data(), step.size(), "SQ8 steps"); !s.ok()) return s;
    auto sq = ScalarQuantizer8::FromRanges(std::move(lo), std::move(step));
    if (!sq.ok()) return sq.status();
    index.sq_ = std::move(*sq);
  }
  index.coarse_.resize(static_cast<size_t>(nlist * d));
  if (s = r.GetArray(index.coarse_.data(), index.coarse_.size(), "coarse centroids"); !s.ok()) {
    return s;
  }
  if (s = ValidateKMeansInput(index.coarse_.data(), nlist, d, 1); !s.ok()) return s;
  if (static_cast<uint64_t>(d) > (r.remaining() / sizeof(float)) >> nbits) {
    return absl::InvalidArgumentError(
        absl::StrFormat("IVF-PQ blob truncated: 2^%d x d %d PQ centroids need more than %d bytes",
                        nbits, d, r.remaining()));
  }
  std::vector<float> pq_centroids(static_cast<size_t>((int64_t{1} << nbits) * d));
  if (s = r.GetArray(pq_centroids.data(), pq_centroids.size(), "PQ centroids"); !s.ok()) return s;
  auto pq = ProductQuantizer::FromCentroids(d, m, nbits, std::move(pq_centroids));
  if (!pq.ok()) return pq.status();
  index.pq_ = std::move(*pq);
  // The blob's cap is what training chose; the caller's bounds what a damaged blob can allocate.
  index.Init(std::min(max_table_bytes, std::max<int64_t>(0, max_precomputed_table_bytes)));
  uint8_t has_lists = 0;
  if (s = r.Get(&has_lists, "list flag"); !s.ok()) return s;
  if (has_lists > 1) {
    return absl::InvalidArgumentError(absl::StrFormat("list flag %d is not 0 or 1", has_lists));
  }
  const int64_t cs = index.pq_.code_size();
  const int64_t rs = index.refine_code_size();
  for (int64_t l = 0; has_lists && l < nlist; ++l) {
    int64_t size = 0;
    if (s = r.Get(&size, "list size"); !s.ok()) return s;
    if (size < 0 || static_cast<uint64_t>(size) >
                        r.remaining() / (sizeof(uint64_t) + static_cast<size_t>(cs + rs))) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "list %d size %d does not fit the %d bytes left", l, size, r.remaining()));
    }
    InvertedList& inv = index.lists_[l];
    inv.ids.resize(static_cast<size_t>(size));
    inv.codes.resize(static_cast<size_t>(size * cs));
    if (s = r.GetArray(inv.ids.data(), inv.ids.size(), "ids"); !s.ok()) return s;
    if (s = r.GetArray(inv.codes.data(), inv.codes.size(), "codes"); !s.ok()) return s;
    inv.refine.resize(static_cast<size_t>(size * rs));
    if (s = r.GetArray(inv.refine.data(), inv.refine.size(), "refine codes"); !s.ok()) return s;
    if (index.fast_scan_) {  // plain codes in the blob; blocks in memory
      std::vector<uint8_t> blocks(
          static_cast<size_t>(fastscan::NumBlocks(size) * fastscan::BlockBytes(m)));
      for (int64_t i = 0; i < size; ++i) {
        fastscan::SetCode(blocks.data(), m, i, inv.codes.data() + i * cs);
      }
      inv.codes = std::move(blocks);
    }
    for (int64_t i = 0; i < size; ++i) {
      if (!index.where_.emplace(inv.ids[i], Location{static_cast<int32_t>(l), i}).second) {
        return absl::InvalidArgumentError(
            absl::StrFormat("id %d appears twice in the blob", inv.ids[i]));
      }
    }
  }
  if (r.remaining() != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("IVF-PQ blob has %d trailing bytes", r.remaining()));
  }
  return index;
}

std::vector<uint64_t> IvfPqIndex::IdsNotIn(const IdSet& excluded) const {
  std::vector<uint64_t> ids;
  for (const InvertedList& l : lists_) {
    for (uint64_t id : l.ids) {
      if (!excluded.Contains(id)) ids.push_back(id);
    }
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

}  // namespace quantd
