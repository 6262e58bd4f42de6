// The compute and io lanes: priorities, the background cap, draining on destruction.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include <lris/detail/thread_pool.hpp>

using namespace std::chrono_literals;
using lris::priority;
using lris::detail::thread_pool;

namespace {
// A latch the test opens: tasks that wait on it occupy their thread.
struct gate {
  std::mutex m;
  std::condition_variable cv;
  bool open = false;
  void wait() {
    std::unique_lock l(m);
    cv.wait(l, [&] { return open; });
  }
  void release() {
    {
      std::lock_guard l(m);
      open = true;
    }
    cv.notify_all();
  }
};
}  // namespace

TEST_CASE("critical work runs while background work sleeps on the pool", "[exec][pool]") {
  thread_pool pool(4, 2);
  CHECK(pool.size() == 4);
  CHECK(pool.background_threads() == 2);
  gate g;
  std::atomic<int> background_started{0};
  // More background tasks than threads, each asleep until the gate opens (a throttled
  // prefetch): they may hold at most two threads.
  for (int i = 0; i < 8; ++i) {
    pool.submit([&] {
      ++background_started;
      g.wait();
    }, priority::background);
  }
  while (background_started < 2) std::this_thread::yield();
  std::this_thread::sleep_for(20ms);
  CHECK(background_started == 2);  // the cap holds the other six back

  std::atomic<bool> critical_ran{false}, normal_ran{false};
  pool.submit([&] { critical_ran = true; }, priority::critical);
  pool.submit([&] { normal_ran = true; }, priority::normal);
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!(critical_ran && normal_ran) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  CHECK(critical_ran);
  CHECK(normal_ran);
  g.release();
}  // the destructor runs the six held-back tasks, two at a time, then joins

TEST_CASE("a free thread takes critical work before queued normal work", "[exec][pool]") {
  thread_pool pool(1);
  gate g;
  std::vector<int> order;
  std::mutex m;
  pool.submit([&] { g.wait(); });  // occupies the only thread
  for (int i = 0; i < 3; ++i) {
    pool.submit([&, i] {
      std::lock_guard l(m);
      order.push_back(10 + i);
    }, priority::normal);
  }
  pool.submit([&] {
    std::lock_guard l(m);
    order.push_back(1);
  }, priority::critical);
  pool.submit([&] {
    std::lock_guard l(m);
    order.push_back(100);
  }, priority::background);
  g.release();
  lris::detail::parallel_for(pool, 1, 1, [](std::size_t) {});  // no-op: keeps the API in use
  while (true) {
    {
      std::lock_guard l(m);
      if (order.size() == 5) break;
    }
    std::this_thread::sleep_for(1ms);
  }
  // Critical first, then normal in the order submitted, background last.
  CHECK(order == std::vector<int>{1, 10, 11, 12, 100});
}

TEST_CASE("destroying a pool finishes every task submitted, held-back ones too",
          "[exec][pool]") {
  std::atomic<int> ran{0};
  {
    thread_pool pool(2, 1);
    for (int i = 0; i < 50; ++i) {
      pool.submit([&] {
        std::this_thread::sleep_for(100us);
        ++ran;
      }, i % 2 ? priority::background : priority::normal);
    }
  }
  CHECK(ran == 50);
}

TEST_CASE("parallel_for helpers run in the lane asked for", "[exec][pool]") {
  thread_pool pool(4, 1);
  std::atomic<int> sum{0};
  lris::detail::parallel_for(pool, 100, 4, [&](std::size_t i) { sum += static_cast<int>(i); },
                             priority::background);
  CHECK(sum == 4950);
}
