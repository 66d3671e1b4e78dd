// A fixed pool of threads with a bounded queue, for the serving RPCs whose work is CPU-bound
// (Search, Encode): gRPC's own threads only hand the call over, and when the queue is full the
// call is refused at once (RESOURCE_EXHAUSTED) instead of memory and latency growing without
// bound.
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
  // `threads` workers (at least 1); beyond the tasks idle workers are about to take, at most
  // `capacity` tasks wait.
  WorkQueue(int threads, int64_t capacity);
  ~WorkQueue();  // runs every task already queued, then joins the workers
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  // Queues `task`; false (and `task` dropped) when no worker is idle and `capacity` tasks are
  // already waiting.
  bool TrySubmit(std::function<void()> task);

  int threads() const { return static_cast<int>(workers_.size()); }
  int64_t capacity() const { return capacity_; }
  int64_t waiting() const;  // tasks queued, not yet started
  int64_t running() const;  // tasks being run

 private:
  void Run();

  const int64_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> tasks_;  // guarded by mu_
  int64_t running_ = 0;                      // guarded by mu_
  bool stopping_ = false;                    // guarded by mu_
  std::vector<std::thread> workers_;
};

}  // namespace quantd

#endif  // QUANTD_SERVER_WORK_QUEUE_H_
