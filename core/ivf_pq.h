// IVF-PQ index (FAISS's IndexIVFPQ, by residual): a coarse k-means quantizer of nlist centroids
// splits the space into inverted lists; a vector x assigned to list l is stored as the PQ code
// of its residual x - c_l. A query probes the nprobe lists whose centroids are nearest and scans
// their codes with asymmetric distances read from per-query lookup tables.
//
// Distances (smaller is nearer inside the index; results report the metric's own value):
//   L2:      ||x - c_l - y_R||^2 = ||x - c_l||^2 + sum_m T_l[m][code_m] - 2 <x_m, y_m[code_m]>,
//            T_l[m][j] = ||y_mj||^2 + 2 <c_l,m, y_mj> precomputed per (list, m, code) at train
//            time (FAISS's precomputed table), so a query needs one M x ksub inner-product table
//            and one fused table per probed list (T_l - 2 IP).
//   IP:      <x, c_l + y_R> = <x, c_l> + sum_m <x_m, y_m[code_m]>: the table is per query only.
//            The ranking then carries the quantization error along x in full (<x, e>), which on
//            data in a narrow cone (e.g. the MovieLens embeddings) costs much recall.
//   cosine:  vectors normalised on add and on query, centroids by spherical k-means, searched as
//            L2 (||x - y||^2 = 2 - 2 cos for unit vectors, so the ranking is the same and the
//            L2 form keeps the norm error of the reconstruction out of it); reported as
//            1 - ||x - y_hat||^2 / 2.
// Coarse assignment and probing use the metric (L2 nearest, or largest inner product for IP);
// the coarse k-means itself is L2 k-means for IP (FAISS's IP index assigns by inner product
// inside its k-means too).
//
// Shapes: vectors are n x d row-major float32; ids are uint64 (any value, unique in the index);
// list l holds ids (size_l) and codes (size_l x code_size bytes, contiguous).
//
// Thread safety: const methods may run concurrently; Add / Remove / AddEncoded need exclusive
// access.
#ifndef QUANTD_CORE_IVF_PQ_H_
#define QUANTD_CORE_IVF_PQ_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/gemm.h"
#include "core/id_set.h"
#include "core/kmeans.h"
#include "core/product_quantizer.h"
#include "core/scalar_quantizer.h"
#include "core/top_k.h"
#include "core/vectors.h"

namespace quantd {

// The finer code kept in memory beside the lists for two-stage search (IvfPqSearchParams.refine).
enum class RefineCodes {
  kNone = 0,
  // 8-bit scalar quantizer (core/scalar_quantizer.h) of the vector itself (normalised for
  // cosine): d bytes a vector, ranges from the training rows.
  kSq8 = 1,
};

struct IvfPqOptions {
  Metric metric = Metric::kL2;
  int64_t nlist = 1024;  // coarse centroids (inverted lists)
  int64_t m = 16;        // PQ sub-quantizers; d % m == 0
  int nbits = 8;         // 4 or 8
  // nbits 4 only (and M <= 256): keep the lists in the fast-scan layout (core/fastscan.h: blocks
  // of 32 codes, Mp / 2 bytes a code with M padded to a multiple of 4) and scan them with SIMD
  // byte-shuffle kernels on per-(query, list) tables quantised to uint8. Several times faster
  // than the plain 4-bit scan; the ranking distances are those of the quantised tables (their
  // rounding, at most M / 2 steps of (largest table row range) / 255, may reorder near ties),
  // and results report them unless refine re-ranks with exact distances.
  bool fast_scan = false;
  // Second-stage codes kept in memory for re-ranking (see IvfPqSearchParams::refine).
  RefineCodes refine_codes = RefineCodes::kNone;
  // Coarse k-means: FAISS trains its IVF quantizer with 10 iterations on at most 256 rows per
  // centroid; random init and no early stop, as FAISS.
  int coarse_iterations = 10;
  int64_t coarse_max_points_per_centroid = 256;
  // PQ k-means on the residuals of at most pq_training_rows rows (FAISS: 256 x 2^nbits, i.e.
  // 65536 for 8 bits and 4096 for 4 bits; set it to match FAISS with 4 bits).
  int pq_iterations = 25;
  int64_t pq_training_rows = 65536;
  KMeansOptions::Init init = KMeansOptions::Init::kRandom;
  uint64_t seed = 1234;
  // L2 and cosine: precompute the per-(list, m, code) table (nlist x M x 2^nbits floats) when it
  // takes at most this many bytes; larger indexes build a residual table per probed list.
  int64_t max_precomputed_table_bytes = int64_t{1} << 31;
  int num_threads = 0;  // training and Add; 0: hardware concurrency
  // Called with the fraction of training done (0..1]: after each coarse k-means iteration (up to
  // 0.6), then after each PQ sub-quantizer; one call at a time. Returning false cancels the
  // training: Train returns CANCELLED.
  std::function<bool(double)> on_progress;
};

struct IvfPqNeighbor {
  uint64_t id = 0;
  // L2: squared distance; inner product: the inner product; cosine: 1 - ||x - y||^2 / 2 for the
  // unit query x and unit (or reconstructed) y, i.e. the cosine similarity (exact with refine).
  float distance = 0;
};

// Returns the stored float vector of `id` in `out` (d floats), false if it has none. Called
// from the search threads concurrently when num_threads > 1.
using VectorFetcher = std::function<bool(uint64_t id, float* out)>;

struct IvfPqSearchParams {
  int64_t k = 10;
  // Lists probed per query; values above nlist are clamped to nlist (every list is scanned).
  int64_t nprobe = 1;
  // Two-stage search: when refine > 1, the refine * k best candidates of the scan are re-ranked
  // and the k best returned with the second stage's distances. With `fetch` set: exact
  // distances to the fetched vectors (candidates fetch cannot find are dropped). Without it,
  // when the index keeps refine codes (IvfPqOptions::refine_codes): distances to the decoded
  // codes, from memory. Without either, refine has no effect.
  int64_t refine = 1;
  VectorFetcher fetch;
  // Filter (null: none): only ids the selector accepts are results. Checked per candidate in
  // the scan, before it enters the top-k heap (8-bit, 4-bit and fast-scan paths alike; fast-scan
  // checks the survivors of its SIMD threshold test), so the k results are the k best accepted
  // ones of the probed lists, not what is left of k after filtering. When the nprobe lists hold
  // fewer than k accepted ids, further lists are scanned in coarse order (nearest first) until k
  // are held or every list was scanned: k results whenever k accepted ids are indexed.
  const IdSelector* selector = nullptr;
  // When set, receives (added atomically) the number of stored codes the scan read: the sizes
  // of the probed lists, summed over queries (a list scanned once for a group of queries counts
  // once per query of the group). For benchmarks (ns per code).
  std::atomic<int64_t>* codes_scanned = nullptr;
  // When set, receives the number of those codes (8-bit plain layout) whose float distance was
  // computed: the ones the SIMD lower bound let through (core/pq8_scan.h) and the ones scanned
  // without it (short lists, a heap not yet full, a CPU without the kernel). For benchmarks.
  std::atomic<int64_t>* codes_summed = nullptr;
  // Queries are processed in fixed blocks spread over this many threads (0: hardware
  // concurrency); the results do not depend on it.
  int num_threads = 1;
};

// One vector's place in the index, for storing codes per item and rebuilding lists on load.
struct IvfPqEncoded {
  int64_t list = 0;
  std::vector<uint8_t> code;         // code_size bytes
  std::vector<uint8_t> refine_code;  // refine_code_size bytes (empty without refine codes)
};

struct IvfPqStats {
  int64_t nlist = 0;
  int64_t m = 0;
  int nbits = 0;
  int64_t d = 0;
  int64_t ntotal = 0;
  int64_t list_size_min = 0;
  int64_t list_size_max = 0;
  double list_size_mean = 0;
  // FAISS's imbalance factor: nlist * sum(size^2) / ntotal^2 (1 when perfectly balanced).
  double imbalance_factor = 0;
  // Stored bytes per vector in the lists: the code plus its 8-byte id (fast-scan: the padded
  // code, Mp / 2 bytes, as the blocks hold it) plus the refine code.
  int64_t bytes_per_vector = 0;
  int64_t code_size = 0;
  bool fast_scan = false;
  // Bytes of codes the lists hold (fast-scan: whole blocks of 32, so at most 31 slots a list
  // unused) and the vectors' capacity behind them (what the allocator keeps after deletes).
  int64_t list_code_bytes = 0;
  int64_t list_code_capacity_bytes = 0;
  bool precomputed_table = false;
  RefineCodes refine_codes = RefineCodes::kNone;
  int64_t refine_code_size = 0;  // bytes a vector (included in bytes_per_vector)
  // Bytes of the refine codes the lists hold.
  int64_t refine_code_bytes = 0;
  // Heap bytes held by the index, estimated from container capacities: their sum, and by part.
  int64_t memory_bytes = 0;
  struct Memory {
    int64_t codes = 0;         // the lists' PQ codes (fast-scan: whole blocks)
    int64_t ids = 0;           // the lists' ids
    int64_t refine_codes = 0;  // the lists' refine codes
    int64_t id_map = 0;        // id -> (list, offset), and the list headers
    int64_t centroids = 0;     // coarse and PQ centroids (plain and packed), SQ8 ranges
    int64_t tables = 0;        // the precomputed L2 table (nlist x M x 2^nbits floats)
  } memory;
};

// The k nearest of n vectors (n x d, row-major, ids: n) to each of the queries (nq x d) by exact
// distance, ranked and reported as IvfPqIndex::Search with refine reports them (nearest first,
// ties by id; the same double-precision distances; cosine normalises queries and vectors).
// Fewer than k when n < k. For filtered searches whose allowed set is small enough that scoring
// it directly beats probing lists. INVALID_ARGUMENT on bad shapes, k < 1 or a bad query.
absl::StatusOr<std::vector<std::vector<IvfPqNeighbor>>> ExactSearch(Metric metric, int64_t d,
                                                                    absl::Span<const float> queries,
                                                                    absl::Span<const uint64_t> ids,
                                                                    absl::Span<const float> vectors,
                                                                    int64_t k);

class IvfPqIndex {
 public:
  IvfPqIndex() = default;

  // Trains the coarse quantizer and the PQ on `data` (n x d). INVALID_ARGUMENT when the shape
  // is bad (d % m, nbits, nlist < 1), n < nlist, n < 2^nbits, a component is not finite, or a
  // cosine row is zero. The index holds no vectors afterwards.
  static absl::StatusOr<IvfPqIndex> Train(const float* data, int64_t n, int64_t d,
                                          const IvfPqOptions& options);

  int64_t d() const { return d_; }
  int64_t nlist() const { return nlist_; }
  Metric metric() const { return metric_; }
  int64_t size() const { return static_cast<int64_t>(where_.size()); }
  // The indexed ids that `excluded` does not hold, ascending (a deny-list's complement): one
  // pass over the lists' ids.
  std::vector<uint64_t> IdsNotIn(const IdSet& excluded) const;
  int64_t code_size() const { return pq_.code_size(); }
  RefineCodes refine_codes() const { return refine_codes_; }
  // Bytes of one refine code: d for SQ8, 0 without.
  int64_t refine_code_size() const { return refine_codes_ == RefineCodes::kSq8 ? d_ : 0; }
  const ProductQuantizer& pq() const { return pq_; }
  const std::vector<float>& coarse_centroids() const { return coarse_; }  // nlist x d
  // Training remarks, e.g. FAISS's warning when n < 39 x nlist; empty when none.
  const std::string& training_warning() const { return training_warning_; }

  // Adds vectors (ids.size() x d). INVALID_ARGUMENT when vectors.size() != ids.size() x d or a
  // vector is bad; ALREADY_EXISTS when an id is in the index or twice in `ids`. All or nothing.
  absl::Status Add(absl::Span<const uint64_t> ids, absl::Span<const float> vectors);
  // Removes the ids present; returns how many were.
  int64_t Remove(absl::Span<const uint64_t> ids);
  bool Contains(uint64_t id) const { return where_.contains(id); }
  bool fast_scan() const { return fast_scan_; }
  // The approximation the index holds of `id` (centroid + decoded residual; for cosine, of the
  // normalised vector). NOT_FOUND when absent.
  absl::StatusOr<std::vector<float>> Reconstruct(uint64_t id) const;

  // List and code of one vector (d floats), as Add would store it.
  absl::StatusOr<IvfPqEncoded> EncodeForList(absl::Span<const float> vector) const;
  // EncodeForList of n = vectors.size() / d rows at once (n x d): lists (n), codes (n x
  // code_size) and, when the index keeps them and refine_codes is not null, refine codes (n x
  // refine_code_size) as Add would store them, batched (GEMM-shaped) and spread over the
  // index's threads. INVALID_ARGUMENT on a bad shape or vector; nothing is written then.
  absl::Status EncodeBatch(absl::Span<const float> vectors, int32_t* lists, uint8_t* codes,
                           uint8_t* refine_codes = nullptr) const;
  // Adds a code made by EncodeForList (with this index's trained parameters): refine_code must
  // be refine_code_size() bytes (empty when the index keeps none).
  absl::Status AddEncoded(uint64_t id, int64_t list, absl::Span<const uint8_t> code,
                          absl::Span<const uint8_t> refine_code = {});

  // k nearest stored vectors of every query (queries.size() / d of them), nearest first (ties by
  // id); fewer than k when fewer vectors are in the probed lists. INVALID_ARGUMENT on bad
  // queries or k < 1, nprobe < 1, refine < 1, num_threads < 0.
  absl::StatusOr<std::vector<std::vector<IvfPqNeighbor>>> Search(
      absl::Span<const float> queries, const IvfPqSearchParams& params) const;

  IvfPqStats Stats() const;

  // Byte blob: magic "QDIVFPQ\0", version, metric, shape, (version >= 2) the fast-scan flag,
  // (version 3) the refine kind and the SQ8 ranges, coarse centroids, PQ centroids, and
  // (include_lists) every list's ids and codes (plain codes in both layouts) and refine codes.
  // The oldest version that holds the index is written (1: plain, 2: fast-scan, 3: with refine
  // codes), so blobs of indexes without refine codes are unchanged.
  // Host (little-endian) byte order.
  std::string Serialize(bool include_lists = true) const;
  // max_precomputed_table_bytes caps the precomputed table of a loaded index (the smaller of it
  // and the cap stored at training wins), so a damaged blob cannot make it allocate more.
  static absl::StatusOr<IvfPqIndex> Deserialize(absl::string_view blob,
                                                int64_t max_precomputed_table_bytes = int64_t{1}
                                                                                      << 31);

 private:
  struct InvertedList {
    std::vector<uint64_t> ids;
    // Plain: ids.size() x code_size. Fast-scan: NumBlocks(ids.size()) blocks of
    // fastscan::BlockBytes(M); slot i holds the code of ids[i], slots past ids.size() code 0.
    std::vector<uint8_t> codes;
    // ids.size() x refine_code_size: the refine code of ids[i] at i (empty without).
    std::vector<uint8_t> refine;
  };
  struct Location {
    int32_t list;
    int64_t offset;
  };

  // Derived state after the centroids and PQ are set: packed coarse centroids, their norms, and
  // the precomputed L2 table.
  void Init(int64_t max_precomputed_table_bytes);
  // Nearest list of each of n rows (n x d, already normalised for cosine).
  void AssignLists(const float* x, int64_t n, int32_t* lists, int num_threads) const;
  // Codes of the residuals of x (n x d) to their lists: codes is n x code_size.
  void EncodeResiduals(const float* x, int64_t n, const int32_t* lists, uint8_t* codes,
                       int num_threads) const;
  // refine_code: refine_code_size() bytes (null when none are kept).
  void Append(uint64_t id, int32_t list, const uint8_t* code, const uint8_t* refine_code);
  // Re-ranks the scan's candidates (any order) of the query v (d floats, normalised for cosine)
  // with exact fetched vectors or the refine codes, as IvfPqSearchParams::refine says: the
  // params.k best first (by Before), then the others unordered.
  std::vector<Candidate> Rerank(const float* v, const std::vector<Candidate>& candidates,
                                const IvfPqSearchParams& params) const;
  // The plain code (code_size bytes) of entry `offset` of list l into code.
  void ListCode(const InvertedList& l, int64_t offset, uint8_t* code) const;
  // Searches queries [q0, q1) of the (normalised) batch into results.
  void SearchBlock(const float* queries, int64_t q0, int64_t q1, const IvfPqSearchParams& params,
                   int64_t nprobe, std::vector<std::vector<IvfPqNeighbor>>& results) const;

  Metric metric_ = Metric::kL2;
  int64_t d_ = 0;
  int64_t nlist_ = 0;
  int num_threads_ = 0;
  bool fast_scan_ = false;
  std::string training_warning_;
  std::vector<float> coarse_;  // nlist x d
  ProductQuantizer pq_;
  RefineCodes refine_codes_ = RefineCodes::kNone;
  ScalarQuantizer8 sq_;  // trained when refine_codes_ is kSq8
  // Derived (Init).
  std::vector<PackedRhs> coarse_packed_;  // 0 or 1 element (PackedRhs has no default state)
  std::vector<float> coarse_norms_;       // nlist
  // L2 precomputed table: nlist x M x ksub, T_l[m][j] = ||y_mj||^2 + 2 <c_l,m, y_mj>. Empty
  // for IP / cosine and when over the byte limit.
  std::vector<float> precomputed_;
  int64_t max_precomputed_table_bytes_ = 0;
  // Data.
  std::vector<InvertedList> lists_;
  absl::flat_hash_map<uint64_t, Location> where_;
};

}  // namespace quantd

#endif  // QUANTD_CORE_IVF_PQ_H_
