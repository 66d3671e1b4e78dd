#include "server/work_queue.h"

#include <algorithm>
#include <utility>

namespace quantd {

WorkQueue::WorkQueue(int threads, int64_t capacity)
    : slots_(std::max(1, threads)), capacity_(std::max<int64_t>(0, capacity)) {
  workers_.reserve(slots_);
  for (int64_t i = 0; i < slots_; ++i) workers_.emplace_back([this] { Run(); });
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
  std::unique_lock lock(mu_);
  if (stopping_) return false;
  if (tasks_.empty() && running_ < slots_) {
    ++running_;
    lock.unlock();
    task();
    lock.lock();
    --running_;
    const bool wake = !tasks_.empty();
    lock.unlock();
    if (wake) ready_.notify_one();  // a slot freed for a waiting task
    return true;
  }
  if (static_cast<int64_t>(tasks_.size()) >= capacity_) return false;
  tasks_.push_back(std::move(task));
  lock.unlock();
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
    ready_.wait(lock, [this] {
      return (stopping_ && tasks_.empty()) || (!tasks_.empty() && running_ < slots_);
    });
    if (tasks_.empty()) return;  // stopping, and nothing left to run
    std::function<void()> task = std::move(tasks_.front());
    tasks_.pop_front();
    ++running_;
    lock.unlock();
    task();
    lock.lock();
    --running_;
    if (!tasks_.empty()) ready_.notify_one();  // another worker may take the next one
  }
}

}  // namespace quantd
