// caching_pool: reuse, release, the cap, and what happens when the upstream runs dry.

#include <string>

#include <catch2/catch.hpp>

#include <lris/backends/host_backend.hpp>
#include <lris/error.hpp>
#include <lris/memory/caching_pool.hpp>
#include <lris/memory/device_allocator.hpp>

#include "allocator_test_support.hpp"

namespace {
using lris_test::counting_allocator;
constexpr std::size_t kib = std::size_t{1} << 10;
constexpr std::size_t mib = std::size_t{1} << 20;
}  // namespace

TEST_CASE("caching_pool reuses a freed block of the same class", "[memory][pool]") {
  counting_allocator up;
  lris::caching_pool<counting_allocator> pool(up);
  CHECK(pool.block_size(1000) == 1024);
  CHECK(pool.block_size(0) == pool.options().min_block_bytes);
  CHECK(pool.block_size(3 * mib + 1) == 3 * mib + 1);  // beyond the bins: exact

  void* p = pool.allocate(1000, 256);
  CHECK(pool.stats().misses == 1);
  CHECK(pool.stats().bytes_in_use == 1024);
  pool.deallocate(p, 1000, 256);
  CHECK(pool.stats().bytes_cached == 1024);
  CHECK(pool.stats().bytes_in_use == 0);
  CHECK(up.state->live_blocks == 1);  // cached, not freed

  void* q = pool.allocate(900, 256);  // same 1024-byte class
  CHECK(q == p);
  auto s = pool.stats();
  CHECK(s.hits == 1);
  CHECK(s.misses == 1);
  CHECK(s.bytes_cached == 0);
  CHECK(s.bytes_in_use == 1024);
  CHECK(up.state->allocations == 1);

  void* r = pool.allocate(900, 4096);  // another alignment is another free list
  CHECK(pool.stats().misses == 2);
  CHECK(r != q);
  pool.deallocate(r, 900, 4096);
  pool.deallocate(q, 900, 256);

  void* big = pool.allocate(3 * mib + 1);
  pool.deallocate(big, 3 * mib + 1);
  CHECK(pool.allocate(3 * mib + 1) == big);
  void* other = pool.allocate(3 * mib + 2);  // exact sizes do not share
  CHECK(other != big);
  pool.deallocate(other, 3 * mib + 2);
  pool.deallocate(big, 3 * mib + 1);
  CHECK(pool.stats().peak_bytes_in_use >= 3 * mib + 1 + 3 * mib + 2);
}

TEST_CASE("caching_pool release() frees every cached block upstream", "[memory][pool]") {
  counting_allocator up;
  lris::caching_pool<counting_allocator> pool(up);
  void* a = pool.allocate(100);
  void* b = pool.allocate(5000);
  void* c = pool.allocate(70000);
  pool.deallocate(a, 100);
  pool.deallocate(b, 5000);
  CHECK(up.state->live_blocks == 3);
  CHECK(pool.release() == 256 + 8192);
  CHECK(up.state->live_blocks == 1);
  CHECK(pool.stats().bytes_cached == 0);
  CHECK(pool.stats().blocks_cached == 0);
  CHECK(pool.stats().bytes_in_use == 131072);
  pool.deallocate(c, 70000);
  CHECK(pool.release() == 131072);
  CHECK(up.state->live_blocks == 0);
  CHECK(up.state->live_bytes == 0);
}

TEST_CASE("caching_pool keeps no more than its cap", "[memory][pool]") {
  counting_allocator up;
  lris::caching_pool<counting_allocator> pool(up, {.max_cached_bytes = 4096});
  void* blocks[3];
  for (auto& p : blocks) p = pool.allocate(2048);
  for (auto* p : blocks) pool.deallocate(p, 2048);
  CHECK(pool.stats().bytes_cached == 4096);
  CHECK(pool.stats().blocks_cached == 2);
  CHECK(up.state->deallocations == 1);  // the third went straight back
  // A block bigger than the cap is never cached.
  void* huge = pool.allocate(8192);
  pool.deallocate(huge, 8192);
  CHECK(up.state->deallocations == 2);
  CHECK(pool.stats().bytes_cached == 4096);
}

TEST_CASE("caching_pool copies share one pool; the last one frees the cache",
          "[memory][pool]") {
  counting_allocator up;
  {
    lris::caching_pool<counting_allocator> pool(up);
    auto copy = pool;
    CHECK(copy == pool);
    CHECK_FALSE(lris::caching_pool<counting_allocator>(up) == pool);
    void* p = pool.allocate(4000);
    copy.deallocate(p, 4000);
    CHECK(pool.stats().bytes_cached == 4096);
    CHECK(copy.allocate(4000) == p);
    CHECK(pool.stats().hits == 1);
    pool.deallocate(p, 4000);
    CHECK(up.state->live_blocks == 1);
  }
  CHECK(up.state->live_blocks == 0);
  CHECK(up.state->deallocations == up.state->allocations);
}

TEST_CASE("caching_pool releases its cache and retries when the upstream runs out",
          "[memory][pool][oom]") {
  counting_allocator up;
  up.state->budget = 100 * kib;
  lris::caching_pool<counting_allocator> pool(up, {.max_binned_bytes = 4 * kib});

  void* a = pool.allocate(60 * kib);
  pool.deallocate(a, 60 * kib);
  CHECK(pool.stats().bytes_cached == 60 * kib);

  // 60 KiB cached + 50 KiB exceeds the budget: the first try fails, the cache goes, the retry
  // succeeds.
  void* b = pool.allocate(50 * kib);
  REQUIRE(b != nullptr);
  auto s = pool.stats();
  CHECK(up.state->failures == 1);
  CHECK(s.oom_releases == 1);
  CHECK(s.bytes_cached == 0);
  CHECK(s.bytes_in_use == 50 * kib);

  // Nothing left to release: the retry fails too and the error names the pool and the size.
  try {
    void* c = pool.allocate(80 * kib);
    pool.deallocate(c, 80 * kib);
    FAIL("80 KiB fit in a 100 KiB budget with 50 KiB in use");
  } catch (const lris::out_of_memory& e) {
    const std::string what = e.what();
    INFO(what);
    CHECK(e.requested() == 80 * kib);
    CHECK_THAT(what, Catch::Matchers::Contains("caching_pool<counting_allocator>"));
    CHECK_THAT(what, Catch::Matchers::Contains(std::to_string(80 * kib)));
    CHECK_THAT(what, Catch::Matchers::Contains("test budget exhausted"));
  }
  CHECK(up.state->failures == 3);
  CHECK(pool.stats().oom_releases == 2);
  CHECK(pool.stats().bytes_in_use == 50 * kib);  // the failure leaked nothing

  // Still usable.
  pool.deallocate(b, 50 * kib);
  void* again = pool.allocate(50 * kib);
  CHECK(again == b);
  pool.deallocate(again, 50 * kib);
  pool.release();
  CHECK(up.state->live_bytes == 0);
}

TEST_CASE("caching_pool keeps the upstream's space and properties", "[memory][pool]") {
  using device_pool = lris::caching_pool<lris::device_allocator<lris::host_backend>>;
  STATIC_REQUIRE(std::is_same_v<device_pool::space, lris::device_space<lris::host_backend>>);
  STATIC_REQUIRE(!lris::host_allocator<device_pool>);
  STATIC_REQUIRE(device_pool::properties.device_accessible);
  device_pool pool;
  void* p = pool.allocate(1 * mib);
  pool.deallocate(p, 1 * mib);
  CHECK(pool.allocate(1 * mib) == p);
  pool.deallocate(p, 1 * mib);
}
