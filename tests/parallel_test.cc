// core/parallel.h: the one parallel loop of core honours the thread count it is given.
#include "core/parallel.h"

#include <atomic>
#include <cstdint>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace quantd {
namespace {

TEST(ParallelForTest, OneWorkerRunsEveryTaskOnTheCallerInOrder) {
  std::vector<int64_t> order;
  std::vector<std::thread::id> threads;
  ParallelFor(100, ResolveThreads(1), [&](int64_t task) {
    order.push_back(task);
    threads.push_back(std::this_thread::get_id());
  });
  ASSERT_EQ(order.size(), 100u);
  for (int64_t t = 0; t < 100; ++t) EXPECT_EQ(order[t], t);
  for (const std::thread::id& id : threads) EXPECT_EQ(id, std::this_thread::get_id());
}

TEST(ParallelForTest, EveryTaskRunsOnceOnAWorkerInRange) {
  constexpr int64_t kTasks = 1000;
  constexpr int kWorkers = 4;
  std::vector<std::atomic<int>> runs(kTasks);
  std::vector<std::atomic<int>> by_worker(kWorkers);
  std::mutex mu;
  std::set<std::thread::id> threads;  // guarded by mu
  std::atomic<bool> worker_out_of_range{false};
  ParallelFor(kTasks, kWorkers, [&](int64_t task, int worker) {
    ++runs[task];
    if (worker < 0 || worker >= kWorkers) {
      worker_out_of_range = true;
      return;
    }
    ++by_worker[worker];
    std::lock_guard<std::mutex> lock(mu);
    threads.insert(std::this_thread::get_id());
  });
  for (int64_t t = 0; t < kTasks; ++t) EXPECT_EQ(runs[t].load(), 1) << t;
  EXPECT_FALSE(worker_out_of_range);
  EXPECT_LE(threads.size(), static_cast<size_t>(kWorkers));
  int total = 0;
  for (const auto& count : by_worker) total += count.load();
  EXPECT_EQ(total, kTasks);
}

TEST(ParallelForTest, NoMoreWorkersThanTasks) {
  std::atomic<int> highest_worker{-1};
  ParallelFor(2, 8, [&](int64_t, int worker) {
    for (int seen = highest_worker.load(); worker > seen;) {
      if (highest_worker.compare_exchange_weak(seen, worker)) break;
    }
  });
  EXPECT_LE(highest_worker.load(), 1);
  int calls = 0;
  ParallelFor(0, 4, [&](int64_t) { ++calls; });
  EXPECT_EQ(calls, 0);
}

TEST(ParallelWorkersTest, ClampsToTasksAndResolvesZero) {
  EXPECT_EQ(ResolveThreads(3), 3);
  EXPECT_GE(ResolveThreads(0), 1);
  EXPECT_EQ(ParallelWorkers(1, 1000), 1);
  EXPECT_EQ(ParallelWorkers(8, 3), 3);
  EXPECT_EQ(ParallelWorkers(8, 0), 1);
  EXPECT_EQ(ParallelWorkers(0, 1), 1);
  EXPECT_EQ(ParallelWorkers(0, 1 << 20), ResolveThreads(0));
}

}  // namespace
}  // namespace quantd
