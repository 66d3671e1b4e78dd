// Bounded execution for the serving RPCs whose work is CPU-bound (the methods registered with
// RunOn::kServingPool in server/rpc.h: Search, Encode, GetStats): at most `threads` tasks run at
// once. A task runs at once on the calling thread (gRPC's) when a slot is free and none waits,
// which costs no hand-off; otherwise it waits for a worker thread, and when `capacity` tasks
// already wait it is refused at once (the caller answers RESOURCE_EXHAUSTED)
// instead of memory and latency growing without bound.
#ifndef QUANTD_SERVER_WORK_QUEUE_H_
#define QUANTD_SERVER_WORK_QUEUE_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace quantd {

class WorkQueue {
 public:
  // `threads` slots and worker threads (at least 1); at most `capacity` tasks wait.
  WorkQueue(int threads, int64_t capacity);
  ~WorkQueue();  // runs every task already queued, then joins the workers
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  // Runs `task` now on this thread if a slot is free and nothing waits; else queues it for a
  // worker if fewer than `capacity` tasks wait; else returns false (and drops `task`).
  bool TrySubmit(std::function<void()> task);

  int threads() const { return static_cast<int>(slots_); }
  int64_t capacity() const { return capacity_; }
  int64_t waiting() const;  // tasks queued, not yet started
  int64_t running() const;  // tasks being run, inline or by workers

 private:
  void Run();

  const int64_t slots_;  // tasks that may run at once, and worker threads
  const int64_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable ready_;            // a task waits and a slot may be free, or stopping
  std::deque<std::function<void()>> tasks_;  // guarded by mu_
  int64_t running_ = 0;                      // guarded by mu_; at most slots_
  bool stopping_ = false;                    // guarded by mu_
  std::vector<std::thread> workers_;
};

}  // namespace quantd

#endif  // QUANTD_SERVER_WORK_QUEUE_H_
