// registered_allocator and host_registration against the host backend's registry.

#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include <lris/backends/host_backend.hpp>
#include <lris/error.hpp>
#include <lris/memory/host_registration.hpp>
#include <lris/memory/page_aligned_allocator.hpp>
#include <lris/memory/pageable_allocator.hpp>
#include <lris/memory/registered_allocator.hpp>

#include "allocator_test_support.hpp"

namespace {
using lris::host_backend;
using lris_test::counting_allocator;

// Always hands out the same arena and counts how often it gets it back.
struct arena_allocator {
  using space = lris::host_space;
  static constexpr lris::memory_properties properties = lris::host_space::properties;
  std::byte* base;
  int* frees;
  void* allocate(std::size_t, std::size_t) { return base; }
  void deallocate(void*, std::size_t, std::size_t) noexcept { ++*frees; }
  bool operator==(const arena_allocator&) const = default;
};
}  // namespace

TEST_CASE("registered_allocator registers what it hands out and unregisters on free",
          "[memory][registered]") {
  lris::registered_allocator<lris::page_aligned_allocator, host_backend> a;
  STATIC_REQUIRE(std::is_same_v<decltype(a)::space, lris::pinned_space<host_backend>>);
  STATIC_REQUIRE(decltype(a)::properties.pinned);
  STATIC_REQUIRE(decltype(a)::properties.page_aligned);

  void* p = a.allocate(10000, 4096);
  CHECK(host_backend::is_registered(p, 10000));
  void* q = a.allocate(0);
  CHECK(host_backend::is_registered(q, 1));
  a.deallocate(p, 10000, 4096);
  CHECK_FALSE(host_backend::is_registered(p, 1));
  CHECK(host_backend::is_registered(q, 1));
  a.deallocate(q, 0);
  CHECK_FALSE(host_backend::is_registered(q, 1));
}

TEST_CASE("registered_allocator returns the block upstream when registration fails",
          "[memory][registered]") {
  // The arena is already registered, so the backend refuses to register it again.
  std::vector<std::byte> arena(1 << 16);
  lris::host_registration<host_backend> hold(host_backend{}, arena.data(), arena.size());
  int frees = 0;
  lris::registered_allocator<arena_allocator, host_backend> b({arena.data(), &frees},
                                                              host_backend{});
  CHECK_THROWS_AS(b.allocate(128), lris::invalid_argument);  // overlaps `hold`
  CHECK(frees == 1);  // handed back, not leaked
  CHECK(host_backend::is_registered(arena.data(), arena.size()));  // `hold` untouched
}

TEST_CASE("registered_allocator names itself when the upstream fails", "[memory][registered]") {
  counting_allocator up;
  up.state->budget = 1000;
  lris::registered_allocator<counting_allocator, host_backend> a(up, host_backend{});
  try {
    void* p = a.allocate(5000, 64);
    a.deallocate(p, 5000, 64);
    FAIL("the budget allowed 5000 bytes");
  } catch (const lris::out_of_memory& e) {
    CHECK_THAT(e.what(),
               Catch::Matchers::Contains("registered_allocator<counting_allocator, host>"));
    CHECK_THAT(e.what(), Catch::Matchers::Contains("5000 bytes"));
    CHECK(e.requested() == 5000);
  }
}

TEST_CASE("host_registration pins caller memory for its lifetime", "[memory][registered]") {
  std::vector<float> data(4096, 1.0f);
  void* start = data.data();
  const std::size_t bytes = data.size() * sizeof(float);
  {
    lris::host_registration<host_backend> reg(host_backend{}, std::span(data));
    CHECK(reg.registered());
    CHECK(static_cast<bool>(reg));
    CHECK(host_backend::is_registered(start, bytes));
    const lris::pinned_span<host_backend> s = reg.span();
    CHECK(static_cast<void*>(s.data()) == start);
    CHECK(s.size() == bytes);
    CHECK(s.host()[0] == reg.span().host()[0]);

    // Registering an overlapping range is refused while `reg` lives.
    CHECK_THROWS_AS(lris::host_registration<host_backend>(host_backend{}, start, 16),
                    lris::invalid_argument);

    // Moves transfer the registration; the source is left empty.
    lris::host_registration<host_backend> moved = std::move(reg);
    CHECK_FALSE(reg.registered());  // NOLINT(bugprone-use-after-move): moved-from state
    CHECK(reg.span().empty());
    CHECK(moved.registered());
    CHECK(host_backend::is_registered(start, bytes));

    // Move-assigning over a live registration ends that one.
    std::vector<std::byte> other(8192);
    lris::host_registration<host_backend> second(host_backend{}, other.data(), other.size());
    second = std::move(moved);
    CHECK_FALSE(host_backend::is_registered(other.data(), 1));
    CHECK(host_backend::is_registered(start, bytes));
  }
  CHECK_FALSE(host_backend::is_registered(start, 1));

  lris::host_registration<host_backend> empty(host_backend{}, start, 0);
  CHECK_FALSE(empty.registered());
  lris::host_registration<host_backend> by_span(host_backend{}, lris::as_host(data));
  CHECK(host_backend::is_registered(start, bytes));
  by_span.reset();
  CHECK_FALSE(host_backend::is_registered(start, 1));
  by_span.reset();  // idempotent
  STATIC_REQUIRE(!std::is_copy_constructible_v<lris::host_registration<host_backend>>);
  STATIC_REQUIRE(std::is_nothrow_destructible_v<lris::host_registration<host_backend>>);
}
