#include <catch2/catch.hpp>

#include "support/what_contains.hpp"

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include <lris/backends/host_backend.hpp>

using lris::host_backend;
using lris::test::what_contains;

TEST_CASE("host_backend streams run work in order", "[backend]") {
  host_backend b;
  auto s = b.make_stream();
  std::vector<int> order;
  struct ctx {
    std::vector<int>* order;
    int value;
  };
  std::vector<ctx> ctxs;
  ctxs.reserve(100);
  for (int i = 0; i < 100; ++i) {
    ctxs.push_back({&order, i});
    b.host_callback(s, +[](void* u) noexcept {
      auto* c = static_cast<ctx*>(u);
      c->order->push_back(c->value);
    }, &ctxs.back());
  }
  b.synchronize(s);
  REQUIRE(order.size() == 100);
  for (int i = 0; i < 100; ++i) CHECK(order[static_cast<std::size_t>(i)] == i);
}

TEST_CASE("host_backend copies and events", "[backend]") {
  host_backend b;
  auto s = b.make_stream();
  auto e = b.make_event();
  CHECK(b.query(e));  // never recorded: complete, as in device runtimes
  const std::size_t n = std::size_t{9} << 20;
  auto* dev = static_cast<unsigned char*>(b.allocate_device(n));
  auto* pin = static_cast<unsigned char*>(b.allocate_pinned(n));
  CHECK(reinterpret_cast<std::uintptr_t>(dev) % 256 == 0);
  CHECK(reinterpret_cast<std::uintptr_t>(pin) % 4096 == 0);
  for (std::size_t i = 0; i < n; ++i) pin[i] = static_cast<unsigned char>(i * 7);
  std::memset(dev, 0, n);
  b.copy_async(dev, pin, n, lris::copy_kind::host_to_device, s);
  b.record(e, s);
  b.synchronize(e);
  CHECK(b.query(e));
  CHECK(std::memcmp(dev, pin, n) == 0);
  b.deallocate_device(dev, n);
  b.deallocate_pinned(pin, n);
}

TEST_CASE("a stream waits for an event recorded on another stream", "[backend]") {
  host_backend b;
  auto s1 = b.make_stream();
  auto s2 = b.make_stream();
  auto e = b.make_event();
  std::atomic<int> stage{0};
  // s1: sleep, then set stage 1, then record e. s2: wait e, then require stage 1.
  b.host_callback(s1, +[](void* u) noexcept {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    static_cast<std::atomic<int>*>(u)->store(1);
  }, &stage);
  b.record(e, s1);
  CHECK_FALSE(b.query(e));
  b.wait(s2, e);
  b.host_callback(s2, +[](void* u) noexcept {
    auto* st = static_cast<std::atomic<int>*>(u);
    if (st->load() == 1) st->store(2);
  }, &stage);
  b.synchronize(s2);
  CHECK(stage == 2);
}

TEST_CASE("host_backend devices copy to each other, and name a device out of range", "[backend]") {
  host_backend b(2);
  CHECK(b.enable_peer_access(7));
  CHECK_FALSE(b.enable_peer_access(8));
  std::vector<char> a(1000, 'x'), c(1000, 0);
  auto s = b.make_stream();
  b.copy_peer_async(c.data(), 5, a.data(), 2, a.size(), s);
  b.synchronize(s);
  CHECK(c == a);
  REQUIRE_THROWS_MATCHES(b.copy_peer_async(c.data(), 8, a.data(), 2, 1, s),
                         lris::invalid_argument, what_contains("device 2 -> 8"));
}

TEST_CASE("host_backend errors name what is at fault", "[backend][errors]") {
  host_backend b;
  SECTION("bad device index") {
    REQUIRE_THROWS_MATCHES(host_backend(host_backend::devices), lris::invalid_argument,
                           what_contains("device 8 does not exist (the host backend has 8 "
                                         "devices)"));
    CHECK(host_backend(host_backend::devices - 1).device() == host_backend::devices - 1);
    REQUIRE_THROWS_AS(host_backend(-1), lris::invalid_argument);
  }
  SECTION("out of memory") {
    REQUIRE_THROWS_MATCHES(b.allocate_device(std::size_t{1} << 50), lris::out_of_memory,
                           what_contains("1125899906842624 bytes of device memory"));
    REQUIRE_THROWS_AS(b.allocate_pinned(~std::size_t{0} - 10), lris::out_of_memory);
  }
  SECTION("registration") {
    std::vector<char> mem(8192);
    b.register_host(mem.data(), 4096);
    CHECK(host_backend::is_registered(mem.data() + 100, 100));
    CHECK_FALSE(host_backend::is_registered(mem.data() + 4000, 200));
    REQUIRE_THROWS_MATCHES(b.register_host(mem.data() + 100, 10), lris::invalid_argument,
                           what_contains("overlaps a range already registered"));
    REQUIRE_THROWS_MATCHES(b.unregister_host(mem.data() + 1), lris::invalid_argument,
                           what_contains("not the start of a registered range"));
    REQUIRE_THROWS_AS(b.register_host(nullptr, 10), lris::invalid_argument);
    b.unregister_host(mem.data());
    CHECK_FALSE(host_backend::is_registered(mem.data(), 1));
  }
  SECTION("null copy") {
    auto s = b.make_stream();
    REQUIRE_THROWS_AS(b.copy_async(nullptr, &b, 8, lris::copy_kind::host_to_device, s),
                      lris::invalid_argument);
  }
  SECTION("moved-from stream") {
    auto s = b.make_stream();
    auto s2 = std::move(s);
    REQUIRE_THROWS_MATCHES(b.synchronize(s), lris::invalid_argument,
                           what_contains("moved-from stream"));
    b.synchronize(s2);
  }
}

TEST_CASE("parallel_for runs every index once, from inside the pool too", "[detail]") {
  const auto pool_owner = lris::detail::default_thread_pool();
  auto& pool = *pool_owner;
  std::vector<std::atomic<int>> hits(1000);
  lris::detail::parallel_for(pool, hits.size(), 8, [&](std::size_t i) { ++hits[i]; });
  for (auto& h : hits) CHECK(h == 1);
  // Nested: a loop started from a pool thread must not deadlock.
  std::atomic<int> inner{0};
  lris::detail::parallel_for(pool, 64, 64, [&](std::size_t) {
    lris::detail::parallel_for(pool, 16, 16, [&](std::size_t) { ++inner; });
  });
  CHECK(inner == 64 * 16);
  // The first exception is rethrown once every started call has returned.
  REQUIRE_THROWS_WITH(lris::detail::parallel_for(pool, 100, 4, [](std::size_t i) {
                        if (i == 17) throw std::runtime_error("index 17");
                      }),
                      "index 17");
}

TEST_CASE("host graphs: captured work runs only when launched, as often as launched",
          "[backend][graph]") {
  host_backend be;
  auto s = be.make_stream();
  auto side = be.make_stream();
  std::vector<std::byte> a(4096, std::byte{7}), b(4096), c(4096);
  be.begin_capture(s);
  host_backend::event fork, join;
  be.record(fork, s);
  be.wait(side, fork);  // side joins the capture
  be.copy_async(b.data(), a.data(), a.size(), lris::copy_kind::host_to_device, side);
  be.record(join, side);
  be.wait(s, join);
  be.copy_async(c.data(), b.data(), b.size(), lris::copy_kind::device_to_host, s);
  REQUIRE_THROWS_MATCHES(be.synchronize(s), lris::invalid_argument,
                         what_contains("the stream is being captured"));
  REQUIRE_THROWS_MATCHES(be.query(join), lris::invalid_argument,
                         what_contains("query: the event was last recorded in a capture"));
  host_backend::event outside;
  be.record(outside, side);  // side is in the capture: this one is too
  host_backend::event before;
  auto other = be.make_stream();
  be.record(before, other);
  REQUIRE_THROWS_MATCHES(be.wait(s, before), lris::invalid_argument,
                         what_contains("cannot wait for an event recorded outside the capture"));
  REQUIRE_THROWS_MATCHES(be.end_capture(side), lris::invalid_argument,
                         what_contains("did not begin a capture"));
  auto g = be.end_capture(s);
  be.synchronize(s);
  be.synchronize(side);  // side left the capture with it
  CHECK(b[0] == std::byte{0});  // nothing ran
  REQUIRE_THROWS_MATCHES(be.wait(other, join), lris::invalid_argument,
                         what_contains("recorded in a capture that has ended"));
  be.launch(g, s);
  be.synchronize(s);
  CHECK(c == a);
  a.assign(a.size(), std::byte{9});
  be.launch(g, s);
  be.synchronize(s);
  CHECK(c == a);
  REQUIRE_THROWS_MATCHES(be.end_capture(s), lris::invalid_argument,
                         what_contains("did not begin a capture"));
}
