// broker: the registry and capacities, tokens given back only when device work is done,
// shared budgets, and pipelines taking tokens around their chunks (host backend): the budget
// is never exceeded, a transfer's own budget holds, critical work overtakes background work,
// the throttle's decisions are taken and counted, and results stay byte-exact.
#include <catch2/catch.hpp>

#include "support/what_contains.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>
#include <vector>

#include <lris/lris.hpp>

using namespace lris;
using namespace std::chrono_literals;
using sched::priority;
using sched::bandwidth_broker;
using sched::broker_options;
using sched::throttle_action;
using lris::test::what_contains;

namespace {

constexpr std::size_t MiB = std::size_t{1} << 20;
const std::string h2d = sched::link_resource("host:0", true);

broker_options with_ceiling(double gbps, std::chrono::microseconds in_flight = 250us) {
  broker_options o;
  o.ceilings[h2d] = gbps;
  o.in_flight = in_flight;
  o.min_capacity = MiB;
  return o;
}

using pipe_t = pipeline<direct, host_backend>;
using staged_t = pipeline<staged, host_backend>;

template <class P = pipe_t>
P make_pipe(std::shared_ptr<bandwidth_broker> s) {
  pipeline_config c;
  c.broker = std::move(s);
  return P({}, {}, {}, std::move(c));
}

// Samples a resource's tokens in flight until stopped; keeps the largest.
struct in_flight_probe {
  in_flight_probe(bandwidth_broker& s, std::size_t r) : thread([&s, r, this] {
    while (!stop) {
      peak = std::max<std::uint64_t>(peak, s.status(r).in_flight);
      std::this_thread::yield();
    }
  }) {}
  ~in_flight_probe() { finish(); }
  std::uint64_t finish() {
    stop = true;
    if (thread.joinable()) thread.join();
    return peak;
  }
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> peak{0};
  std::thread thread;
};

}  // namespace

TEST_CASE("broker: resources are registered once, with capacities from their ceilings") {
  auto o = with_ceiling(40.0);  // 40 GB/s x 250 us = 10 MB in flight
  o.unknown_capacity = 3 * MiB;
  bandwidth_broker s(o);
  const auto r = s.resource(h2d);
  CHECK(s.resource(h2d) == r);
  CHECK(s.name(r) == h2d);
  CHECK(s.capacity(r) == 10'000'000);
  const auto unknown = s.resource("disk 9:9");
  CHECK(s.capacity(unknown) == 3 * MiB);
  const auto given = s.resource("cuda:7 d2h", 2.0);  // 2 GB/s x 250 us = 0.5 MB: the minimum
  CHECK(s.capacity(given) == MiB);
  CHECK(s.resource_count() == 3);
  REQUIRE_THROWS_MATCHES(s.capacity(17), invalid_argument, what_contains("no resource 17"));
  REQUIRE_THROWS_AS(s.resource(""), invalid_argument);
}

TEST_CASE("broker: bad options are refused") {
  broker_options o;
  o.min_capacity = 0;
  REQUIRE_THROWS_AS(bandwidth_broker(o), invalid_argument);
  broker_options t;
  t.throttle.low = 0.99;
  REQUIRE_THROWS_AS(bandwidth_broker(t), invalid_argument);
  broker_options w;
  w.semaphore.weight[1] = 0;
  REQUIRE_THROWS_AS(bandwidth_broker(w), invalid_argument);
}

TEST_CASE("broker: tokens of device work come back when the work is done, and count as moved") {
  bandwidth_broker s(with_ceiling(4.0));  // 1 MB
  const auto r = s.resource(h2d);
  std::atomic<bool> done{false};
  s.release_when([&] { return done.load(); }, s.acquire(r, 600'000, priority::normal), r);
  CHECK(s.status(r).in_flight == 600'000);
  CHECK(s.pending() == 1);
  std::this_thread::sleep_for(5ms);
  CHECK(s.status(r).in_flight == 600'000);  // still held: the work is not done
  done = true;
  for (int i = 0; i < 1000 && s.pending() > 0; ++i) std::this_thread::sleep_for(1ms);
  CHECK(s.pending() == 0);
  const auto st = s.status(r);
  CHECK(st.in_flight == 0);
  CHECK(st.bytes == 600'000);
  CHECK(st.grants[1] == 1);

  // A readiness check that throws counts as done: the tokens are not lost.
  s.release_when([]() -> bool { throw std::runtime_error("query failed"); },
                 s.acquire(r, 1000, priority::critical), r);
  for (int i = 0; i < 1000 && s.pending() > 0; ++i) std::this_thread::sleep_for(1ms);
  CHECK(s.status(r).in_flight == 0);
}

TEST_CASE("broker: a waiting acquire is counted, and the destructor waits for pending work") {
  auto s = std::make_unique<bandwidth_broker>(with_ceiling(4.0));
  const auto r = s->resource(h2d);
  auto held = s->acquire(r, s->capacity(r), priority::background);
  std::atomic<bool> got{false};
  std::thread t([&] {
    auto g = s->acquire(r, 1, priority::critical);
    got = true;
  });
  std::this_thread::sleep_for(10ms);
  CHECK_FALSE(got.load());
  held.release();
  t.join();
  CHECK(s->status(r).waits[0] == 1);
  std::atomic<int> polls{0};
  s->release_when([&] { return ++polls > 20; }, s->acquire(r, 10, priority::normal), r);
  s.reset();  // returns only after the work is done
  CHECK(polls.load() > 20);
}

TEST_CASE("broker: a resource's external measure shows in its status and utilization") {
  broker_options o = with_ceiling(40.0);
  o.monitor.external_period = 1ms;
  bandwidth_broker s(o);
  const auto r = s.resource(h2d, 0, [] { return std::optional<double>(10.0); });
  const auto again = s.resource(h2d, 0, [] { return std::optional<double>(99.0); });  // no change
  CHECK(again == r);
  auto st = s.status(r);
  for (int i = 0; i < 2000 && !st.external; ++i) {
    std::this_thread::sleep_for(1ms);
    st = s.status(r);
  }
  REQUIRE(st.external);
  CHECK(st.external_gbps == Approx(10.0));
  CHECK(st.utilization == Approx(0.25));
  CHECK_FALSE(s.status(s.resource(sched::host_resource())).external);
}

TEST_CASE("broker: try_acquire takes only free tokens, the budget's too") {
  bandwidth_broker s(with_ceiling(4.0));  // 1 MB
  const auto r = s.resource(h2d);
  auto t = s.try_acquire(r, 600'000, priority::normal);
  CHECK(t.bytes() == 600'000);
  CHECK(s.try_acquire(r, 600'000, priority::critical).bytes() == 0);  // 400 kB left
  CHECK(s.status(r).in_flight == 600'000);
  auto budget = std::make_shared<sched::bandwidth_semaphore>(100'000);
  auto small = s.try_acquire(r, 50'000, priority::normal, budget);
  CHECK(small.bytes() == 50'000);
  CHECK(s.try_acquire(r, 60'000, priority::normal, budget).bytes() == 0);  // over the budget
  CHECK(budget->stats().in_flight == 50'000);
  CHECK(s.status(r).in_flight == 650'000);
  t.release();
  small.release();
  CHECK(budget->stats().in_flight == 0);
  const auto st = s.status(r);
  CHECK(st.in_flight == 0);
  CHECK(st.grants[1] == 2);
  CHECK(st.waits[1] == 0);
}

TEST_CASE("broker: tokens moved hold their bytes once; the moved-from hold none") {
  bandwidth_broker s(with_ceiling(4.0));  // 1 MB
  const auto r = s.resource(h2d);
  auto t = s.try_acquire(r, 600'000, priority::normal);
  sched::resource_tokens moved(std::move(t));
  CHECK(t.bytes() == 0);  // NOLINT(bugprone-use-after-move): the point of the test
  CHECK(moved.bytes() == 600'000);
  t.release();  // nothing: they moved
  CHECK(s.status(r).in_flight == 600'000);
  sched::resource_tokens again;
  again = std::move(moved);
  CHECK(moved.bytes() == 0);  // NOLINT(bugprone-use-after-move)
  CHECK(again.bytes() == 600'000);
  again.release();
  CHECK(s.status(r).in_flight == 0);
}

TEST_CASE("broker: work of one order is asked after the work before it is done") {
  bandwidth_broker s(with_ceiling(4.0));
  const auto r = s.resource(h2d);
  const int stream = 0, other = 0;  // addresses as orders
  std::atomic<bool> first_done{false};
  std::atomic<int> second_asked{0}, other_asked{0};
  s.release_when([&] { return first_done.load(); }, s.acquire(r, 100, priority::normal), r, &stream);
  s.release_when([&] { return ++second_asked > 0; }, s.acquire(r, 100, priority::normal), r, &stream);
  s.release_when([&] { return ++other_asked > 0; }, s.acquire(r, 100, priority::normal), r, &other);
  for (int i = 0; i < 1000 && other_asked == 0; ++i) std::this_thread::sleep_for(1ms);
  std::this_thread::sleep_for(5ms);
  CHECK(other_asked > 0);  // another order goes on
  CHECK(second_asked == 0);  // not asked while the first of its order is not done
  CHECK(s.status(r).in_flight == 200);
  first_done = true;
  for (int i = 0; i < 1000 && s.pending() > 0; ++i) std::this_thread::sleep_for(1ms);
  CHECK(second_asked > 0);
  CHECK(s.status(r).in_flight == 0);
}

TEST_CASE("broker: a shared name gives brokers one budget") {
  broker_options o = with_ceiling(4.0);
  o.shared_name = "lris-test-sched-" + std::to_string(::getpid());

  {
    bandwidth_broker a(o), b(o);
    const auto ra = a.resource(h2d), rb = b.resource(h2d);
    auto t = a.acquire(ra, 700'000, priority::normal);
    const auto st = b.status(rb);
    CHECK(st.shared);
    CHECK(st.in_flight == 700'000);
  }
  bandwidth_broker::remove_shared(o.shared_name, h2d);
}

TEST_CASE("pipelines: transfers never exceed the budget and land byte-exact") {
  auto s = std::make_shared<bandwidth_broker>(with_ceiling(8.0));  // 2 MB in flight
  auto direct_pipe = make_pipe(s);
  auto staged_pipe = make_pipe<staged_t>(s);
  REQUIRE(direct_pipe.broker() == s);
  const auto link = s->resource(h2d);
  const auto cap = s->capacity(link);
  REQUIRE(cap == 2'000'000);
  constexpr std::size_t n = 24 * MiB;
  host_backend be;
  std::vector<std::byte*> dev;
  std::vector<std::byte*> pin;
  std::vector<std::vector<std::byte>> pageable;
  for (int i = 0; i < 4; ++i) {
    dev.push_back(static_cast<std::byte*>(be.allocate_device(n)));
    pin.push_back(static_cast<std::byte*>(be.allocate_pinned(n)));
    std::memset(pin.back(), 0x10 + i, n);
    pageable.emplace_back(n, std::byte(0x70 + i));
  }
  in_flight_probe probe(*s, link);
  std::vector<std::thread> threads;
  const priority prios[] = {priority::critical, priority::normal, priority::background,
                            priority::background};
  std::vector<transfer_stats> stats(4);
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      transfer_options o{.priority = prios[i]};
      for (int k = 0; k < 3; ++k) {
        if (i % 2 == 0) {
          stats[i] = direct_pipe.copy(device_span<host_backend>(dev[i], n),
                                      pinned_span<host_backend>(pin[i], n), o).wait();
        } else {
          stats[i] = staged_pipe.copy(device_span<host_backend>(dev[i], n),
                                      as_host<const std::byte>(pageable[i].data(), n), o).wait();
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  const std::uint64_t peak = probe.finish();
  CHECK(peak > 0);
  CHECK(peak <= cap);
  for (int i = 0; i < 4; ++i) {
    const std::byte want = i % 2 == 0 ? std::byte(0x10 + i) : std::byte(0x70 + i);
    CHECK(std::all_of(dev[i], dev[i] + n, [&](std::byte b) { return b == want; }));
    CHECK(stats[i].priority == prios[i]);
  }
  std::uint64_t waited = 0;
  for (const auto& st : stats) waited += st.token_waits;
  CHECK(waited > 0);  // 4 x 24 MiB through 2 MB: someone waited
  const auto st = s->status(link);
  CHECK(st.grants[0] > 0);
  CHECK(st.grants[1] > 0);
  CHECK(st.grants[2] > 0);
  for (int i = 0; i < 4; ++i) {
    be.deallocate_device(dev[i], n);
    be.deallocate_pinned(pin[i], n);
  }
}

TEST_CASE("pipelines: a copy whose tokens are free starts at once; one that must wait goes on "
          "when they come back") {
  auto s = std::make_shared<bandwidth_broker>(with_ceiling(8.0));  // 2 MB in flight, 1 MiB pieces
  auto p = make_pipe(s);
  const auto link = s->resource(h2d);
  buffer<pinned_allocator<host_backend>> src(4 * MiB);
  buffer<device_allocator<host_backend>> dst(4 * MiB);
  std::memset(src.data(), 0x3d, src.size());
  const auto exact = [&](std::size_t n, std::byte b) {
    return std::all_of(dst.data(), dst.data() + n, [b](std::byte x) { return x == b; });
  };
  // Fits the free tokens: every piece queued by copy() itself.
  auto st = p.copy(dst.span().subspan(0, MiB), src.span().subspan(0, MiB),
                   {.priority = priority::critical}).wait();
  CHECK(st.path == transfer_path::direct);
  CHECK(st.token_waits == 0);
  CHECK(exact(MiB, std::byte(0x3d)));
  // Every token held elsewhere: copy() queues nothing and returns; the rest waits for them.
  std::memset(src.data(), 0x4e, src.size());
  std::memset(dst.data(), 0, dst.size());
  auto held = s->acquire(link, s->capacity(link), priority::background);
  auto t = p.copy(dst.span(), src.span());
  std::this_thread::sleep_for(20ms);
  CHECK_FALSE(t.poll());
  CHECK(exact(4 * MiB, std::byte(0)));  // nothing moved
  held.release();
  st = t.wait();  // goes on with the rest on this thread, unless a pool thread has begun it
  CHECK(st.token_waits > 0);
  CHECK(st.bytes == 4 * MiB);
  CHECK(exact(4 * MiB, std::byte(0x4e)));
  // Nobody waits: a pool thread goes on when the tokens come back.
  std::memset(src.data(), 0x5f, src.size());
  held = s->acquire(link, s->capacity(link), priority::background);
  t = p.copy(dst.span(), src.span());
  std::this_thread::sleep_for(5ms);
  held.release();
  for (int i = 0; i < 5000 && !t.poll(); ++i) std::this_thread::sleep_for(1ms);
  CHECK(t.poll());
  CHECK(t.wait().bytes == 4 * MiB);
  CHECK(exact(4 * MiB, std::byte(0x5f)));
  for (int i = 0; i < 1000 && s->pending() > 0; ++i) std::this_thread::sleep_for(1ms);
  CHECK(s->status(link).in_flight == 0);
}

TEST_CASE("pipelines: a transfer's own budget caps its bytes in flight") {
  auto s = std::make_shared<bandwidth_broker>(broker_options{});  // unknown ceilings: 1 GiB
  auto p = make_pipe(s);
  const auto link = s->resource(h2d);
  constexpr std::size_t n = 64 * MiB;
  buffer<pinned_allocator<host_backend>> src(n);
  buffer<device_allocator<host_backend>> dst(n);
  std::memset(src.data(), 0x5c, n);
  in_flight_probe probe(*s, link);
  const auto st = p.copy(dst.span(), src.span(), {.budget_bytes = 3 * MiB}).wait();
  const std::uint64_t peak = probe.finish();
  CHECK(st.chunks > 1);
  CHECK(peak > 0);
  CHECK(peak <= 3 * MiB);
  CHECK(std::all_of(dst.data(), dst.data() + n, [](std::byte b) { return b == std::byte(0x5c); }));
}

TEST_CASE("pipelines: critical work overtakes background work queued before it") {
  auto s = std::make_shared<bandwidth_broker>(with_ceiling(8.0));
  auto p = make_pipe(s);
  const auto link = s->resource(h2d);
  constexpr std::size_t n = 32 * MiB;
  buffer<pinned_allocator<host_backend>> a(n), b(n);
  buffer<device_allocator<host_backend>> da(n), db(n);
  // Everything is held: both transfers queue for their first piece.
  auto all = s->acquire(link, s->capacity(link), priority::normal);
  auto bg = p.copy(da.span(), a.span(), {.priority = priority::background});
  std::this_thread::sleep_for(20ms);
  auto crit = p.copy(db.span(), b.span(), {.priority = priority::critical});
  std::this_thread::sleep_for(20ms);
  all.release();
  (void)crit.wait();
  CHECK_FALSE(bg.poll());  // 32 MiB of critical pieces went first (weights 64 : 1)
  (void)bg.wait();
}

TEST_CASE("pipelines: on a congested link, lower priorities give way and it is counted") {
  // A ceiling so low that any traffic saturates it; short delays keep the test quick.
  auto o = with_ceiling(0.001);
  o.throttle.max_delay = 5ms;
  o.throttle.enabled = true;
  o.throttle.window = 20ms;
  o.throttle.fallback = true;
  auto s = std::make_shared<bandwidth_broker>(o);
  auto p = make_pipe(s);
  constexpr std::size_t n = 4 * MiB;
  buffer<pinned_allocator<host_backend>> src(n), src2(n), src3(n);
  buffer<device_allocator<host_backend>> dst(n), dst2(n), dst3(n);
  std::memset(src.data(), 0x21, n);
  std::memset(src2.data(), 0x22, n);
  std::memset(src3.data(), 0x23, n);
  // Critical work keeps moving; the monitor sees the link saturated once a window has ended.
  std::atomic<bool> stop{false};
  std::thread critical([&] {
    while (!stop) (void)p.copy(dst3.span(), src3.span(), {.priority = priority::critical}).wait();
  });
  std::this_thread::sleep_for(15ms);
  const auto bg = p.copy(dst2.span(), src2.span(), {.priority = priority::background}).wait();
  CHECK(bg.throttle[throttle_action::delay_background] > 0);
  const auto nm = p.copy(dst2.span(), src2.span(), {.priority = priority::normal}).wait();
  CHECK(nm.throttle[throttle_action::smaller_chunks] > 0);
  stop = true;
  critical.join();
  // Critical work while background work moves takes the batched path, byte-exact. It starts
  // once the broker has granted background tokens on the congested link (not after a fixed
  // sleep: on a loaded machine the background thread may not have run yet).
  const std::size_t link = s->resource(h2d);
  const std::uint64_t background_grants =
      s->status(link).grants[static_cast<std::size_t>(priority::background)];
  stop = false;
  std::thread background([&] {
    while (!stop) (void)p.copy(dst2.span(), src2.span(), {.priority = priority::background}).wait();
  });
  for (const auto give_up = std::chrono::steady_clock::now() + 5s;
       std::chrono::steady_clock::now() < give_up;) {
    const auto now = s->status(link);
    if (now.congested &&
        now.grants[static_cast<std::size_t>(priority::background)] > background_grants) {
      break;
    }
    std::this_thread::sleep_for(1ms);
  }
  std::memset(dst.data(), 0, n);
  const auto cr = p.copy(dst.span(), src.span(), {.priority = priority::critical}).wait();
  stop = true;
  background.join();
  CHECK(cr.throttle[throttle_action::fallback_path] == 1);
  CHECK(cr.path == transfer_path::batched);
  CHECK(std::all_of(dst.data(), dst.data() + n, [](std::byte b) { return b == std::byte(0x21); }));
  CHECK(std::all_of(dst3.data(), dst3.data() + n, [](std::byte b) { return b == std::byte(0x23); }));
  const auto st = s->status(s->resource(h2d));
  CHECK(st.congested);
  CHECK(st.throttle.congested_episodes >= 1);
  CHECK(st.throttle[throttle_action::delay_background] > 0);
  CHECK(st.throttle[throttle_action::fallback_path] >= 1);
}

TEST_CASE("pipelines: without coordination no tokens are taken") {
  pipeline_config c;
  c.coordinated = false;
  pipe_t p({}, {}, {}, std::move(c));
  CHECK(p.broker() == nullptr);
  constexpr std::size_t n = 4 * MiB;
  buffer<pinned_allocator<host_backend>> src(n);
  buffer<device_allocator<host_backend>> dst(n);
  const auto st = p.copy(dst.span(), src.span(), {.priority = priority::critical}).wait();
  CHECK(st.token_waits == 0);
  CHECK(st.throttle[throttle_action::none] == 0);
  // The default pipeline shares the process's broker.
  pipe_t q;
  CHECK(q.broker() == lris::default_context()->broker());
}

TEST_CASE("pipelines: file reads take tokens of the file's disk") {
  auto s = std::make_shared<bandwidth_broker>(broker_options{});
  auto p = make_pipe<staged_t>(s);
  const auto path = std::filesystem::temp_directory_path() /
                    ("lris-sched-file-" + std::to_string(::getpid()));
  constexpr std::size_t n = 3 * MiB + 123;
  {
    std::ofstream out(path, std::ios::binary);
    std::vector<char> bytes(n, 'q');
    out.write(bytes.data(), static_cast<std::streamsize>(n));
  }
  io::file f(path);
  std::vector<std::byte> host(n);
  buffer<device_allocator<host_backend>> dev(n);
  (void)p.read(as_host(host.data(), n), f, 0).wait();
  (void)p.read(dev.span(), f, 0).wait();
  const auto disk = s->resource(sched::storage_resource(f.fd()));
  CHECK(s->status(disk).bytes == 2 * n);
  CHECK(std::all_of(dev.data(), dev.data() + n, [](std::byte b) { return b == std::byte('q'); }));
  std::filesystem::remove(path);
}
