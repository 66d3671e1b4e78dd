#include "server/work_queue.h"

#include <algorithm>
#include <utility>

namespace quantd {

WorkQueue::WorkQueue(int threads, int64_t capacity) : capacity_(std::max<int64_t>(0, capacity)) {
  const int count = std::max(1, threads);
  workers_.reserve(count);
  for (int i = 0; i < count; ++i) workers_.emplace_back([this] { Run(); });
}

WorkQueue::~WorkQueue() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  ready_.notify_all();
  for (std::thread& worker : workers_) worker.join();
}

bool WorkQueue::TrySubmit(std::function<void()> task) {
  {
    std::lock_guard lock(mu_);
    // Idle workers take tasks at once; beyond them, `capacity_` may wait.
    const int64_t idle = static_cast<int64_t>(workers_.size()) - running_;
    const int64_t waiting = static_cast<int64_t>(tasks_.size());
    if (stopping_ || waiting >= capacity_ + std::max<int64_t>(0, idle)) return false;
    tasks_.push_back(std::move(task));
  }
  ready_.notify_one();
  return true;
}

int64_t WorkQueue::waiting() const {
  std::lock_guard lock(mu_);
  return static_cast<int64_t>(tasks_.size());
}

int64_t WorkQueue::running() const {
  std::lock_guard lock(mu_);
  return running_;
}

void WorkQueue::Run() {
  std::unique_lock lock(mu_);
  while (true) {
    ready_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
    if (tasks_.empty()) return;  // stopping, and nothing left to run
    std::function<void()> task = std::move(tasks_.front());
    tasks_.pop_front();
    ++running_;
    lock.unlock();
    task();
    lock.lock();
    --running_;
  }
}

}  // namespace quantd
