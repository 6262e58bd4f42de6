// huge_page_allocator: which pages it gets, how it counts them, and `require`.

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <sys/mman.h>

#include <catch2/catch.hpp>

#include <lris/error.hpp>
#include <lris/memory/huge_page_allocator.hpp>

#include "support/smaps.hpp"

namespace {

using lris::page_kind;

constexpr std::size_t mib = std::size_t{1} << 20;

// True while every page of [p, p + n) is mapped: mincore fails with ENOMEM on unmapped ranges.
bool mapped(void* p, std::size_t n) {
  std::vector<unsigned char> vec((n + 4095) / 4096);
  return ::mincore(p, n, vec.data()) == 0;
}
bool unmapped(void* p, std::size_t n) {
  std::vector<unsigned char> vec((n + 4095) / 4096);
  return ::mincore(p, n, vec.data()) != 0 && errno == ENOMEM;
}

// What a 4 MiB request should get on this machine, from what the kernel reports.
page_kind expected_for_4mib() {
  if (lris::reserved_huge_pages(page_kind::huge_2m).free >= 2) return page_kind::huge_2m;
  const auto mode = lris::transparent_huge_page_mode();
  if (mode == lris::thp_mode::always || mode == lris::thp_mode::madvise) return page_kind::thp;
  return page_kind::normal;
}

}  // namespace

TEST_CASE("page_kind names", "[memory][huge_pages]") {
  CHECK(lris::to_string(page_kind::normal) == "normal");
  CHECK(lris::to_string(page_kind::thp) == "thp");
  CHECK(lris::to_string(page_kind::huge_2m) == "2MiB");
  CHECK(lris::to_string(page_kind::huge_1g) == "1GiB");
  CHECK(lris::page_bytes(page_kind::huge_2m) == 2 * mib);
  CHECK(lris::page_bytes(page_kind::huge_1g) == 1024 * mib);
  CHECK(lris::page_bytes(page_kind::normal) >= 4096);
}

TEST_CASE("huge_page_allocator reports the kind it got and counts it", "[memory][huge_pages]") {
  lris::huge_page_allocator a;
  const lris::huge_page_allocator copy = a;
  const std::size_t n = 4 * mib;
  const lris::huge_allocation got = a.allocate_reporting(n);
  REQUIRE(got.ptr != nullptr);
  INFO("got " << lris::to_string(got.kind) << ", " << got.mapped_bytes << " bytes mapped");
  CHECK(got.kind == expected_for_4mib());
  CHECK(got.mapped_bytes >= n);
  CHECK(got.mapped_bytes % lris::page_bytes(got.kind) == 0);
  CHECK(reinterpret_cast<std::uintptr_t>(got.ptr) % lris::page_bytes(got.kind) == 0);
  std::memset(got.ptr, 0x77, n);
  CHECK(mapped(got.ptr, got.mapped_bytes));

  // Statistics are shared by every copy.
  const lris::huge_page_stats s = copy.stats();
  CHECK(s.count(got.kind) == 1);
  CHECK(s.bytes(got.kind) == got.mapped_bytes);
  CHECK(s.live_mappings == 1);
  for (const page_kind k : {page_kind::normal, page_kind::thp, page_kind::huge_2m,
                            page_kind::huge_1g}) {
    if (k != got.kind) CHECK(s.count(k) == 0);
  }
  if (got.kind == page_kind::thp) {
    const long kb = lris::test::smaps_kb(got.ptr, "AnonHugePages");
    if (kb <= 0) WARN("madvise(MADV_HUGEPAGE) took, but the kernel backed the range with base "
                      "pages (fragmentation or defrag settings)");
    else CHECK(kb % 2048 == 0);
  }

  // Freed through the copy: the whole mapping is gone, and the counters say so.
  lris::huge_page_allocator freer = copy;
  freer.deallocate(got.ptr, n);
  CHECK(unmapped(got.ptr, got.mapped_bytes));
  const lris::huge_page_stats after = a.stats();
  CHECK(after.live_mappings == 0);
  CHECK(after.bytes(got.kind) == 0);
  CHECK(after.count(got.kind) == 1);  // allocations made, not live
}

TEST_CASE("huge_page_allocator gives small requests normal pages", "[memory][huge_pages]") {
  lris::huge_page_allocator a;
  const auto got = a.allocate_reporting(4096, 64);
  CHECK(got.kind == page_kind::normal);
  CHECK(got.mapped_bytes == lris::page_bytes(page_kind::normal));
  a.deallocate(got.ptr, 4096, 64);
  CHECK(unmapped(got.ptr, got.mapped_bytes));
}

TEST_CASE("huge_page_allocator honours preferred = normal", "[memory][huge_pages]") {
  lris::huge_page_allocator a({.preferred = page_kind::normal});
  const auto got = a.allocate_reporting(8 * mib);
  CHECK(got.kind == page_kind::normal);
  CHECK(a.stats().count(page_kind::normal) == 1);
  a.deallocate(got.ptr, 8 * mib);
}

TEST_CASE("huge_page_allocator unmaps over-aligned mappings exactly", "[memory][huge_pages]") {
  lris::huge_page_allocator a;
  const std::size_t alignment = 64 * mib;
  const auto got = a.allocate_reporting(5 * mib, alignment);
  CHECK(reinterpret_cast<std::uintptr_t>(got.ptr) % alignment == 0);
  CHECK(mapped(got.ptr, got.mapped_bytes));
  // The slack mapped for alignment was trimmed: the page after the block is not ours.
  auto* after = static_cast<unsigned char*>(got.ptr) + got.mapped_bytes;
  CHECK(unmapped(after, 4096));
  a.deallocate(got.ptr, 5 * mib, alignment);
  CHECK(unmapped(got.ptr, got.mapped_bytes));
}

TEST_CASE("huge_page_allocator with `require` and no reserved pages throws unsupported",
          "[memory][huge_pages]") {
  for (const page_kind kind : {page_kind::huge_1g, page_kind::huge_2m}) {
    const lris::huge_page_reservation r = lris::reserved_huge_pages(kind);
    INFO(lris::to_string(kind) << ": " << r.path << " total " << r.total << " free " << r.free);
    if (r.total != 0) {
      WARN(lris::to_string(kind) << " pages are reserved here; the refusal is not testable");
      continue;
    }
    lris::huge_page_allocator a({.preferred = kind, .require = true});
    try {
      void* p = a.allocate(16 * mib);
      a.deallocate(p, 16 * mib);
      FAIL("required " << lris::to_string(kind) << " pages were handed out with none reserved");
    } catch (const lris::unsupported& e) {
      const std::string what = e.what();
      INFO(what);
      CHECK_THAT(what, Catch::Matchers::Contains(std::string(lris::to_string(kind))));
      CHECK_THAT(what, Catch::Matchers::Contains("/sys/kernel/mm/hugepages"));
      if (r.present) CHECK_THAT(what, Catch::Matchers::Contains("nr_hugepages is 0"));
    }
    CHECK(a.stats().live_mappings == 0);
  }
}

TEST_CASE("huge_page_allocator falls back without `require`", "[memory][huge_pages]") {
  lris::huge_page_allocator a({.preferred = page_kind::huge_1g});
  const std::size_t n = 1024 * mib;  // big enough to try 1 GiB pages first
  const auto got = a.allocate_reporting(n);
  if (lris::reserved_huge_pages(page_kind::huge_1g).free == 0) {
    CHECK(got.kind != page_kind::huge_1g);
  }
  CHECK(a.stats().count(got.kind) == 1);
  a.deallocate(got.ptr, n);
}

TEST_CASE("huge_page_allocator with `require` of THP", "[memory][huge_pages]") {
  lris::huge_page_allocator a({.preferred = page_kind::thp, .require = true});
  const auto mode = lris::transparent_huge_page_mode();
  if (mode == lris::thp_mode::always || mode == lris::thp_mode::madvise) {
    const auto got = a.allocate_reporting(4096);  // `require` insists even for a small block
    CHECK(got.kind == page_kind::thp);
    CHECK(got.mapped_bytes == lris::page_bytes(page_kind::thp));
    a.deallocate(got.ptr, 4096);
  } else {
    CHECK_THROWS_AS(a.allocate(4 * mib), lris::unsupported);
  }
}
