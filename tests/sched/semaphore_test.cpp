// bandwidth_semaphore: grants, blocking, timed and asynchronous acquires, head-of-line order,
// weighted shares on a simulated resource with a fake clock, no starvation, and a threaded
// stress run (under ThreadSanitizer in CI).
#include <catch2/catch.hpp>

#include "support/sanitized.hpp"
#include "support/what_contains.hpp"

#include <atomic>
#include <chrono>
#include <map>
#include <random>
#include <thread>
#include <vector>

#include <lris/error.hpp>
#include <lris/sched/bandwidth_semaphore.hpp>

using lris::sched::bandwidth_semaphore;
using lris::sched::priority;
using lris::sched::token_guard;
using namespace std::chrono_literals;

TEST_CASE("semaphore: grants while tokens last, and takes them back", "[sched]") {
  bandwidth_semaphore s(100);
  token_guard a = s.try_acquire(60);
  REQUIRE(a);
  CHECK(a.bytes() == 60);
  CHECK_FALSE(s.try_acquire(50));
  CHECK(s.stats().in_flight == 60);
  a.release();
  CHECK(s.stats().in_flight == 0);
  token_guard b = s.try_acquire(50);
  CHECK(b);
  {
    token_guard moved = std::move(b);
    CHECK_FALSE(b);
    CHECK(s.stats().in_flight == 50);
  }
  CHECK(s.stats().in_flight == 0);
  // More than the capacity: the whole capacity, once nothing else is in flight.
  token_guard all = s.try_acquire(1000, priority::background);
  CHECK(all.bytes() == 100);
  CHECK(s.stats().granted_bytes[2] == 100);
  CHECK_THROWS_MATCHES(bandwidth_semaphore(0), lris::invalid_argument,
                       lris::test::what_contains("capacity of 0"));
  CHECK_THROWS_AS(bandwidth_semaphore(10, {.weight = {1, 0, 1}}), lris::invalid_argument);
}

TEST_CASE("semaphore: blocking, timed and asynchronous acquires", "[sched]") {
  bandwidth_semaphore s(100);
  token_guard held = s.acquire(80);
  std::atomic<bool> got{false};
  std::thread t([&] {
    token_guard g = s.acquire(50, priority::critical);
    got = g.bytes() == 50;
  });
  std::this_thread::sleep_for(20ms);
  CHECK_FALSE(got);
  held.release();
  t.join();
  CHECK(got);

  held = s.acquire(80);
  const auto start = std::chrono::steady_clock::now();
  CHECK_FALSE(s.try_acquire_for(50, priority::normal, 20ms));
  CHECK(std::chrono::steady_clock::now() - start >= 20ms);
  CHECK(s.stats().timeouts == 1);
  CHECK(s.stats().waiting == 0);

  token_guard later;
  bool called = false;
  s.acquire_async(50, priority::normal, [&](token_guard g) {
    called = true;
    later = std::move(g);
  });
  CHECK_FALSE(called);
  held.release();  // the release grants it, on this thread
  CHECK(called);
  CHECK(later.bytes() == 50);
  s.acquire_async(10, priority::normal, [&](token_guard g) { CHECK(g.bytes() == 10); });
  CHECK(s.stats().in_flight == 50);
}

TEST_CASE("semaphore: spinning waiters get their tokens, sleep after the spin, and time out",
          "[sched]") {
  bandwidth_semaphore s(100);
  token_guard held = s.acquire(80);
  // Released while the waiter spins.
  std::atomic<bool> got{false};
  std::thread t([&] { got = s.acquire(50, priority::critical, 1s).bytes() == 50; });
  std::this_thread::sleep_for(5ms);
  CHECK_FALSE(got);
  held.release();
  t.join();
  CHECK(got);
  // Released long after a short spin: the waiter sleeps and is woken.
  held = s.acquire(80);
  got = false;
  std::thread u([&] { got = s.acquire(50, priority::normal, 100us).bytes() == 50; });
  std::this_thread::sleep_for(20ms);
  CHECK_FALSE(got);
  held.release();
  u.join();
  CHECK(got);
  // A spin longer than the timeout ends with it, and leaves the queue clean.
  held = s.acquire(80);
  const auto start = std::chrono::steady_clock::now();
  CHECK_FALSE(s.try_acquire_for(50, priority::normal, 10ms, 1s));
  const auto took = std::chrono::steady_clock::now() - start;
  CHECK(took >= 10ms);
  CHECK(took < 500ms);
  CHECK(s.stats().waiting == 0);
  held.release();
  CHECK(s.try_acquire(100));
}

TEST_CASE("semaphore: the head of a queue is not passed by smaller requests", "[sched]") {
  bandwidth_semaphore s(100);
  token_guard held = s.acquire(60);
  std::vector<int> order;
  token_guard big, small;
  s.acquire_async(95, priority::normal, [&](token_guard g) { order.push_back(95); big = std::move(g); });
  s.acquire_async(10, priority::normal, [&](token_guard g) { order.push_back(10); small = std::move(g); });
  CHECK(order.empty());  // 10 would fit, but 95 is ahead
  held.release();
  REQUIRE(order.size() == 1);
  CHECK(order[0] == 95);
  big.release();
  CHECK(order == std::vector<int>{95, 10});
}

namespace {

// A resource on a fake clock: each grant holds its tokens for bytes / bandwidth seconds. Every
// active priority keeps three capacities' worth of requests outstanding; returns the bytes
// granted per priority after a warm-up, until `horizon` seconds.
std::array<double, 3> simulate(std::uint64_t capacity, const lris::sched::semaphore_options& o,
                               unsigned seed, double horizon, std::array<bool, 3> active) {
  bandwidth_semaphore s(capacity, o);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::uint64_t> size(256 << 10, 8 << 20);
  constexpr double bandwidth = 25e9;
  double now = 0;
  std::multimap<double, std::pair<token_guard, int>> done;
  std::array<double, 3> granted{};
  bool stopping = false;
  auto request = [&](int p) {
    s.acquire_async(size(rng), static_cast<priority>(p), [&, p](token_guard g) {
      if (stopping) return;  // the guard goes back at once
      if (now > horizon / 10) granted[p] += static_cast<double>(g.bytes());
      const double end = now + static_cast<double>(g.bytes()) / bandwidth;
      done.emplace(end, std::make_pair(std::move(g), p));
    });
  };
  // Each priority asks for three times the capacity: tokens are always short.
  const std::uint64_t backlog = 3 * capacity / (4 << 20) + 4;
  for (int p = 0; p < 3; ++p) {
    for (std::uint64_t k = 0; active[p] && k < backlog; ++k) request(p);
  }
  while (!done.empty() && now < horizon) {
    auto it = done.begin();
    now = it->first;
    auto [guard, p] = std::move(it->second);
    done.erase(it);
    guard.release();  // grants waiters, whose callbacks schedule their ends
    request(p);
  }
  stopping = true;
  while (!done.empty()) done.erase(done.begin());  // each release grants and drops the next
  return granted;
}

}  // namespace

TEST_CASE("semaphore: shares follow the weights on a fake clock, over many random runs",
          "[sched]") {
  std::mt19937 pick(7);
  const int runs = lris::test::sanitized ? 6 : 40;
  for (int run = 0; run < runs; ++run) {
    const std::uint64_t capacity = std::uint64_t{16 + pick() % 113} << 20;
    lris::sched::semaphore_options o;
    o.weight[0] = 1 + pick() % 64;
    o.weight[1] = 1 + pick() % 16;
    o.weight[2] = 1 + pick() % 4;
    CAPTURE(run, capacity, o.weight[0], o.weight[1], o.weight[2]);
    const auto g = simulate(capacity, o, 1000 + run, 4.0, {true, true, true});
    const double total = g[0] + g[1] + g[2];
    const double wsum = o.weight[0] + o.weight[1] + o.weight[2];
    for (int p = 0; p < 3; ++p) {
      CAPTURE(p, g[p] / total);
      const double want = o.weight[p] / wsum;
      CHECK(std::abs(g[p] / total - want) <= 0.05 * want);
    }
  }
}

TEST_CASE("semaphore: background work moves while critical work saturates", "[sched]") {
  const lris::sched::semaphore_options o;  // 64 : 8 : 1
  const auto g = simulate(64 << 20, o, 3, 2.0, {true, false, true});
  CHECK(g[2] > 0);
  CHECK(std::abs(g[2] / (g[0] + g[2]) - 1.0 / 65) <= 0.05 / 65);
  // Alone, a priority takes everything.
  const auto alone = simulate(64 << 20, o, 4, 1.0, {false, false, true});
  CHECK(alone[0] == 0);
  CHECK(alone[2] > 0);
}

TEST_CASE("semaphore: threads acquiring every way at once", "[sched]") {
  constexpr std::uint64_t capacity = 1000;
  bandwidth_semaphore s(capacity);
  std::atomic<std::uint64_t> held{0};
  std::atomic<bool> over{false};
  std::atomic<unsigned> async_done{0}, async_asked{0};
  auto hold = [&](token_guard& g) {
    if (!g) return;
    if (held.fetch_add(g.bytes()) + g.bytes() > capacity) over = true;
    std::this_thread::yield();
    held.fetch_sub(g.bytes());
    g.release();
  };
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int i = 0; i < 1500; ++i) {
        const std::uint64_t bytes = 1 + rng() % 400;
        const auto p = static_cast<priority>(rng() % 3);
        token_guard g;
        switch (rng() % 4) {
          case 0: g = s.acquire(bytes, p, i % 2 == 0 ? 50us : 0us); break;
          case 1: g = s.try_acquire(bytes, p); break;
          case 2: g = s.try_acquire_for(bytes, p, 100us, i % 3 == 0 ? 200us : 0us); break;
          default:
            ++async_asked;
            s.acquire_async(bytes, p, [&](token_guard a) {
              hold(a);
              ++async_done;
            });
        }
        hold(g);
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK_FALSE(over);
  CHECK(async_done == async_asked);
  const auto st = s.stats();
  CHECK(st.in_flight == 0);
  CHECK(st.waiting == 0);
}
