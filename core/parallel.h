// A minimal fork-join loop over independent tasks with std::thread (no pool: callers run it
// per batch, where thread start-up is small next to the work).
#ifndef QUANTD_CORE_PARALLEL_H_
#define QUANTD_CORE_PARALLEL_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <system_error>
#include <thread>
#include <vector>

namespace quantd {

// num_threads, or the hardware concurrency when it is 0 (at least 1).
inline int ResolveThreads(int num_threads) {
  if (num_threads > 0) return num_threads;
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// Runs body(task) for every task in [0, num_tasks) on up to `workers` threads (the caller is
// one of them). Tasks are handed out in increasing order; body must not depend on which thread
// runs a task.
template <typename Body>
void ParallelFor(int64_t num_tasks, int workers, const Body& body) {
  workers = static_cast<int>(std::min<int64_t>(workers, num_tasks));
  if (workers <= 1) {
    for (int64_t t = 0; t < num_tasks; ++t) body(t);
    return;
  }
  std::atomic<int64_t> next{0};
  auto run = [&] {
    for (int64_t t = next.fetch_add(1); t < num_tasks; t = next.fetch_add(1)) body(t);
  };
  std::vector<std::thread> threads;
  try {
    threads.reserve(static_cast<size_t>(workers - 1));
    for (int w = 1; w < workers; ++w) threads.emplace_back(run);
  } catch (const std::system_error&) {
    // Out of threads: the ones started (and this one) share the tasks all the same.
  }
  run();
  for (std::thread& thread : threads) thread.join();
}

}  // namespace quantd

#endif  // QUANTD_CORE_PARALLEL_H_
