// buffer: an owning array typed by its allocator's space.

#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>

#include <catch2/catch.hpp>

#include <lris/backends/host_backend.hpp>
#include <lris/memory/buffer.hpp>
#include <lris/memory/caching_pool.hpp>
#include <lris/memory/device_allocator.hpp>
#include <lris/memory/pageable_allocator.hpp>
#include <lris/memory/pinned_allocator.hpp>

using lris::host_backend;

static_assert(std::is_same_v<decltype(std::declval<lris::buffer<lris::pageable_allocator, float>&>()
                                          .span()),
                             lris::host_span<float>>);
static_assert(std::is_same_v<
              decltype(std::declval<lris::buffer<lris::device_allocator<host_backend>>&>().span()),
              lris::device_span<host_backend>>);
static_assert(std::is_same_v<
              decltype(std::declval<const lris::buffer<lris::pinned_allocator<host_backend>>&>()
                           .span()),
              lris::pinned_span<host_backend, const std::byte>>);
static_assert(!std::is_copy_constructible_v<lris::buffer<lris::pageable_allocator>>);
static_assert(std::is_nothrow_move_constructible_v<lris::buffer<lris::pageable_allocator>>);
// The CPU may index host buffers only.
template <class B>
concept indexable = requires(B& b) { b[0]; };
static_assert(indexable<lris::buffer<lris::pinned_allocator<host_backend>>>);
static_assert(!indexable<lris::buffer<lris::device_allocator<host_backend>>>);

TEST_CASE("buffer owns aligned elements and exposes them as a typed span", "[memory][buffer]") {
  lris::buffer<lris::pageable_allocator, float> b(1000);
  CHECK(b.size() == 1000);
  CHECK(b.size_bytes() == 4000);
  CHECK(!b.empty());
  CHECK(reinterpret_cast<std::uintptr_t>(b.data()) % lris::default_alignment == 0);
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>(i);
  const lris::host_span<float> s = b.span();
  CHECK(s.data() == b.data());
  CHECK(s.size() == 1000);
  CHECK(s.host()[999] == 999.0f);

  lris::buffer<lris::pageable_allocator, float> moved = std::move(b);
  CHECK(b.data() == nullptr);  // NOLINT(bugprone-use-after-move): moved-from state
  CHECK(b.size() == 0);
  CHECK(moved[999] == 999.0f);
  moved = lris::buffer<lris::pageable_allocator, float>(10);
  CHECK(moved.size() == 10);
}

TEST_CASE("buffer returns its memory to the allocator", "[memory][buffer]") {
  lris::caching_pool<lris::pageable_allocator> pool;
  {
    lris::buffer<lris::caching_pool<lris::pageable_allocator>> b(5000, pool);
    CHECK(pool.stats().bytes_in_use == 8192);
  }
  CHECK(pool.stats().bytes_in_use == 0);
  CHECK(pool.stats().bytes_cached == 8192);
  lris::buffer<lris::caching_pool<lris::pageable_allocator>> again(5000, pool);
  CHECK(pool.stats().hits == 1);
  again.reset();
  CHECK(again.empty());
  CHECK(pool.stats().bytes_in_use == 0);
}

TEST_CASE("buffer of device memory carries the device", "[memory][buffer]") {
  lris::buffer<lris::device_allocator<host_backend>, std::uint32_t> d(
      256, lris::device_allocator<host_backend>(host_backend(0)));
  const lris::device_span<host_backend, std::uint32_t> s = d.span();
  CHECK(s.device() == 0);
  CHECK(s.size_bytes() == 1024);
}

TEST_CASE("buffer sizes that overflow are out_of_memory", "[memory][buffer]") {
  using big = lris::buffer<lris::pageable_allocator, double>;
  CHECK_THROWS_AS(big(std::numeric_limits<std::size_t>::max() / 4), lris::out_of_memory);
  CHECK_THROWS_AS(big(std::size_t{1} << 50), lris::out_of_memory);
  big empty(0);
  CHECK(empty.size() == 0);
  CHECK(empty.data() != nullptr);  // a zero-byte allocation is still a freeable pointer
}
