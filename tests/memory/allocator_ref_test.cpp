// allocator_ref: forwarding, run-time properties, equality.

#include <string_view>
#include <type_traits>
#include <vector>

#include <catch2/catch.hpp>

#include <lris/backends/host_backend.hpp>
#include <lris/memory/allocator_ref.hpp>
#include <lris/memory/caching_pool.hpp>
#include <lris/memory/device_allocator.hpp>
#include <lris/memory/page_aligned_allocator.hpp>
#include <lris/memory/pageable_allocator.hpp>
#include <lris/memory/pinned_allocator.hpp>

#include "allocator_test_support.hpp"

using lris::host_backend;

// Its properties are run-time values, so it is not an allocator_policy model, by design.
static_assert(!lris::allocator_policy<lris::allocator_ref>);
// Binding to a temporary would dangle at once.
static_assert(!std::is_constructible_v<lris::allocator_ref, lris::pageable_allocator&&>);
static_assert(!std::is_constructible_v<lris::allocator_ref, const lris::pageable_allocator&>);
static_assert(std::is_constructible_v<lris::allocator_ref, lris::pageable_allocator&>);
static_assert(!std::is_constructible_v<lris::allocator_ref, int&>);
static_assert(std::is_trivially_copyable_v<lris::allocator_ref>);

TEST_CASE("allocator_ref forwards to the allocator it refers to", "[memory][allocator_ref]") {
  lris_test::counting_allocator up;
  lris::caching_pool<lris_test::counting_allocator> pool(up);
  const lris::allocator_ref ref = pool;
  void* p = ref.allocate(3000, 512);
  CHECK(reinterpret_cast<std::uintptr_t>(p) % 512 == 0);
  CHECK(pool.stats().misses == 1);
  CHECK(pool.stats().bytes_in_use == 4096);
  ref.deallocate(p, 3000, 512);
  CHECK(pool.stats().bytes_cached == 4096);
  CHECK(ref.allocate(3000, 512) == p);  // the pool's cache, reached through the reference
  CHECK(pool.stats().hits == 1);
  ref.deallocate(p, 3000, 512);
  CHECK(up.state->allocations == 1);

  CHECK(ref.holds<lris::caching_pool<lris_test::counting_allocator>>());
  CHECK_FALSE(ref.holds<lris::pageable_allocator>());
  CHECK(ref.target<lris::caching_pool<lris_test::counting_allocator>>() == &pool);
  CHECK(ref.target<lris::pageable_allocator>() == nullptr);
  CHECK(ref.name() == "caching_pool");
  CHECK_THROWS_AS(ref.allocate(8, 3), lris::invalid_argument);  // errors pass through
}

TEST_CASE("allocator_ref reports properties and space at run time", "[memory][allocator_ref]") {
  lris::pageable_allocator pageable;
  lris::page_aligned_allocator page_aligned;
  lris::pinned_allocator<host_backend> pinned;
  lris::device_allocator<host_backend> device;
  const std::vector<lris::allocator_ref> refs = {pageable, page_aligned, pinned, device};

  CHECK(refs[0].space_name() == "host");
  CHECK(refs[0].properties().host_accessible);
  CHECK_FALSE(refs[0].properties().pinned);
  CHECK_FALSE(refs[0].properties().page_aligned);
  CHECK(refs[1].properties().page_aligned);
  CHECK(refs[1].name() == "page_aligned_allocator");
  CHECK(refs[2].space_name() == "pinned");
  CHECK(refs[2].properties().pinned);
  CHECK(refs[2].properties().device_accessible);
  CHECK(refs[3].space_name() == "device");
  CHECK_FALSE(refs[3].properties().host_accessible);
  CHECK(refs[3].properties().device_accessible);

  // Chosen at run time, used uniformly.
  for (const auto& r : refs) {
    INFO(r.name());
    void* p = r.allocate(1000, 64);
    CHECK(reinterpret_cast<std::uintptr_t>(p) % 64 == 0);
    r.deallocate(p, 1000, 64);
  }
}

TEST_CASE("allocator_ref equality follows the allocators'", "[memory][allocator_ref]") {
  lris::caching_pool<lris::pageable_allocator> pool;
  auto same_pool = pool;
  lris::caching_pool<lris::pageable_allocator> other_pool;
  lris::pageable_allocator a, b;
  const lris::allocator_ref r1 = pool;
  CHECK(r1 == lris::allocator_ref(pool));
  CHECK(r1 == lris::allocator_ref(same_pool));  // copies of a pool free each other's blocks
  CHECK_FALSE(r1 == lris::allocator_ref(other_pool));
  CHECK(lris::allocator_ref(a) == lris::allocator_ref(b));  // stateless: interchangeable
  CHECK_FALSE(lris::allocator_ref(a) == r1);                // different types
}
