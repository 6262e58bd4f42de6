// process_mappings and probe_ends: memory this process may write (or read) told apart from
// read-only and unmapped memory, with the byte at fault, across the boundaries of mappings.

#include <cstddef>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <lris/memory/process_mappings.hpp>

namespace {
const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}  // namespace

TEST_CASE("process_mappings: writable, read-only and unmapped memory, the first byte at fault",
          "[memory][mappings][errors]") {
  // Nine pages: 0-2 writable, 3-4 read-only, 5 unmapped, 6-7 writable, 8 unmapped.
  auto* base = static_cast<std::byte*>(
      ::mmap(nullptr, 9 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  REQUIRE(base != MAP_FAILED);
  REQUIRE(::mprotect(base + 3 * page, 2 * page, PROT_READ) == 0);
  REQUIRE(::munmap(base + 5 * page, page) == 0);
  REQUIRE(::munmap(base + 8 * page, page) == 0);
  const auto maps = lris::process_mappings::read();
  if (!maps.known()) {
    WARN("no /proc/self/maps here: nothing to check against");
  } else {
    CHECK(maps.first_unwritable(base, 3 * page) == nullptr);
    CHECK(maps.first_unwritable(base + 100, 3 * page - 100) == nullptr);
    CHECK(maps.first_unwritable(base + 6 * page, 2 * page) == nullptr);
    CHECK(maps.first_unwritable(base + 2 * page + 8, page) == base + 3 * page);
    CHECK(maps.first_unwritable(base + 3 * page + 8, 16) == base + 3 * page + 8);
    CHECK(maps.first_unwritable(base + 5 * page + 1, 4) == base + 5 * page + 1);
    CHECK(maps.first_unwritable(base + 4 * page, 3 * page) == base + 4 * page);
    CHECK(maps.first_unwritable(base + 6 * page, 3 * page) == base + 8 * page);  // past the end
    CHECK(maps.first_unwritable(base + 3 * page, 0) == nullptr);  // no byte: nothing at fault
    // Read-only memory may be read; unmapped memory may not.
    CHECK(maps.first_unreadable(base, 5 * page) == nullptr);
    CHECK(maps.first_unreadable(base + 4 * page, 2 * page) == base + 5 * page);
    std::vector<char> heap(100);
    CHECK(maps.first_unwritable(heap.data(), heap.size()) == nullptr);
    static const char text[] = "a constant";
    CHECK(maps.first_unwritable(text, sizeof text) == reinterpret_cast<const std::byte*>(text));
  }
  // The probe of the two ends: the same answers where the ends decide them, bytes unchanged.
  base[page + 5] = std::byte{0x42};
  CHECK(lris::probe_ends(base + page + 5, 2 * page - 10, true) == nullptr);
  CHECK(base[page + 5] == std::byte{0x42});
  CHECK(lris::probe_ends(base + 2 * page + 8, page, true) == base + 3 * page + 7);  // last byte
  CHECK(lris::probe_ends(base + 3 * page + 8, 16, true) == base + 3 * page + 8);
  CHECK(lris::probe_ends(base + 3 * page + 8, 16, false) == nullptr);  // read-only: readable
  CHECK(lris::probe_ends(base + 5 * page + 1, 1, false) == base + 5 * page + 1);
  CHECK(lris::probe_ends(base + 4 * page, 3 * page, false) == nullptr);  // blind to page 5
  CHECK(lris::probe_ends(base + 3 * page, 0, true) == nullptr);
  ::munmap(base, 5 * page);
  ::munmap(base + 6 * page, 2 * page);
}
