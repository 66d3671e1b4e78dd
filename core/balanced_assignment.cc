// Size-constrained assignment. Two solvers:
//
// kExact: successive shortest paths on the min-cost flow network
//   source -> point (cap 1, cost 0) -> cluster (cap 1, cost c_ij) -> sink,
// where each cluster -> sink connection is two arcs: cap size_min at cost "-BIG" (forcing the
// lower bounds) and cap size_max - size_min at cost 0. Instead of a numeric BIG the arc costs
// are lexicographic pairs (count of BIG units, real cost), which is exactly what BIG -> infinity
// means and needs no scaling. Dijkstra runs on the cluster level: a residual path
// cluster c -> point j (in c) -> cluster d collapses to one arc c -> d of cost
// min_{j in c} (c_jd - c_jc) (the point potentials cancel), kept in one lazy min-heap per ordered
// cluster pair; source -> c costs the cheapest unassigned point's c_ic. So each of the n
// augmentations is a dense Dijkstra on k + 2 nodes, O(k^2 + path * k log n).
//
// kFast: (1) per point, its 16 cheapest clusters (one pass over the matrix, or over row blocks
// computed on demand, which also checks that every cost is finite), plus extra candidates for
// clusters held by too few points (outlier centroids); only these candidates are kept. (2) Up to
// ten sweeps (from the caller's prices if given: a warm start) of dual coordinate ascent on
// cluster prices lambda_c over the candidates: each point takes its cheapest candidate under
// prices, and a cluster's price is set to the maximiser of the Lagrangian dual in that
// coordinate (midway between the thresholds of the last point kept and the first let go). An
// assignment that is argmin under prices is optimal for the sizes it produces, and -lambda are
// valid potentials for (3): successive shortest paths on the cluster level over the candidate arcs
// (as in kExact, with early exit), first from over-full clusters to clusters below size_max, then
// from clusters above size_min to under-full ones, then improving paths while any has negative
// cost. That is optimal within the candidate arcs. (4) If the candidate arcs cannot reach a
// feasible assignment, a greedy repair on full rows (recomputed if the matrix is not in memory)
// finishes: each move fixes one unit of violation and creates none, so the bounds always hold
// exactly. Without polish, (1) keeps 8 candidates, (2) moves only the prices of clusters outside
// the bounds (aiming a margin inside) and stops once all are within, and (3) skips the improving
// paths.
#include "core/balanced_assignment.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <queue>
#include <string>
#include <utility>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/parallel.h"

namespace quantd {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

absl::Status CheckThreads(int num_threads) {
  if (num_threads >= 0) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrFormat("num_threads %d: must be at least 0", num_threads));
}
// kFast: clusters kept per point (fewer lose up to a few % on tight bounds with k = 256), and
// price sweeps before the exact shortest paths take over (each sweep costs about two argmin
// passes; ten remove most of the violation, the paths the rest at about 0.1 ms each).
constexpr int kCandidates = 16;
constexpr int kPriceSweeps = 10;
// Without polish (BalancedOptions::polish): 8 candidates per point, and sweeps that touch only
// clusters outside the bounds and aim a quarter of the way into them, so that the points they
// let go do not push a neighbour straight back out. A warm start needs 2 to 7 such sweeps; a
// cold one leaves the rest of its violation to the shortest paths, which are cheaper than more
// sweeps then (measured on Fashion-MNIST and a Gaussian mixture, k = 256).
constexpr int kFeasibleCandidates = 8;
constexpr int kFeasibleSweeps = 8;
constexpr int64_t kFeasibleMarginDivisor = 4;
// Up to this many clusters short of candidate holders, their columns are computed (when the cost
// source can) rather than every row scanned again.
constexpr int64_t kColumnsInsteadOfRows = 32;

// "a x b = product", or "a x b (overflows int64)".
std::string ProductText(int64_t a, int64_t b) {
  int64_t product = 0;
  if (__builtin_mul_overflow(a, b, &product)) {
    return absl::StrCat(a, " x k ", b, " (overflows int64)");
  }
  return absl::StrCat(a, " x k ", b, " = ", product);
}

absl::Status CheckShape(int64_t n, int64_t k) {
  if (k < 1) return absl::InvalidArgumentError(absl::StrCat("k ", k, " must be >= 1"));
  if (n < 1) return absl::InvalidArgumentError(absl::StrCat("n ", n, " must be >= 1 points"));
  if (k > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat("k ", k, " does not fit int32 labels"));
  }
  if (n > std::numeric_limits<int64_t>::max() / k) {
    return absl::InvalidArgumentError(absl::StrCat("n ", n, " x k ", k, " overflows int64"));
  }
  return absl::OkStatus();
}

absl::Status NonFiniteError(const float* costs, int64_t n, int64_t k) {
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < k; ++j) {
      const float v = costs[i * k + j];
      if (!std::isfinite(v)) {
        return absl::InvalidArgumentError(
            absl::StrCat("cost[", i, ", ", j, "] is ", v, "; costs must be finite"));
      }
    }
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// kExact.

// Lexicographic arc cost: `big` counts units of -BIG (a lower-bound arc), `small` is the real
// cost. Ordered and added as a pair, which is the BIG -> infinity limit of big * BIG + small.
struct Lex {
  int64_t big = 0;
  double small = 0;
  friend Lex operator+(Lex a, Lex b) { return {a.big + b.big, a.small + b.small}; }
  friend Lex operator-(Lex a, Lex b) { return {a.big - b.big, a.small - b.small}; }
  friend bool operator<(Lex a, Lex b) { return a.big != b.big ? a.big < b.big : a.small < b.small; }
};

// One entry of a cluster-pair heap: point j (in cluster c when pushed) and c_jd - c_jc.
struct MoveKey {
  double delta;
  int32_t point;
};
struct MoveKeyGreater {
  bool operator()(const MoveKey& a, const MoveKey& b) const {
    return a.delta != b.delta ? a.delta > b.delta : a.point > b.point;
  }
};

std::vector<int32_t> ExactAssign(const float* costs, int64_t n, int64_t k,
                                 const SizeBounds& bounds) {
  const int64_t kk = k;
  auto cost = [&](int64_t i, int64_t c) { return static_cast<double>(costs[i * k + c]); };

  std::vector<int32_t> label(n, -1);  // -1: not yet assigned (source -> i still has capacity)
  std::vector<int64_t> size(k, 0);

  // order[c]: all points sorted by c_ic (ties by index); next[c] skips the assigned prefix. The
  // arc source -> c costs c_{order[c][next[c]], c}.
  std::vector<std::vector<int32_t>> order(k);
  std::vector<int64_t> next(k, 0);
  for (int64_t c = 0; c < k; ++c) {
    order[c].resize(n);
    for (int64_t i = 0; i < n; ++i) order[c][i] = static_cast<int32_t>(i);
    std::sort(order[c].begin(), order[c].end(), [&](int32_t a, int32_t b) {
      const float ca = costs[a * k + c], cb = costs[b * k + c];
      return ca != cb ? ca < cb : a < b;
    });
  }
  // heaps[c * k + d]: points pushed while in c, keyed by c_jd - c_jc; stale entries (the point
  // has left c) are dropped lazily when they reach the top.
  std::vector<std::vector<MoveKey>> heaps(kk * kk);
  auto heap_top = [&](int64_t c, int64_t d) -> const MoveKey* {
    std::vector<MoveKey>& h = heaps[c * k + d];
    while (!h.empty() && label[h.front().point] != c) {
      std::pop_heap(h.begin(), h.end(), MoveKeyGreater());
      h.pop_back();
    }
    return h.empty() ? nullptr : &h.front();
  };
  auto push_point = [&](int32_t j, int64_t c) {
    for (int64_t d = 0; d < k; ++d) {
      if (d == c) continue;
      std::vector<MoveKey>& h = heaps[c * k + d];
      h.push_back({cost(j, d) - cost(j, c), j});
      std::push_heap(h.begin(), h.end(), MoveKeyGreater());
    }
  };
  auto first_unassigned = [&](int64_t c) -> int32_t {
    while (next[c] < n && label[order[c][next[c]]] != -1) ++next[c];
    return next[c] < n ? order[c][next[c]] : -1;
  };
  // Cheapest residual arc cluster c -> sink, if any.
  auto sink_arc = [&](int64_t c, Lex* arc) {
    if (size[c] < bounds.size_min) {
      *arc = {-1, 0};
      return true;
    }
    if (size[c] < bounds.size_max) {
      *arc = {0, 0};
      return true;
    }
    return false;
  };

  // Potentials (source fixed at 0). Initially the graph is a DAG source -> c -> sink, so the
  // shortest distances are potentials that make every arc's reduced cost >= 0.
  const int64_t t = k;  // node index of the sink; clusters are 0..k-1
  std::vector<Lex> pot(k + 1);
  pot[t] = {std::numeric_limits<int64_t>::max() / 4, 0};
  for (int64_t c = 0; c < k; ++c) {
    pot[c] = {0, cost(order[c][0], c)};
    Lex arc;
    if (sink_arc(c, &arc) && pot[c] + arc < pot[t]) pot[t] = pot[c] + arc;
  }

  const Lex kUnreached{std::numeric_limits<int64_t>::max() / 4, 0};
  std::vector<Lex> dist(k + 1);
  std::vector<int64_t> prev(k + 1);  // -1: from the source
  std::vector<char> done(k + 1);
  std::vector<int32_t> path;                       // clusters c1 .. cm of the augmenting path
  std::vector<std::pair<int32_t, int32_t>> moves;  // (point, new cluster)

  for (int64_t step = 0; step < n; ++step) {
    // Dense Dijkstra on reduced costs over clusters + sink.
    for (int64_t c = 0; c < k; ++c) {
      const int32_t i = first_unassigned(c);
      dist[c] = i < 0 ? kUnreached : Lex{0, cost(i, c)} - pot[c];
      prev[c] = -1;
    }
    dist[t] = kUnreached;
    prev[t] = -1;
    std::fill(done.begin(), done.end(), 0);
    while (true) {
      int64_t u = -1;
      for (int64_t v = 0; v <= k; ++v) {
        if (!done[v] && (u < 0 || dist[v] < dist[u])) u = v;
      }
      done[u] = 1;
      if (u == t) break;  // the rest keep dist >= dist[t]; potentials use min(dist, dist[t])
      Lex arc;
      if (sink_arc(u, &arc)) {
        const Lex nd = dist[u] + arc + pot[u] - pot[t];
        if (nd < dist[t]) dist[t] = nd, prev[t] = u;
      }
      for (int64_t d = 0; d < k; ++d) {
        if (d == u || done[d]) continue;
        const MoveKey* top = heap_top(u, d);
        if (top == nullptr) continue;
        const Lex nd = dist[u] + Lex{0, top->delta} + pot[u] - pot[d];
        if (nd < dist[d]) dist[d] = nd, prev[d] = u;
      }
    }
    for (int64_t v = 0; v <= k; ++v) pot[v] = pot[v] + (dist[v] < dist[t] ? dist[v] : dist[t]);

    // Path source -> c1 -> ... -> cm -> sink; pick every mover before moving any.
    path.clear();
    for (int64_t v = prev[t]; v >= 0; v = prev[v]) path.push_back(static_cast<int32_t>(v));
    std::reverse(path.begin(), path.end());
    moves.clear();
    moves.emplace_back(first_unassigned(path[0]), path[0]);
    for (size_t h = 0; h + 1 < path.size(); ++h) {
      moves.emplace_back(heap_top(path[h], path[h + 1])->point, path[h + 1]);
    }
    for (const auto& [j, c] : moves) {
      if (label[j] >= 0) --size[label[j]];
      label[j] = c;
      ++size[c];
      push_point(j, c);
    }
  }
  return label;
}

// Keeps the `cap` least items seen in *heap, a max-heap (the worst kept item on top).
template <typename T>
void KeepLeast(const T& item, size_t cap, std::vector<T>* heap) {
  if (heap->size() < cap) {
    heap->push_back(item);
    std::push_heap(heap->begin(), heap->end());
  } else if (cap > 0 && item < heap->front()) {
    std::pop_heap(heap->begin(), heap->end());
    heap->back() = item;
    std::push_heap(heap->begin(), heap->end());
  }
}

// ---------------------------------------------------------------------------------------------
// kFast.

// The m cheapest clusters of every point, ascending: cluster[i * m + r], cost[i * m + r].
struct TopM {
  int m = 0;
  std::vector<int32_t> cluster;
  std::vector<float> cost;
};

// Fills rows [begin, end) of `top` from `block`, which holds rows [first, ...) (k values each);
// returns false if a cost in those rows is not finite. warm (null, or m clusters per point of
// all n points) seeds each row's list, e.g. with the previous Lloyd step's candidates.
//
// Per row, a sorted list of the m best so far by (cost, cluster), so the result does not depend
// on the seeds. The seeds go in first (or clusters 0 .. m - 1 without them); then 16 costs at a
// time are compared with the current m-th best and only those at or below it are looked at,
// skipping the seeds. Good seeds make the bound tight from the start, so that few costs get in. A
// NaN probe (an exact multiply-add: some lane becomes NaN iff some cost is NaN or infinite) runs
// alongside.
bool FillTopM(const float* block, int64_t first, int64_t k, int64_t begin, int64_t end,
              const int32_t* warm, TopM* top) {
  const int m = top->m;
  std::vector<int32_t> seeds(m);  // ascending, the clusters already inserted
  for (int64_t i = begin; i < end; ++i) {
    const float* row = block + (i - first) * k;
    float* best_cost = top->cost.data() + i * m;
    int32_t* best_cluster = top->cluster.data() + i * m;
    int filled = 0;
    auto insert = [&](float v, int32_t c) {
      int p = filled < m ? filled++ : m - 1;
      for (; p > 0 && (best_cost[p - 1] > v || (best_cost[p - 1] == v && best_cluster[p - 1] > c));
           --p) {
        best_cost[p] = best_cost[p - 1];
        best_cluster[p] = best_cluster[p - 1];
      }
      best_cost[p] = v;
      best_cluster[p] = c;
    };
    // (v, c) beats the m-th best (the list is full).
    auto beats = [&](float v, int32_t c) {
      return v < best_cost[m - 1] || (v == best_cost[m - 1] && c < best_cluster[m - 1]);
    };
    bool seeded = warm != nullptr;
    if (seeded) {
      std::copy_n(warm + i * m, m, seeds.begin());
      std::sort(seeds.begin(), seeds.end());
      for (int r = 0; r < m && seeded; ++r) {
        seeded = seeds[r] >= 0 && seeds[r] < k && (r == 0 || seeds[r - 1] < seeds[r]);
      }
    }
    if (!seeded) std::iota(seeds.begin(), seeds.end(), 0);
    float probe = 0;
    for (int r = 0; r < m; ++r) insert(row[seeds[r]], seeds[r]);
    int next_seed = 0;  // seeds[next_seed] is the first seed not yet skipped
    int64_t j = 0;
#if defined(__SSE2__)
    __m128 lanes_probe = _mm_setzero_ps();
    const __m128 zero = _mm_setzero_ps();
    for (; j + 16 <= k; j += 16) {
      const __m128 x0 = _mm_loadu_ps(row + j), x1 = _mm_loadu_ps(row + j + 4);
      const __m128 x2 = _mm_loadu_ps(row + j + 8), x3 = _mm_loadu_ps(row + j + 12);
      lanes_probe = _mm_add_ps(lanes_probe,
                               _mm_add_ps(_mm_add_ps(_mm_mul_ps(x0, zero), _mm_mul_ps(x1, zero)),
                                          _mm_add_ps(_mm_mul_ps(x2, zero), _mm_mul_ps(x3, zero))));
      const __m128 bound = _mm_set1_ps(best_cost[m - 1]);
      unsigned mask = static_cast<unsigned>(_mm_movemask_ps(_mm_cmple_ps(x0, bound))) |
                      static_cast<unsigned>(_mm_movemask_ps(_mm_cmple_ps(x1, bound))) << 4 |
                      static_cast<unsigned>(_mm_movemask_ps(_mm_cmple_ps(x2, bound))) << 8 |
                      static_cast<unsigned>(_mm_movemask_ps(_mm_cmple_ps(x3, bound))) << 12;
      for (; next_seed < m && seeds[next_seed] < j + 16; ++next_seed) {
        mask &= ~(1u << (seeds[next_seed] - j));
      }
      for (; mask != 0; mask &= mask - 1) {
        const int32_t c = static_cast<int32_t>(j + __builtin_ctz(mask));
        if (beats(row[c], c)) insert(row[c], c);  // the bound may have dropped since
      }
    }
    float lanes[4];
    _mm_storeu_ps(lanes, lanes_probe);
    probe += (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
#endif
    for (; j < k; ++j) {
      probe += row[j] * 0.0f;
      if (next_seed < m && seeds[next_seed] == j) {
        ++next_seed;
        continue;
      }
      if (beats(row[j], static_cast<int32_t>(j))) insert(row[j], static_cast<int32_t>(j));
    }
    if (probe != 0) return false;
  }
  return true;
}

// Runs fn(begin, end) over [0, n) split in contiguous blocks, one per worker: up to num_threads
// (0: hardware concurrency) workers, and no more than one per 200000 cost values (n x
// work_per_row), below which a thread costs more than it saves. fn runs concurrently on disjoint
// ranges.
void ParallelRows(int64_t n, int64_t work_per_row, int num_threads,
                  const std::function<void(int64_t, int64_t)>& fn) {
  const int64_t workers = std::min<int64_t>(ResolveThreads(num_threads),
                                            std::max<int64_t>(1, n * work_per_row / 200000));
  const int64_t block = (n + workers - 1) / workers;
  ParallelFor(workers, static_cast<int>(workers), [&](int64_t t) {
    const int64_t b = t * block, e = std::min(n, b + block);
    if (b < e) fn(b, e);
  });
}

// Rows of the n x k cost matrix: views into a dense matrix, or blocks computed on demand (the
// function runs on several threads at once, on disjoint row ranges).
class RowSource {
 public:
  // num_threads bounds the threads of every pass over the rows (0: hardware concurrency).
  RowSource(const float* costs, int64_t n, int64_t k, int num_threads)
      : dense_(costs), n_(n), k_(k), num_threads_(num_threads) {}
  RowSource(const CostRowsFn& fn, const CostColumnsFn& columns, int64_t n, int64_t k,
            int num_threads)
      : fn_(&fn), columns_(columns ? &columns : nullptr), n_(n), k_(k), num_threads_(num_threads) {}

  const float* dense() const { return dense_; }
  // Rows per block for a pass over all rows: all of them for a dense matrix, else about 16 MB.
  int64_t block_rows() const {
    return dense_ != nullptr ? n_ : std::max<int64_t>(1, (int64_t{1} << 22) / k_);
  }
  // Rows [begin, end) as (end - begin) x k values, valid until the next call.
  const float* Rows(int64_t begin, int64_t end) {
    if (dense_ != nullptr) return dense_ + begin * k_;
    buffer_.resize(static_cast<size_t>((end - begin) * k_));
    float* out = buffer_.data();
    ParallelRows(end - begin, k_, num_threads_,
                 [&](int64_t b, int64_t e) { (*fn_)(begin + b, begin + e, out + b * k_); });
    return out;
  }
  // Whether Columns is cheaper than a pass over the rows: a dense matrix, or a column function.
  bool has_columns() const { return dense_ != nullptr || columns_ != nullptr; }
  // Costs of all n points to `clusters` (u of them): out is n x u, row-major. Needs has_columns().
  void Columns(absl::Span<const int32_t> clusters, float* out) const {
    if (columns_ != nullptr) {
      (*columns_)(clusters, out);
      return;
    }
    const int64_t u = static_cast<int64_t>(clusters.size());
    for (int64_t i = 0; i < n_; ++i) {
      for (int64_t s = 0; s < u; ++s) out[i * u + s] = dense_[i * k_ + clusters[s]];
    }
  }
  // Calls visit(begin, end, rows) for blocks covering [0, n), (end - begin) x k values each, from
  // several threads at once. Computed rows come in tiles of about 256 KB, so each is still in
  // cache when visited (the matrix is never written out whole).
  void ForEachBlock(const std::function<void(int64_t, int64_t, const float*)>& visit) {
    if (dense_ != nullptr) {
      ParallelRows(n_, k_, num_threads_,
                   [&](int64_t b, int64_t e) { visit(b, e, dense_ + b * k_); });
      return;
    }
    const int64_t tile_rows = std::max<int64_t>(1, (int64_t{1} << 16) / k_);
    ParallelRows(n_, k_, num_threads_, [&](int64_t b, int64_t e) {
      std::vector<float> tile(static_cast<size_t>(std::min(tile_rows, e - b) * k_));
      for (int64_t first = b; first < e; first += tile_rows) {
        const int64_t last = std::min(e, first + tile_rows);
        (*fn_)(first, last, tile.data());
        visit(first, last, tile.data());
      }
    });
  }

 private:
  const float* dense_ = nullptr;
  const CostRowsFn* fn_ = nullptr;
  const CostColumnsFn* columns_ = nullptr;
  const int64_t n_, k_;
  const int num_threads_;
  std::vector<float> buffer_;
};

// The m = min(k, candidates) cheapest clusters of every point, in one pass
// over the rows. Returns false if some cost is not finite.
// warm: as in FillTopM, used when it holds m clusters per point.
bool ComputeTopM(RowSource& rows, int64_t n, int64_t k, int candidates,
                 const std::vector<int32_t>* warm, TopM* top) {
  top->m = static_cast<int>(std::min<int64_t>(k, candidates));
  top->cluster.resize(n * top->m);
  top->cost.resize(n * top->m);
  const int32_t* seeds =
      warm != nullptr && static_cast<int64_t>(warm->size()) == n * top->m ? warm->data() : nullptr;
  std::atomic<bool> finite = true;
  rows.ForEachBlock([&](int64_t begin, int64_t end, const float* block) {
    if (!FillTopM(block, begin, k, begin, end, seeds, top)) finite = false;
  });
  return finite;
}

// Candidate clusters of every point (CSR): entries [start[i], start[i + 1]) of point i, the
// first being its cheapest cluster. Each entry e names cluster[e] at cost[e].
struct Candidates {
  std::vector<int64_t> start;  // n + 1
  std::vector<int32_t> cluster;
  std::vector<float> cost;
};

// The top-m lists, plus, for every cluster held by fewer than `want` points, that cluster as an
// extra candidate of the points for which it is relatively cheapest (least c_ic - min_c c_ic),
// so that clusters far from all points (outlier centroids) can still be filled. Takes over
// top's arrays when no point needs an extra (the usual case), so they are not copied.
Candidates BuildCandidates(RowSource& rows, int64_t n, int64_t k, TopM& top, int64_t want) {
  const int m = top.m;
  std::vector<int64_t> holders(k, 0);
  for (int32_t c : top.cluster) ++holders[c];
  std::vector<int32_t> short_of;  // clusters held by fewer than `want` points
  for (int64_t c = 0; c < k; ++c) {
    if (holders[c] < want) short_of.push_back(static_cast<int32_t>(c));
  }
  // order[s]: (c_ic - min_c c_ic, i, c_ic) of the points that may take cluster short_of[s],
  // gathered in one pass over the rows (ties with the m-th cost may hold c: checked below).
  struct Offer {
    float relative;
    int32_t point;
    float cost;
    bool operator<(const Offer& o) const {
      return relative != o.relative ? relative < o.relative : point < o.point;
    }
  };
  // order[s] keeps only the want - holders best offers: a max-heap (worst kept on top), so a cold
  // start with many short clusters does not collect n offers for each.
  std::vector<std::vector<Offer>> order(short_of.size());
  std::vector<size_t> cap(short_of.size());
  for (size_t s = 0; s < short_of.size(); ++s) {
    cap[s] = static_cast<size_t>(want - holders[short_of[s]]);
  }
  // Offers of rows [first, last), whose costs to short_of[s] are at value[(i - first) * stride +
  // offset + s] (row by row: the block is read in order).
  auto offer_rows = [&](int64_t first, int64_t last, const float* value, int64_t stride,
                        const int32_t* offset) {
    for (int64_t i = first; i < last; ++i) {
      const float* row = value + (i - first) * stride;
      const float mth = top.cost[i * m + m - 1], best = top.cost[i * m];
      for (size_t s = 0; s < short_of.size(); ++s) {
        const float v = row[offset != nullptr ? offset[s] : static_cast<int32_t>(s)];
        if (!(v >= mth)) continue;
        const Offer offer{v - best, static_cast<int32_t>(i), v};
        KeepLeast(offer, cap[s], &order[s]);
      }
    }
  };
  if (!short_of.empty() && rows.has_columns() &&
      static_cast<int64_t>(short_of.size()) <= kColumnsInsteadOfRows) {
    // A few short clusters (the usual case in Lloyd steps): only their columns.
    std::vector<float> columns(static_cast<size_t>(n) * short_of.size());
    rows.Columns(short_of, columns.data());
    offer_rows(0, n, columns.data(), static_cast<int64_t>(short_of.size()), nullptr);
  } else {
    const int64_t step = rows.block_rows();
    for (int64_t first = 0; !short_of.empty() && first < n; first += step) {
      const int64_t last = std::min(n, first + step);
      offer_rows(first, last, rows.Rows(first, last), k, short_of.data());
    }
  }
  struct Extra {
    int32_t point, cluster;
    float cost;
  };
  std::vector<Extra> extra;
  for (size_t s = 0; s < short_of.size(); ++s) {
    const int32_t c = short_of[s];
    const int64_t take = static_cast<int64_t>(order[s].size());  // the best, at most cap[s]
    for (int64_t x = 0; x < take; ++x) {
      const int32_t i = order[s][x].point;
      const int32_t* held = &top.cluster[i * m];
      if (std::find(held, held + m, c) == held + m) extra.push_back({i, c, order[s][x].cost});
    }
  }
  std::sort(extra.begin(), extra.end(), [](const Extra& a, const Extra& b) {
    return a.point != b.point ? a.point < b.point : a.cluster < b.cluster;
  });
  Candidates cand;
  if (extra.empty()) {
    cand.start.resize(n + 1);
    for (int64_t i = 0; i <= n; ++i) cand.start[i] = i * m;
    cand.cluster = std::move(top.cluster);
    cand.cost = std::move(top.cost);
    return cand;
  }
  cand.start.assign(n + 1, m);
  cand.start[0] = 0;
  for (const Extra& x : extra) ++cand.start[x.point + 1];
  for (int64_t i = 0; i < n; ++i) cand.start[i + 1] += cand.start[i];
  const int64_t total = cand.start[n];
  cand.cluster.resize(total);
  cand.cost.resize(total);
  size_t x = 0;
  for (int64_t i = 0; i < n; ++i) {
    int64_t e = cand.start[i];
    for (int r = 0; r < m; ++r, ++e) {
      cand.cluster[e] = top.cluster[i * m + r];
      cand.cost[e] = top.cost[i * m + r];
    }
    for (; x < extra.size() && extra[x].point == i; ++x, ++e) {
      cand.cluster[e] = extra[x].cluster;
      cand.cost[e] = extra[x].cost;
    }
  }
  return cand;
}

// Dual coordinate ascent on cluster prices over the candidate lists: each point takes its
// cheapest candidate under prices; a cluster's price is set to the maximiser of the Lagrangian
// dual in its coordinate. Starts from *prices if it has k entries (else from zero); writes labels
// (n) and prices (k). With `polish` false it only moves the prices of clusters outside the
// bounds, towards sizes a margin inside them, and stops as soon as every size is within bounds
// (the labels are argmin under the prices either way).
void PricePhase(const Candidates& cand, int64_t n, int64_t k, const SizeBounds& bounds, bool polish,
                std::vector<int32_t>* labels, std::vector<double>* prices) {
  const int64_t lo = bounds.size_min, hi = bounds.size_max;
  std::vector<double>& lambda = *prices;
  if (static_cast<int64_t>(lambda.size()) != k) lambda.assign(k, 0.0);
  const int64_t entries = cand.start[n];

  // Inverted lists (CSR): the entries naming cluster c, with their point and cost inline so a
  // cluster's update reads one contiguous range.
  struct InvEntry {
    int64_t entry;
    int32_t point;
    float cost;
  };
  std::vector<int64_t> inv_start(k + 1, 0);
  for (int64_t e = 0; e < entries; ++e) ++inv_start[cand.cluster[e] + 1];
  for (int64_t c = 0; c < k; ++c) inv_start[c + 1] += inv_start[c];
  std::vector<InvEntry> inv(entries);
  {
    std::vector<int64_t> fill(inv_start.begin(), inv_start.end() - 1);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t e = cand.start[i]; e < cand.start[i + 1]; ++e) {
        inv[fill[cand.cluster[e]]++] = {e, static_cast<int32_t>(i), cand.cost[e]};
      }
    }
  }

  // Per point: best and second-best entry under prices, and their priced values.
  // (One struct per point: a cluster update touches each of its points once, in random order.)
  struct Best {
    int64_t b1, b2;
    double v1, v2;
  };
  std::vector<Best> best(n);
  auto priced = [&](int64_t e) { return cand.cost[e] + lambda[cand.cluster[e]]; };
  auto recompute = [&](int64_t i) {
    double lowest = kInf, second = kInf;
    int64_t bs = cand.start[i], ss = cand.start[i];
    for (int64_t e = cand.start[i]; e < cand.start[i + 1]; ++e) {
      const double v = priced(e);
      if (v < lowest) {
        second = lowest, ss = bs;
        lowest = v, bs = e;
      } else if (v < second) {
        second = v, ss = e;
      }
    }
    best[i] = {bs, ss, lowest, second};
  };
  std::vector<int64_t> size(k, 0);
  labels->assign(n, 0);
  for (int64_t i = 0; i < n; ++i) {
    recompute(i);
    (*labels)[i] = cand.cluster[best[i].b1];
    ++size[(*labels)[i]];
  }

  auto outside = [&](int64_t c) { return size[c] > hi || size[c] < lo; };
  // polish: every cluster whose price breaks complementary slackness (a non-zero price on a
  // bound that is not tight) too.
  auto needs_update = [&](int64_t c) {
    return outside(c) ||
           (polish && ((lambda[c] > 0 && size[c] < hi) || (lambda[c] < 0 && size[c] > lo)));
  };
  const int64_t margin = polish ? 0 : (hi - lo) / kFeasibleMarginDivisor;
  const int max_sweeps = polish ? kPriceSweeps : kFeasibleSweeps;
  // thresholds[x]: the point of inv(c)'s entry x is in c iff lambda_c < thresholds[x].
  std::vector<double> thresholds;
  // The value of sorted-descending thresholds at 1-based rank q (q <= size), via nth_element.
  auto rank_value = [&](int64_t q) {
    auto it = thresholds.begin() + (q - 1);
    std::nth_element(thresholds.begin(), it, thresholds.end(), std::greater<double>());
    return *it;
  };
  // Midway between the threshold of the last point kept (rank q) and the first let go (q + 1).
  auto price_for_rank = [&](int64_t q) {
    const int64_t count = static_cast<int64_t>(thresholds.size());
    if (q >= count) {
      const double a = rank_value(count);
      return a - (std::fabs(a) * 1e-9 + 1e-30);  // everyone who can join does
    }
    const double b = rank_value(q + 1);  // partitions: ranks <= q now sit before it
    if (q == 0) return b + (std::fabs(b) * 1e-9 + 1e-30);
    const double a = *std::min_element(thresholds.begin(), thresholds.begin() + q);
    if (a > b) return b + (a - b) * 0.5;
    return b + (std::fabs(b) * 1e-12 + 1e-30);  // a tie: let both go (size <= q)
  };

  for (int sweep = 0; sweep < max_sweeps; ++sweep) {
    if (!polish) {
      int64_t c = 0;
      while (c < k && !outside(c)) ++c;
      if (c == k) break;
    }
    bool changed = false;
    for (int64_t c = 0; c < k; ++c) {
      if (!needs_update(c)) continue;
      const int64_t begin = inv_start[c], end = inv_start[c + 1];
      if (begin == end) continue;
      thresholds.clear();
      int64_t at_zero = 0;  // size at lambda_c = 0
      for (int64_t x = begin; x < end; ++x) {
        const int64_t e = inv[x].entry, i = inv[x].point;
        const Best& p = best[i];
        const double th = (p.b1 == e ? p.v2 : p.v1) - inv[x].cost;
        thresholds.push_back(th);
        at_zero += th > 0;
      }
      double target = 0;
      if (at_zero > hi) {
        target = price_for_rank(hi - margin);
      } else if (at_zero < lo) {
        target = price_for_rank(lo + margin);
      }
      if (target == lambda[c]) continue;
      const bool up = target > lambda[c];
      lambda[c] = target;
      changed = true;
      for (int64_t x = begin; x < end; ++x) {
        const int64_t e = inv[x].entry, i = inv[x].point;
        Best& p = best[i];
        const int64_t old_best = p.b1;
        if (up) {
          if (e == p.b1 || e == p.b2) recompute(i);
        } else {
          const double v = inv[x].cost + target;
          if (e == p.b1) {
            p.v1 = v;
          } else if (e == p.b2) {
            p.v2 = v;
            if (v < p.v1) std::swap(p.b1, p.b2), std::swap(p.v1, p.v2);
          } else if (v < p.v1) {
            p = {e, p.b1, v, p.v1};
          } else if (v < p.v2) {
            p.b2 = e, p.v2 = v;
          }
        }
        if (p.b1 != old_best) {
          --size[(*labels)[i]];
          (*labels)[i] = cand.cluster[p.b1];
          ++size[(*labels)[i]];
        }
      }
    }
    if (!changed) break;
  }
}

// The fallback of FastAssign: RepairToBounds on the rows of `rows`, with the current labels'
// costs gathered in one pass.
void Repair(RowSource& rows, int64_t n, int64_t k, const SizeBounds& bounds,
            std::vector<int32_t>* labels) {
  std::vector<float> here(static_cast<size_t>(n));
  const int64_t step = rows.block_rows();
  for (int64_t first = 0; first < n; first += step) {
    const int64_t last = std::min(n, first + step);
    const float* block = rows.Rows(first, last);
    for (int64_t i = first; i < last; ++i) here[i] = block[(i - first) * k + (*labels)[i]];
  }
  const CostRowsOfFn rows_of = [&](absl::Span<const int32_t> points, float* out) {
    for (size_t p = 0; p < points.size(); ++p) {
      const float* row = rows.Rows(points[p], points[p] + 1);
      std::copy_n(row, k, out + p * k);
    }
  };
  const CostColumnsFn columns = [&](absl::Span<const int32_t> clusters, float* out) {
    if (rows.has_columns()) return rows.Columns(clusters, out);
    const int64_t u = static_cast<int64_t>(clusters.size());
    for (int64_t first = 0; first < n; first += step) {
      const int64_t last = std::min(n, first + step);
      const float* block = rows.Rows(first, last);
      for (int64_t i = first; i < last; ++i) {
        for (int64_t c = 0; c < u; ++c) out[i * u + c] = block[(i - first) * k + clusters[c]];
      }
    }
  };
  RepairToBounds(n, k, bounds, rows_of, columns, labels, &here);
}

// Successive shortest paths on the cluster level over the candidate arcs, from an assignment
// that is argmin under the potentials `pot` (reduced costs >= 0). An arc c -> d stands for the
// cheapest candidate point j in c having d among its candidates, of cost c_jd - c_jc; one lazy
// min-heap per ordered pair (c, d). Every augmentation moves points along a shortest path from a
// source cluster to a target cluster, which keeps the assignment optimal for its sizes (in the
// candidate graph).
class ClusterPaths {
 public:
  ClusterPaths(const Candidates& cand, int64_t n, int64_t k, std::vector<int32_t>* labels,
               std::vector<double> pot)
      : cand_(cand),
        n_(n),
        k_(k),
        label_(*labels),
        pot_(std::move(pot)),
        size_(k, 0),
        seg_start_(k * k + 1, 0),
        best_(k * k, kInf),
        dist_(k + 1),
        prev_(k + 1),
        done_(k + 1) {
    for (int32_t c : label_) ++size_[c];
    // The initial arcs, grouped by pair in one flat array (counting sort), each group a heap.
    ForEachArc([&](int64_t x, MoveKey) { ++seg_start_[x + 1]; });
    for (int64_t x = 0; x < k * k; ++x) seg_start_[x + 1] += seg_start_[x];
    seg_end_.assign(seg_start_.begin(), seg_start_.end() - 1);
    flat_.resize(seg_start_[k * k]);
    ForEachArc([&](int64_t x, MoveKey key) { flat_[seg_end_[x]++] = key; });
    for (int64_t x = 0; x < k * k; ++x) {
      if (seg_start_[x] == seg_end_[x]) continue;
      std::make_heap(flat_.begin() + seg_start_[x], flat_.begin() + seg_end_[x], MoveKeyGreater());
      best_[x] = flat_[seg_start_[x]].delta;
    }
  }

  int64_t size(int64_t c) const { return size_[c]; }

  // One shortest path from any cluster with is_source(c) to any with is_target(c), moving one
  // point along every arc. Real cost of the path in *cost. Moves only if `apply(real cost)`.
  // Returns false if no target is reachable.
  template <typename Source, typename Target, typename Apply>
  bool Augment(Source is_source, Target is_target, Apply apply, double* cost) {
    const int64_t t = k_;
    double p_src = -kInf, p_dst = kInf;
    for (int64_t c = 0; c < k_; ++c) {
      if (is_source(c)) p_src = std::max(p_src, pot_[c]);
      if (is_target(c)) p_dst = std::min(p_dst, pot_[c]);
    }
    if (p_src == -kInf || p_dst == kInf) return false;
    std::fill(dist_.begin(), dist_.end(), kInf);
    std::fill(done_.begin(), done_.end(), 0);
    queue_.clear();
    for (int64_t c = 0; c < k_; ++c) {
      if (!is_source(c)) continue;
      dist_[c] = p_src - pot_[c];
      prev_[c] = -1;
      queue_.push_back({dist_[c], static_cast<int32_t>(c)});
    }
    std::make_heap(queue_.begin(), queue_.end(), MoveKeyGreater());
    while (!queue_.empty()) {
      std::pop_heap(queue_.begin(), queue_.end(), MoveKeyGreater());
      const MoveKey top = queue_.back();
      queue_.pop_back();
      const int64_t u = top.point;
      if (done_[u] || top.delta > dist_[u]) continue;
      done_[u] = 1;
      if (u == t) break;
      auto relax = [&](int64_t v, double reduced) {
        const double nd = dist_[u] + std::max(0.0, reduced);
        if (nd < dist_[v]) {
          dist_[v] = nd, prev_[v] = u;
          queue_.push_back({nd, static_cast<int32_t>(v)});
          std::push_heap(queue_.begin(), queue_.end(), MoveKeyGreater());
        }
      };
      if (is_target(u)) relax(t, pot_[u] - p_dst);
      const double* arcs = &best_[u * k_];
      const double base = dist_[u] + pot_[u];
      for (int64_t d = 0; d < k_; ++d) {
        // (arcs[d] is +inf where there is no arc, and for d == u.)
        if (!done_[d] && base + arcs[d] - pot_[d] < dist_[d]) relax(d, arcs[d] + pot_[u] - pot_[d]);
      }
    }
    if (!done_[t]) {
      return false;
    }
    *cost = dist_[t] - p_src + p_dst;
    if (!apply(*cost)) return true;
    for (int64_t c = 0; c < k_; ++c) pot_[c] += std::min(dist_[c], dist_[t]);
    // Pick every mover before moving any.
    moves_.clear();
    for (int64_t v = prev_[t]; prev_[v] >= 0; v = prev_[v]) {
      moves_.emplace_back(Top(prev_[v] * k_ + v)->point, static_cast<int32_t>(v));
    }
    for (const auto& [j, c] : moves_) {
      const int32_t from = label_[j];
      --size_[from];
      label_[j] = c;
      ++size_[c];
      for (int64_t e = cand_.start[j]; e < cand_.start[j + 1]; ++e) {
        if (cand_.cluster[e] != from) CleanTop(from, cand_.cluster[e]);
      }
      ForEachArcOf(j, [&](int64_t x, MoveKey key) {
        std::vector<MoveKey>& h = added_[x];
        h.push_back(key);
        std::push_heap(h.begin(), h.end(), MoveKeyGreater());
        best_[x] = Top(x)->delta;
      });
    }
    return true;
  }

 private:
  // fn(c * k + d, {c_jd - c_jc, j}) for the arcs c = label(j) -> d, one per other candidate d
  // of j (label(j) is always a candidate).
  template <typename Fn>
  void ForEachArcOf(int32_t j, Fn fn) const {
    const int64_t c = label_[j];
    const int64_t begin = cand_.start[j], end = cand_.start[j + 1];
    double here = 0;
    for (int64_t e = begin; e < end; ++e) {
      if (cand_.cluster[e] == c) here = cand_.cost[e];
    }
    for (int64_t e = begin; e < end; ++e) {
      if (cand_.cluster[e] != c) fn(c * k_ + cand_.cluster[e], MoveKey{cand_.cost[e] - here, j});
    }
  }
  template <typename Fn>
  void ForEachArc(Fn fn) const {
    for (int64_t j = 0; j < n_; ++j) ForEachArcOf(static_cast<int32_t>(j), fn);
  }

  // The least key of pair x over both of its heaps, or null if both are empty.
  const MoveKey* Top(int64_t x) const {
    const MoveKey* top = seg_start_[x] < seg_end_[x] ? &flat_[seg_start_[x]] : nullptr;
    const auto it = added_.find(x);
    if (it != added_.end() && !it->second.empty()) {
      const MoveKey* other = &it->second.front();
      if (top == nullptr || MoveKeyGreater()(*top, *other)) top = other;
    }
    return top;
  }

  // Drops stale entries (points that left c) from the tops of pair (c, d); updates best_.
  void CleanTop(int64_t c, int64_t d) {
    const int64_t x = c * k_ + d;
    const auto begin = flat_.begin() + seg_start_[x];
    while (seg_start_[x] < seg_end_[x] && label_[flat_[seg_start_[x]].point] != c) {
      std::pop_heap(begin, flat_.begin() + seg_end_[x], MoveKeyGreater());
      --seg_end_[x];
    }
    const auto it = added_.find(x);
    if (it != added_.end()) {
      std::vector<MoveKey>& h = it->second;
      while (!h.empty() && label_[h.front().point] != c) {
        std::pop_heap(h.begin(), h.end(), MoveKeyGreater());
        h.pop_back();
      }
    }
    const MoveKey* top = Top(x);
    best_[x] = top == nullptr ? kInf : top->delta;
  }

  const Candidates& cand_;
  const int64_t n_, k_;
  std::vector<int32_t>& label_;
  std::vector<double> pot_;
  std::vector<int64_t> size_;
  // The heap of pair x = c * k + d: points j pushed while in c that have d as a candidate, keyed
  // by c_jd - c_jc. It is in two parts: the initial arcs, flat_[seg_start_[x], seg_end_[x]) (k * k
  // segments of one array: no per-pair allocation), and added_[x], the arcs of points moved into
  // c since (few, so a map). Invariant: both tops are valid (still in c); best_[x] is the lesser
  // key, or +inf when both are empty (and for c == d).
  std::vector<int64_t> seg_start_;  // k * k + 1
  std::vector<int64_t> seg_end_;    // k * k
  std::vector<MoveKey> flat_;
  absl::flat_hash_map<int64_t, std::vector<MoveKey>> added_;
  std::vector<double> best_;
  std::vector<double> dist_;   // k + 1 (the last is the target node)
  std::vector<int64_t> prev_;  // -1: from the source node
  std::vector<char> done_;
  std::vector<MoveKey> queue_;  // Dijkstra's heap of (distance, node)
  std::vector<std::pair<int32_t, int32_t>> moves_;
};

// Labels (n) from the candidates; `rows` only for the fallback repair. *prices_io (if not null):
// warm-start prices in, final prices out. Without polish: no improving paths, and no paths at
// all when the prices alone reach the bounds.
std::vector<int32_t> FastAssign(RowSource& rows, int64_t n, int64_t k, const SizeBounds& bounds,
                                const Candidates& cand, bool polish,
                                std::vector<double>* prices_io) {
  const int64_t lo = bounds.size_min, hi = bounds.size_max;
  std::vector<int32_t> labels;
  std::vector<double> prices;
  if (prices_io != nullptr) prices = *prices_io;
  PricePhase(cand, n, k, bounds, polish, &labels, &prices);
  if (prices_io != nullptr) *prices_io = prices;
  if (!polish) {
    std::vector<int64_t> size(k, 0);
    for (int32_t c : labels) ++size[c];
    if (std::all_of(size.begin(), size.end(), [&](int64_t s) { return lo <= s && s <= hi; })) {
      return labels;
    }
  }
  // Point j in c is argmin under prices: c_jc + lambda_c <= c_jd + lambda_d, so the reduced
  // cost (c_jd - c_jc) + p_c - p_d is >= 0 with potentials p = -lambda.
  for (double& p : prices) p = -p;
  bool in_candidates = true;

  {
    ClusterPaths paths(cand, n, k, &labels, std::move(prices));
    double cost = 0;
    auto always = [](double) { return true; };
    int64_t augments = 0;
    while (in_candidates) {
      bool over = false;
      for (int64_t c = 0; c < k && !over; ++c) over = paths.size(c) > hi;
      if (!over) break;
      in_candidates = paths.Augment([&](int64_t c) { return paths.size(c) > hi; },
                                    [&](int64_t c) { return paths.size(c) < hi; }, always, &cost);
      ++augments;
    }
    while (in_candidates) {
      bool under = false;
      for (int64_t c = 0; c < k && !under; ++c) under = paths.size(c) < lo;
      if (!under) break;
      in_candidates = paths.Augment([&](int64_t c) { return paths.size(c) > lo; },
                                    [&](int64_t c) { return paths.size(c) < lo; }, always, &cost);
      ++augments;
    }
    int64_t improvements = 0;
    if (in_candidates && polish) {
      double scale = 0;
      for (int64_t i = 0; i < n; ++i) scale += std::fabs(cand.cost[cand.start[i]]);
      const double tolerance = -1e-7 * (scale / n + 1e-30);
      auto improves = [&](double c) { return c < tolerance; };
      while (improvements < 4 * n) {
        if (!paths.Augment([&](int64_t c) { return paths.size(c) > lo; },
                           [&](int64_t c) { return paths.size(c) < hi; }, improves, &cost) ||
            !improves(cost)) {
          break;
        }
        ++improvements;
      }
    }
  }
  if (!in_candidates) Repair(rows, n, k, bounds, &labels);
  return labels;
}

// kFast on bounds already checked feasible.
absl::StatusOr<std::vector<int32_t>> FastAssignRows(RowSource& rows, int64_t n, int64_t k,
                                                    const SizeBounds& bounds,
                                                    const BalancedOptions& options) {
  // size_max above n constrains nothing; clamping keeps the arithmetic small.
  SizeBounds b = bounds;
  b.size_max = std::min(b.size_max, n);
  TopM top;
  if (!ComputeTopM(rows, n, k, options.polish ? kCandidates : kFeasibleCandidates,
                   options.candidates, &top)) {
    if (rows.dense() != nullptr) return NonFiniteError(rows.dense(), n, k);
    return absl::InvalidArgumentError("costs must be finite");
  }
  std::vector<int32_t> labels;
  if (k == 1) {
    labels.assign(n, 0);
    if (options.objective != nullptr) {
      *options.objective = 0;
      for (float v : top.cost) *options.objective += v;
    }
    return labels;
  }
  // Every cluster should be a candidate of a few times as many points as it may need.
  const int64_t want = std::min<int64_t>(n, 3 * std::max(b.size_min, (n + k - 1) / k));
  if (options.candidates != nullptr) *options.candidates = top.cluster;
  const Candidates cand = BuildCandidates(rows, n, k, top, want);
  labels = FastAssign(rows, n, k, b, cand, options.polish, options.prices);
  if (options.objective != nullptr) {
    // c_{i, label i} from the candidates; a row is recomputed only where the repair went beyond.
    double total = 0;
    for (int64_t i = 0; i < n; ++i) {
      int64_t e = cand.start[i];
      while (e < cand.start[i + 1] && cand.cluster[e] != labels[i]) ++e;
      total += e < cand.start[i + 1] ? cand.cost[e] : rows.Rows(i, i + 1)[labels[i]];
    }
    *options.objective = total;
  }
  return labels;
}

}  // namespace

SizeBounds BoundsFromSlack(int64_t n, int64_t k, double slack) {
  if (k < 1 || n < 0) return {0, std::max<int64_t>(n, 0)};
  if (!(slack > 0)) slack = 0;  // also NaN
  const int64_t floor_avg = n / k, ceil_avg = (n + k - 1) / k;
  const double avg = static_cast<double>(n) / static_cast<double>(k);
  // The 1e-9 keeps exact products (e.g. 125 * 0.8) from rounding across an integer.
  const double lo = std::floor(avg * (1 - slack) + 1e-9);
  const double hi = std::ceil(avg * (1 + slack) - 1e-9);
  SizeBounds bounds;
  bounds.size_min = std::clamp<int64_t>(lo > 0 ? static_cast<int64_t>(lo) : 0, 0, floor_avg);
  bounds.size_max = hi >= static_cast<double>(n) ? n : std::max(ceil_avg, static_cast<int64_t>(hi));
  return bounds;
}

absl::Status CheckBoundsFeasible(int64_t n, int64_t k, const SizeBounds& bounds) {
  if (absl::Status s = CheckShape(n, k); !s.ok()) return s;
  if (bounds.size_min < 0) {
    return absl::InvalidArgumentError(absl::StrCat("size_min ", bounds.size_min, " must be >= 0"));
  }
  if (bounds.size_min > bounds.size_max) {
    return absl::InvalidArgumentError(
        absl::StrCat("size_min ", bounds.size_min, " exceeds size_max ", bounds.size_max));
  }
  if (bounds.size_min > n / k) {  // size_min * k > n, without overflow
    return absl::InvalidArgumentError(
        absl::StrCat("size_min ", ProductText(bounds.size_min, k), " exceeds n ", n, " points"));
  }
  if (bounds.size_max < (n + k - 1) / k) {  // size_max * k < n
    return absl::InvalidArgumentError(
        absl::StrCat("size_max ", ProductText(bounds.size_max, k), " is below n ", n, " points"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> BalancedAssign(const float* costs, int64_t n, int64_t k,
                                                    const SizeBounds& bounds, BalancedMode mode) {
  BalancedOptions options;
  options.mode = mode;
  return BalancedAssign(costs, n, k, bounds, options);
}

absl::StatusOr<std::vector<int32_t>> BalancedAssign(const float* costs, int64_t n, int64_t k,
                                                    const SizeBounds& bounds,
                                                    const BalancedOptions& options) {
  if (absl::Status s = CheckBoundsFeasible(n, k, bounds); !s.ok()) return s;
  if (absl::Status s = CheckThreads(options.num_threads); !s.ok()) return s;
  if (costs == nullptr) return absl::InvalidArgumentError("costs is null");
  if (options.mode == BalancedMode::kExact) {
    if (absl::Status s = NonFiniteError(costs, n, k); !s.ok()) return s;
    // size_max above n constrains nothing; clamping keeps the arithmetic small.
    SizeBounds b = bounds;
    b.size_max = std::min(b.size_max, n);
    std::vector<int32_t> labels = k == 1 ? std::vector<int32_t>(n, 0) : ExactAssign(costs, n, k, b);
    if (options.objective != nullptr) *options.objective = AssignmentCost(costs, n, k, labels);
    return labels;
  }
  RowSource rows(costs, n, k, options.num_threads);
  return FastAssignRows(rows, n, k, bounds, options);
}

absl::StatusOr<std::vector<int32_t>> BalancedAssignRows(const CostRowsFn& fn, int64_t n, int64_t k,
                                                        const SizeBounds& bounds,
                                                        const BalancedOptions& options,
                                                        const CostColumnsFn& columns) {
  if (absl::Status s = CheckBoundsFeasible(n, k, bounds); !s.ok()) return s;
  if (absl::Status s = CheckThreads(options.num_threads); !s.ok()) return s;
  if (options.mode != BalancedMode::kFast) {
    return absl::InvalidArgumentError("BalancedAssignRows supports kFast only");
  }
  if (!fn) return absl::InvalidArgumentError("cost rows function is empty");
  RowSource rows(fn, columns, n, k, options.num_threads);
  return FastAssignRows(rows, n, k, bounds, options);
}

void RepairToBounds(int64_t n, int64_t k, const SizeBounds& bounds, const CostRowsOfFn& rows_of,
                    const CostColumnsFn& columns, std::vector<int32_t>* labels,
                    std::vector<float>* costs) {
  std::vector<int32_t>& label = *labels;
  std::vector<float>& here = *costs;
  const int64_t lo = bounds.size_min, hi = std::min(bounds.size_max, n);
  std::vector<int64_t> size(k, 0);
  for (int32_t c : label) ++size[c];

  // Over-full: a global min-heap of (cost increase, point, target) over the members of over-full
  // clusters, their rows computed in blocks. A move whose target has filled since is looked at
  // again on a fresh row.
  struct Move {
    double delta;
    int32_t point;
    int32_t to;
    float to_cost;
    bool operator>(const Move& o) const {
      return delta != o.delta ? delta > o.delta : point > o.point;
    }
  };
  auto best_target = [&](int32_t i, const float* row) {
    Move best{kInf, i, -1, 0};
    for (int64_t d = 0; d < k; ++d) {
      if (d == label[i] || size[d] >= hi) continue;
      const double delta = static_cast<double>(row[d]) - here[i];
      if (delta < best.delta) best = {delta, i, static_cast<int32_t>(d), row[d]};
    }
    return best;
  };
  std::vector<int32_t> members;
  for (int64_t i = 0; i < n; ++i) {
    if (size[label[i]] > hi) members.push_back(static_cast<int32_t>(i));
  }
  std::priority_queue<Move, std::vector<Move>, std::greater<Move>> over;
  constexpr int64_t kRowBlock = 4096;
  std::vector<float> rows(static_cast<size_t>(std::min<int64_t>(kRowBlock, members.size()) * k));
  for (size_t first = 0; first < members.size(); first += kRowBlock) {
    const size_t count = std::min<size_t>(kRowBlock, members.size() - first);
    rows_of(absl::MakeConstSpan(members.data() + first, count), rows.data());
    for (size_t p = 0; p < count; ++p) over.push(best_target(members[first + p], &rows[p * k]));
  }
  while (!over.empty()) {
    const Move mv = over.top();
    over.pop();
    if (size[label[mv.point]] <= hi) continue;  // its cluster is within bounds now
    if (size[mv.to] >= hi) {                    // the target filled up: look again
      rows_of(absl::MakeConstSpan(&mv.point, 1), rows.data());
      over.push(best_target(mv.point, rows.data()));
      continue;
    }
    --size[label[mv.point]];
    label[mv.point] = mv.to;
    here[mv.point] = mv.to_cost;
    ++size[mv.to];
  }

  // Under-full: each such cluster takes its cheapest points from clusters above size_min (so no
  // other cluster becomes under-full), with the columns of up to 16 such clusters at a time. One
  // pass over the points keeps, per cluster, the cheapest offers it could need (a bounded heap:
  // what it lacks, times 4, plus 64, since donors may reach size_min meanwhile); only if those run
  // out does it rank every point.
  std::vector<int32_t> under;
  for (int64_t c = 0; c < k; ++c) {
    if (size[c] < lo) under.push_back(static_cast<int32_t>(c));
  }
  using Offer = std::pair<double, int32_t>;  // (cost increase, point)
  constexpr size_t kColumnGroup = 16;
  std::vector<float> column;
  std::vector<std::vector<Offer>> kept(kColumnGroup);
  std::vector<Offer> offers;
  for (size_t g = 0; g < under.size(); g += kColumnGroup) {
    const size_t group = std::min(kColumnGroup, under.size() - g);
    column.resize(static_cast<size_t>(n) * group);
    columns(absl::MakeConstSpan(under.data() + g, group), column.data());
    std::vector<size_t> cap(group);
    for (size_t u = 0; u < group; ++u) {
      cap[u] = static_cast<size_t>(4 * (lo - size[under[g + u]]) + 64);
      kept[u].clear();
    }
    for (int64_t i = 0; i < n; ++i) {
      if (size[label[i]] <= lo) continue;
      for (size_t u = 0; u < group; ++u) {
        const Offer offer{static_cast<double>(column[i * group + u]) - here[i],
                          static_cast<int32_t>(i)};
        KeepLeast(offer, cap[u], &kept[u]);
      }
    }
    for (size_t u = 0; u < group; ++u) {
      const int32_t c = under[g + u];
      auto take = [&](const std::vector<Offer>& sorted) {
        for (const auto& [delta, i] : sorted) {
          if (size[c] >= lo) return;
          if (label[i] == c || size[label[i]] <= lo) continue;
          --size[label[i]];
          label[i] = c;
          here[i] = column[i * group + u];
          ++size[c];
        }
      };
      std::sort(kept[u].begin(), kept[u].end());
      take(kept[u]);
      if (size[c] >= lo) continue;
      offers.clear();  // the kept offers ran out: rank every point still able to give
      for (int64_t i = 0; i < n; ++i) {
        if (label[i] != c && size[label[i]] > lo) {
          offers.emplace_back(static_cast<double>(column[i * group + u]) - here[i],
                              static_cast<int32_t>(i));
        }
      }
      std::sort(offers.begin(), offers.end());
      take(offers);
    }
  }
}

double AssignmentCost(const float* costs, int64_t n, int64_t k,
                      const std::vector<int32_t>& labels) {
  double total = 0;
  for (int64_t i = 0; i < n && i < static_cast<int64_t>(labels.size()); ++i) {
    total += costs[i * k + labels[i]];
  }
  return total;
}

}  // namespace quantd
