// The k best (distance, id) candidates of a scan, shared by the IVF-PQ scans (float tables and
// the fast-scan kernels), so every scan ranks and breaks ties the same way.
#ifndef QUANTD_CORE_TOP_K_H_
#define QUANTD_CORE_TOP_K_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "core/id_set.h"

namespace quantd {

// A candidate: internal distance (smaller is nearer) and id. Ordered by (distance, id), so the
// k best of any set are unique whatever order they are seen in.
struct Candidate {
  float distance;
  uint64_t id;
};
inline bool Before(const Candidate& a, const Candidate& b) {
  return a.distance < b.distance || (a.distance == b.distance && a.id < b.id);
}
// Before as a function object, for std::sort and the heap algorithms: a function pointer there
// is called, not inlined (it showed as its own 7% of a deep re-ranked search).
struct BeforeOrder {
  bool operator()(const Candidate& a, const Candidate& b) const { return Before(a, b); }
};

// The k best candidates seen: a binary max-heap under Before (worst at the root). With a
// selector, candidates it does not accept never enter: every scan checks a candidate that passes
// the threshold here, after its own (e.g. SIMD) threshold test, so filters cost nothing on the
// candidates the threshold already rejects.
class TopK {
 public:
  // reserve: the most candidates expected (k, or fewer when fewer vectors are stored).
  // selector: null for none; outlives the TopK.
  TopK(int64_t k, int64_t reserve, const IdSelector* selector = nullptr)
      : k_(static_cast<size_t>(k)), selector_(selector) {
    heap_.reserve(static_cast<size_t>(std::min(k, reserve)));
  }

  // Distances above this cannot enter (+inf until k candidates are held).
  float threshold() const { return threshold_; }
  // Candidates held (at most k).
  int64_t size() const { return static_cast<int64_t>(heap_.size()); }

  void Push(float distance, uint64_t id) {
    if (selector_ != nullptr && !selector_->Accepts(id)) return;
    const Candidate c{distance, id};
    if (heap_.size() < k_) {
      heap_.push_back(c);
      std::push_heap(heap_.begin(), heap_.end(), BeforeOrder());
      if (heap_.size() == k_) threshold_ = heap_.front().distance;
      return;
    }
    if (!Before(c, heap_.front())) return;
    // Replace the root and sift it down.
    const size_t n = heap_.size();
    size_t i = 0;
    while (true) {
      size_t child = 2 * i + 1;
      if (child >= n) break;
      if (child + 1 < n && Before(heap_[child], heap_[child + 1])) ++child;
      if (!Before(c, heap_[child])) break;
      heap_[i] = heap_[child];
      i = child;
    }
    heap_[i] = c;
    threshold_ = heap_.front().distance;
  }

  // The candidates, best first.
  std::vector<Candidate> Sorted() {
    std::vector<Candidate> out = std::move(heap_);
    std::sort(out.begin(), out.end(), BeforeOrder());
    return out;
  }
  // The candidates in no particular order (for a second stage that ranks them anew).
  std::vector<Candidate> Take() { return std::move(heap_); }

 private:
  size_t k_;
  const IdSelector* selector_;
  std::vector<Candidate> heap_;
  float threshold_ = std::numeric_limits<float>::infinity();
};

}  // namespace quantd

#endif  // QUANTD_CORE_TOP_K_H_
