// The one fork-join loop of core: independent tasks over std::threads started per call (no pool:
// callers run it per batch or per Lloyd step, where thread start-up is small next to the work).
// Every parallel loop in core goes through ParallelFor with the caller's num_threads, so a
// num_threads of 1 keeps all of core's work on the calling thread.
#ifndef QUANTD_CORE_PARALLEL_H_
#define QUANTD_CORE_PARALLEL_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <system_error>
#include <thread>
#include <type_traits>
#include <vector>

namespace quantd {

// num_threads, or the hardware concurrency when it is 0 (at least 1). num_threads >= 0.
inline int ResolveThreads(int num_threads) {
  if (num_threads > 0) return num_threads;
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// Workers worth starting for num_tasks tasks: ResolveThreads(num_threads), at most one a task,
// at least 1. What to size per-worker scratch by.
inline int ParallelWorkers(int num_threads, int64_t num_tasks) {
  return static_cast<int>(
      std::clamp<int64_t>(ResolveThreads(num_threads), 1, std::max<int64_t>(num_tasks, 1)));
}

// Runs body(task) for every task in [0, num_tasks) on up to `workers` threads, the caller being
// one of them (workers <= 1: all on the caller, in order). A body taking (task, worker) also gets
// the worker running it, in [0, min(workers, num_tasks)), for per-worker scratch. Tasks are
// handed out in increasing order, dynamically: results must not depend on which worker runs a
// task. If the system refuses a thread, the workers already started share the tasks.
template <typename Body>
void ParallelFor(int64_t num_tasks, int workers, const Body& body) {
  const auto call = [&body](int64_t task, int worker) {
    if constexpr (std::is_invocable_v<const Body&, int64_t, int>) {
      body(task, worker);
    } else {
      body(task);
    }
  };
  workers = static_cast<int>(std::min<int64_t>(workers, num_tasks));
  if (workers <= 1) {
    for (int64_t t = 0; t < num_tasks; ++t) call(t, 0);
    return;
  }
  std::atomic<int64_t> next{0};
  const auto run = [&](int worker) {
    for (int64_t t = next.fetch_add(1); t < num_tasks; t = next.fetch_add(1)) call(t, worker);
  };
  std::vector<std::thread> threads;
  try {
    threads.reserve(static_cast<size_t>(workers - 1));
    for (int w = 1; w < workers; ++w) threads.emplace_back(run, w);
  } catch (const std::system_error&) {
    // Out of threads: the ones started (and this one) share the tasks all the same.
  }
  run(0);
  for (std::thread& thread : threads) thread.join();
}

}  // namespace quantd

#endif  // QUANTD_CORE_PARALLEL_H_
