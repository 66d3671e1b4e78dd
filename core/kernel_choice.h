// The SIMD kernel a family of scans runs (fast-scan, the 8-bit scan): the fastest one this CPU
// supports, unless a test or benchmark chose another. One per family, shared by all threads.
#ifndef QUANTD_CORE_KERNEL_CHOICE_H_
#define QUANTD_CORE_KERNEL_CHOICE_H_

#include <atomic>

namespace quantd {

// Kernel: the family's enum. best() names its fastest supported kernel; supported(k) whether
// this CPU (and OS) runs k.
template <typename Kernel>
class KernelChoice {
 public:
  constexpr KernelChoice(Kernel (*best)(), bool (*supported)(Kernel))
      : best_(best), supported_(supported) {}

  // best() until Set chose another (computed once).
  Kernel Active() {
    int k = chosen_.load(std::memory_order_relaxed);
    if (k < 0) {
      k = static_cast<int>(best_());
      chosen_.store(k, std::memory_order_relaxed);
    }
    return static_cast<Kernel>(k);
  }
  // False (and nothing changes) when the CPU does not run `kernel`. Not meant to be called while
  // scans run.
  bool Set(Kernel kernel) {
    if (!supported_(kernel)) return false;
    chosen_.store(static_cast<int>(kernel), std::memory_order_relaxed);
    return true;
  }

 private:
  Kernel (*best_)();
  bool (*supported_)(Kernel);
  std::atomic<int> chosen_{-1};  // -1: not chosen yet
};

}  // namespace quantd

#endif  // QUANTD_CORE_KERNEL_CHOICE_H_
