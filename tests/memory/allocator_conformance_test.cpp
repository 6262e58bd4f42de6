// The allocator_policy conformance suite: every model must pass every case here.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <limits>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include <lris/backends/host_backend.hpp>
#include <lris/concepts/allocator_policy.hpp>
#include <lris/error.hpp>
#include <lris/memory/caching_pool.hpp>
#include <lris/memory/device_allocator.hpp>
#include <lris/memory/huge_page_allocator.hpp>
#include <lris/memory/numa_allocator.hpp>
#include <lris/memory/page_aligned_allocator.hpp>
#include <lris/memory/pageable_allocator.hpp>
#include <lris/memory/pinned_allocator.hpp>
#include <lris/memory/registered_allocator.hpp>

#include "allocator_test_support.hpp"

namespace {

using lris::host_backend;
using lris_test::fill;
using lris_test::intact;

constexpr std::size_t kib = std::size_t{1} << 10;
constexpr std::size_t mib = std::size_t{1} << 20;

std::uintptr_t address(const void* p) { return reinterpret_cast<std::uintptr_t>(p); }

const std::vector<std::size_t>& alignments() {
  static const std::vector<std::size_t> v = [] {
    std::vector<std::size_t> a;
    for (std::size_t x = 8; x <= 4096; x *= 2) a.push_back(x);
    return a;
  }();
  return v;
}

// Catch's type lists split on commas, so multi-argument templates need one-word names.
using registered_pageable = lris::registered_allocator<lris::pageable_allocator, host_backend>;
using registered_numa = lris::registered_allocator<lris::numa_allocator, host_backend>;

}  // namespace

#define LRIS_ALLOCATOR_MODELS                                                                 \
  lris::pageable_allocator, lris::page_aligned_allocator, lris::numa_allocator,              \
      lris::huge_page_allocator, lris::pinned_allocator<host_backend>,                        \
      registered_pageable, registered_numa,                                                   \
      lris::device_allocator<host_backend>, lris::caching_pool<lris::pageable_allocator>,     \
      lris::caching_pool<lris::huge_page_allocator>,                                          \
      lris::caching_pool<lris::pinned_allocator<host_backend>>,                               \
      lris::caching_pool<lris::device_allocator<host_backend>>

TEMPLATE_TEST_CASE("allocator conformance: static shape", "[memory][conformance]",
                   LRIS_ALLOCATOR_MODELS) {
  STATIC_REQUIRE(lris::allocator_policy<TestType>);
  // An allocator cannot promise more than its space: CPU access in particular.
  STATIC_REQUIRE(TestType::properties.host_accessible ==
                 TestType::space::properties.host_accessible);
  STATIC_REQUIRE(TestType::properties.pinned == TestType::space::properties.pinned);
  STATIC_REQUIRE(lris::host_allocator<TestType> == TestType::properties.host_accessible);
}

TEMPLATE_TEST_CASE("allocator conformance: alignment over sizes 1 B to 64 MiB",
                   "[memory][conformance]", LRIS_ALLOCATOR_MODELS) {
  TestType a{};
  const std::vector<std::size_t> sizes = {1,          7,           64,          255,
                                          4 * kib,    4 * kib + 1, 64 * kib + 3, mib,
                                          2 * mib,    3 * mib + 5, 64 * mib};
  const std::size_t page = lris::page_aligned_allocator::page_size();
  for (const std::size_t n : sizes) {
    for (const std::size_t alignment : alignments()) {
      INFO("size " << n << ", alignment " << alignment);
      void* p = a.allocate(n, alignment);
      REQUIRE(p != nullptr);
      CHECK(address(p) % alignment == 0);
      if constexpr (TestType::properties.page_aligned) CHECK(address(p) % page == 0);
      // The first and last bytes are usable.
      const unsigned char ends[2] = {0xA5, 0x5A};
      unsigned char back[2] = {};
      lris_test::access<TestType>::write(p, &ends[0], 1);
      lris_test::access<TestType>::write(static_cast<char*>(p) + n - 1, &ends[1], 1);
      lris_test::access<TestType>::read(&back[0], p, 1);
      lris_test::access<TestType>::read(&back[1], static_cast<char*>(p) + n - 1, 1);
      CHECK(back[0] == (n == 1 ? ends[1] : ends[0]));  // one byte: first is last
      CHECK(back[1] == ends[1]);
      a.deallocate(p, n, alignment);
    }
  }
}

TEMPLATE_TEST_CASE("allocator conformance: every byte of live blocks holds what was written",
                   "[memory][conformance]", LRIS_ALLOCATOR_MODELS) {
  TestType a{};
  const std::vector<std::size_t> sizes = {1, 4095, 3 * 4096 + 17, mib, 16 * mib + 1, 64 * mib};
  struct block {
    void* p;
    std::size_t n;
  };
  std::vector<block> blocks;
  // All blocks live at once: a block that overlapped another would corrupt its pattern.
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    void* p = a.allocate(sizes[i], lris::default_alignment);
    blocks.push_back({p, sizes[i]});
    fill<TestType>(p, 1000 + i, sizes[i]);
  }
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    INFO("size " << blocks[i].n);
    CHECK(intact<TestType>(blocks[i].p, 1000 + i, blocks[i].n));
  }
  for (const auto& b : blocks) a.deallocate(b.p, b.n, lris::default_alignment);
}

TEMPLATE_TEST_CASE("allocator conformance: 8 threads allocating and freeing at random",
                   "[memory][conformance][threads]", LRIS_ALLOCATOR_MODELS) {
  TestType shared_allocator{};
  constexpr int threads = 8;
  constexpr int operations = 300;
  std::atomic<std::size_t> corrupted{0};
  std::atomic<std::size_t> misaligned{0};
  std::atomic<std::size_t> allocations{0};
  std::mutex error_mutex;
  std::exception_ptr first_error;

  auto worker = [&](int t) {
    try {
      TestType a = shared_allocator;  // copies must share state safely
      std::mt19937_64 rng(0x5EEDull * 977 + static_cast<unsigned>(t));
      struct live {
        void* p;
        std::size_t n;
        std::size_t alignment;
        std::uint64_t stamp;
      };
      std::vector<live> blocks;
      auto release = [&](std::size_t i) {
        const live b = blocks[i];
        if (!intact<TestType>(b.p, b.stamp, b.n)) ++corrupted;
        a.deallocate(b.p, b.n, b.alignment);
        blocks[i] = blocks.back();
        blocks.pop_back();
      };
      for (int op = 0; op < operations; ++op) {
        if (!blocks.empty() && (blocks.size() >= 16 || rng() % 3 == 0)) {
          release(rng() % blocks.size());
          continue;
        }
        const std::uint64_t r = rng() % 100;
        const std::size_t n = r < 70   ? rng() % (8 * kib)
                              : r < 97 ? rng() % (256 * kib)
                                       : 2 * mib + rng() % mib;
        const std::size_t alignment = alignments()[rng() % alignments().size()];
        void* p = a.allocate(n, alignment);
        ++allocations;
        if (address(p) % alignment != 0) ++misaligned;
        const std::uint64_t stamp =
            (static_cast<std::uint64_t>(t) << 32) | static_cast<unsigned>(op);
        fill<TestType>(p, stamp, n);
        blocks.push_back({p, n, alignment, stamp});
      }
      while (!blocks.empty()) release(blocks.size() - 1);
    } catch (...) {
      std::lock_guard lock(error_mutex);
      if (!first_error) first_error = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(worker, t);
  for (auto& th : pool) th.join();
  if (first_error) std::rethrow_exception(first_error);
  CHECK(allocations.load() > threads * operations / 2);
  CHECK(misaligned.load() == 0);
  CHECK(corrupted.load() == 0);
}

TEMPLATE_TEST_CASE("allocator conformance: impossible sizes are out_of_memory, not a wrap",
                   "[memory][conformance][oom]", LRIS_ALLOCATOR_MODELS) {
  TestType a{};
  SECTION("1 PiB") {
    const std::size_t pib = std::size_t{1} << 50;
    try {
      void* p = a.allocate(pib, lris::default_alignment);
      a.deallocate(p, pib, lris::default_alignment);
      FAIL("a 1 PiB allocation succeeded");
    } catch (const lris::out_of_memory& e) {
      CHECK_THAT(e.what(), Catch::Matchers::Contains("1125899906842624"));
      CHECK(e.requested() == pib);
    }
  }
  SECTION("sizes near SIZE_MAX") {
    constexpr std::size_t max = std::numeric_limits<std::size_t>::max();
    for (const std::size_t n : {max, max - 1, max - 100, max / 2 + 1}) {
      for (const std::size_t alignment : {std::size_t{8}, std::size_t{4096}}) {
        INFO("size " << n << ", alignment " << alignment);
        CHECK_THROWS_AS(a.deallocate(a.allocate(n, alignment), n, alignment),
                        lris::out_of_memory);
      }
    }
  }
  // The failure left nothing broken.
  void* p = a.allocate(4096, 64);
  fill<TestType>(p, 7, 4096);
  CHECK(intact<TestType>(p, 7, 4096));
  a.deallocate(p, 4096, 64);
}

TEMPLATE_TEST_CASE("allocator conformance: an alignment that is not a power of two is refused",
                   "[memory][conformance]", LRIS_ALLOCATOR_MODELS) {
  TestType a{};
  for (const std::size_t bad :
       {std::size_t{0}, std::size_t{3}, std::size_t{48}, std::size_t{4095}}) {
    INFO("alignment " << bad);
    try {
      void* p = a.allocate(64, bad);
      a.deallocate(p, 64, bad);
      FAIL("alignment " << bad << " was accepted");
    } catch (const lris::invalid_argument& e) {
      CHECK_THAT(e.what(), Catch::Matchers::Contains("alignment " + std::to_string(bad)));
    }
  }
}

TEMPLATE_TEST_CASE("allocator conformance: zero-byte requests give distinct freeable pointers",
                   "[memory][conformance]", LRIS_ALLOCATOR_MODELS) {
  TestType a{};
  for (const std::size_t alignment : alignments()) {
    void* p = a.allocate(0, alignment);
    void* q = a.allocate(0, alignment);
    REQUIRE(p != nullptr);
    REQUIRE(q != nullptr);
    CHECK(p != q);
    CHECK(address(p) % alignment == 0);
    CHECK(address(q) % alignment == 0);
    a.deallocate(q, 0, alignment);
    a.deallocate(p, 0, alignment);
  }
}

TEMPLATE_TEST_CASE("allocator conformance: copies compare equal and free each other's memory",
                   "[memory][conformance]", LRIS_ALLOCATOR_MODELS) {
  TestType a{};
  TestType b = a;
  CHECK(a == b);
  void* p = a.allocate(10000, 512);
  fill<TestType>(p, 42, 10000);
  CHECK(intact<TestType>(p, 42, 10000));
  b.deallocate(p, 10000, 512);
  TestType c{};
  c = b;
  CHECK(c == a);
}
