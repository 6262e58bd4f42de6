// What allocator_policy accepts and rejects, and the properties the models publish.

#include <cstddef>

#include <catch2/catch.hpp>

#include <lris/backends/host_backend.hpp>
#include <lris/concepts/allocator_policy.hpp>
#include <lris/memory/caching_pool.hpp>
#include <lris/memory/device_allocator.hpp>
#include <lris/memory/huge_page_allocator.hpp>
#include <lris/memory/numa_allocator.hpp>
#include <lris/memory/page_aligned_allocator.hpp>
#include <lris/memory/pageable_allocator.hpp>
#include <lris/memory/pinned_allocator.hpp>
#include <lris/memory/registered_allocator.hpp>

namespace {

using lris::host_backend;

struct good {
  using space = lris::host_space;
  static constexpr lris::memory_properties properties = lris::host_space::properties;
  void* allocate(std::size_t, std::size_t) { return nullptr; }
  void deallocate(void*, std::size_t, std::size_t) noexcept {}
  bool operator==(const good&) const = default;
};

struct missing_deallocate {
  using space = lris::host_space;
  static constexpr lris::memory_properties properties = lris::host_space::properties;
  void* allocate(std::size_t, std::size_t) { return nullptr; }
  bool operator==(const missing_deallocate&) const = default;
};

struct throwing_deallocate {
  using space = lris::host_space;
  static constexpr lris::memory_properties properties = lris::host_space::properties;
  void* allocate(std::size_t, std::size_t) { return nullptr; }
  void deallocate(void*, std::size_t, std::size_t) {}  // must be noexcept
  bool operator==(const throwing_deallocate&) const = default;
};

struct typed_allocate {
  using space = lris::host_space;
  static constexpr lris::memory_properties properties = lris::host_space::properties;
  int* allocate(std::size_t, std::size_t) { return nullptr; }  // must return void*
  void deallocate(void*, std::size_t, std::size_t) noexcept {}
  bool operator==(const typed_allocate&) const = default;
};

struct no_space {
  static constexpr lris::memory_properties properties = lris::host_space::properties;
  void* allocate(std::size_t, std::size_t) { return nullptr; }
  void deallocate(void*, std::size_t, std::size_t) noexcept {}
  bool operator==(const no_space&) const = default;
};

struct not_a_space {};
struct bogus_space {
  using space = not_a_space;  // not one of the memory space tags
  static constexpr lris::memory_properties properties = lris::host_space::properties;
  void* allocate(std::size_t, std::size_t) { return nullptr; }
  void deallocate(void*, std::size_t, std::size_t) noexcept {}
  bool operator==(const bogus_space&) const = default;
};

struct runtime_properties {
  using space = lris::host_space;
  lris::memory_properties properties;  // not a constant
  void* allocate(std::size_t, std::size_t) { return nullptr; }
  void deallocate(void*, std::size_t, std::size_t) noexcept {}
  bool operator==(const runtime_properties&) const = default;
};

struct not_comparable {
  using space = lris::host_space;
  static constexpr lris::memory_properties properties = lris::host_space::properties;
  void* allocate(std::size_t, std::size_t) { return nullptr; }
  void deallocate(void*, std::size_t, std::size_t) noexcept {}
};

struct move_only {
  using space = lris::host_space;
  static constexpr lris::memory_properties properties = lris::host_space::properties;
  move_only() = default;
  move_only(move_only&&) = default;
  void* allocate(std::size_t, std::size_t) { return nullptr; }
  void deallocate(void*, std::size_t, std::size_t) noexcept {}
  bool operator==(const move_only&) const = default;
};

static_assert(lris::allocator_policy<good>);
static_assert(!lris::allocator_policy<int>);
static_assert(!lris::allocator_policy<void*>);
static_assert(!lris::allocator_policy<missing_deallocate>);
static_assert(!lris::allocator_policy<throwing_deallocate>);
static_assert(!lris::allocator_policy<typed_allocate>);
static_assert(!lris::allocator_policy<no_space>);
static_assert(!lris::allocator_policy<bogus_space>);
static_assert(!lris::allocator_policy<runtime_properties>);
static_assert(!lris::allocator_policy<not_comparable>);
static_assert(!lris::allocator_policy<move_only>);

// Device memory is never host memory, whatever wraps it.
static_assert(!lris::host_allocator<lris::device_allocator<host_backend>>);
static_assert(!lris::host_allocator<lris::caching_pool<lris::device_allocator<host_backend>>>);
static_assert(!lris::pinned_allocator_policy<lris::device_allocator<host_backend>>);

// Pinned kinds.
static_assert(lris::pinned_allocator_policy<lris::pinned_allocator<host_backend>>);
static_assert(
    lris::pinned_allocator_policy<lris::registered_allocator<lris::numa_allocator, host_backend>>);
static_assert(
    lris::pinned_allocator_policy<lris::caching_pool<lris::pinned_allocator<host_backend>>>);
static_assert(!lris::pinned_allocator_policy<lris::pageable_allocator>);
static_assert(!lris::pinned_allocator_policy<lris::huge_page_allocator>);

// Page alignment (O_DIRECT-ready) is published where it holds, and only there.
static_assert(lris::is_page_aligned_v<lris::page_aligned_allocator>);
static_assert(lris::is_page_aligned_v<lris::numa_allocator>);
static_assert(lris::is_page_aligned_v<lris::huge_page_allocator>);
static_assert(lris::is_page_aligned_v<lris::caching_pool<lris::page_aligned_allocator>>);
static_assert(!lris::is_page_aligned_v<lris::pageable_allocator>);
static_assert(!lris::is_page_aligned_v<lris::registered_allocator<lris::pageable_allocator,
                                                                  host_backend>>);

// Spaces.
static_assert(std::is_same_v<lris::pinned_allocator<host_backend>::space,
                             lris::pinned_space<host_backend>>);
static_assert(std::is_same_v<lris::device_allocator<host_backend>::space,
                             lris::device_space<host_backend>>);
static_assert(std::is_same_v<lris::caching_pool<lris::numa_allocator>::space, lris::host_space>);

}  // namespace

TEST_CASE("allocator properties agree with their spaces", "[memory][concepts]") {
  // The same facts at run time, so that a failing trait shows up as a test failure too.
  CHECK(lris::pageable_allocator::properties.host_accessible);
  CHECK_FALSE(lris::pageable_allocator::properties.device_accessible);
  CHECK(lris::device_allocator<host_backend>::properties.device_accessible);
  CHECK_FALSE(lris::device_allocator<host_backend>::properties.host_accessible);
  CHECK(lris::pinned_allocator<host_backend>::properties.pinned);
  CHECK(lris::pinned_allocator<host_backend>::properties.host_accessible);
  CHECK(lris::registered_allocator<lris::page_aligned_allocator,
                                   host_backend>::properties.page_aligned);
}
