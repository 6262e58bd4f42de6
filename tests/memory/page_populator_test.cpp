// page_populator: every page of the ranges made present and owned, the bytes already there kept,
// nothing outside the pages that hold them touched, a refusal that stops it (a range past the
// end of a file) reported, and its threads joined.

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <span>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <lris/memory/page_populator.hpp>

#include "support/smaps.hpp"

namespace {

const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));

// Threads of this process now.
std::size_t threads_now() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/task")) ++n;
  return n;
}

// Pages of [p, p + n) that are present.
std::size_t present_pages(void* p, std::size_t n) {
  std::vector<unsigned char> vec((n + page - 1) / page);
  REQUIRE(::mincore(p, n, vec.data()) == 0);
  std::size_t count = 0;
  for (unsigned char v : vec) count += v & 1;
  return count;
}

struct mapping {
  explicit mapping(std::size_t n) : bytes(n) {
    ptr = static_cast<std::byte*>(
        ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    REQUIRE(ptr != MAP_FAILED);
  }
  ~mapping() {
    if (bytes > 0) ::munmap(ptr, bytes);
  }
  std::byte* ptr = nullptr;
  std::size_t bytes;
};

}  // namespace

TEST_CASE("page_populator: every page present, the bytes written before kept", "[memory][populate]") {
  const std::size_t n = 64 * page + 123;  // a tail that ends inside a page
  mapping m(64 * page + page);
  // Bytes already written into some pages (as a read that got there first) stay as they are.
  std::memset(m.ptr + 3 * page, 0x5a, page);
  std::memset(m.ptr + 40 * page + 7, 0xa5, 100);
  {
    lris::page_populator pop(m.ptr, n, 3, 4 * page);  // 17 pieces over 3 threads
    pop.wait();
    CHECK(pop.threads() == 3);
    if (pop.error() == EINVAL) {
      WARN("this kernel has no MADV_POPULATE_WRITE (Linux 5.14): nothing populated");
      CHECK(pop.populated() == 0);
      return;
    }
    CHECK(pop.error() == 0);
    CHECK(pop.populated() == 65 * page);  // whole pages: the tail's page too
  }
  CHECK(present_pages(m.ptr, 65 * page) >= 65);  // the range, its last page included
  // Owned by the process: a page mincore counts may be the shared zero page (a read fault).
  CHECK(lris::test::smaps_kb(m.ptr, "Anonymous") >= static_cast<long>(65 * page / 1024));
  for (std::size_t i = 0; i < page; ++i) REQUIRE(m.ptr[3 * page + i] == std::byte{0x5a});
  for (std::size_t i = 0; i < 100; ++i) REQUIRE(m.ptr[40 * page + 7 + i] == std::byte{0xa5});
  CHECK(m.ptr[0] == std::byte{0});
  CHECK(m.ptr[64 * page] == std::byte{0});
}

TEST_CASE("page_populator: a range that cannot be populated stops it with the kernel's error",
          "[memory][populate][errors]") {
  // A shared mapping of 16 pages over a file of 8: the second half lies past the end of the
  // file, where an access would raise SIGBUS, so populating it fails (EFAULT).
  const int fd = ::memfd_create("page_populator_test", 0);
  REQUIRE(fd >= 0);
  REQUIRE(::ftruncate(fd, static_cast<off_t>(8 * page)) == 0);
  void* p = ::mmap(nullptr, 16 * page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  REQUIRE(p != MAP_FAILED);
  {
    lris::page_populator pop(p, 16 * page, 2, 2 * page);
    pop.wait();
    if (pop.error() == EINVAL) {
      WARN("this kernel has no MADV_POPULATE_WRITE (Linux 5.14): nothing to stop");
    } else {
      CHECK((pop.error() == EFAULT || pop.error() == ENOMEM));
      CHECK(pop.populated() <= 8 * page);
      CHECK(present_pages(p, 2 * page) == 2);  // the first piece, inside the file, came in
    }
  }
  ::munmap(p, 16 * page);
  ::close(fd);
}

TEST_CASE("page_populator: an empty range, and one destroyed at once", "[memory][populate]") {
  mapping m(1024 * page);
  const std::size_t before = threads_now();
  {
    lris::page_populator empty(m.ptr, 0, 2);
    empty.wait();
    CHECK(empty.threads() == 2);
    CHECK(empty.populated() == 0);
    CHECK(empty.error() == 0);
  }
  {
    lris::page_populator pop(m.ptr, 1024 * page, 2, page);  // a piece a page: many pieces
  }  // stopped after the pieces under way, and joined
  CHECK(threads_now() == before);
}

TEST_CASE("page_populator: ranges off page boundaries, in pieces, joined where they touch",
          "[memory][populate]") {
  mapping m(64 * page);
  std::memset(m.ptr + 10 * page, 0x33, 4 * page);  // written before: kept
  // A caller's tensors: one starting and ending inside pages, two that share a page (walked as
  // one), one given twice in a row, an empty one, and untouched pages between them.
  const std::vector<std::span<std::byte>> ranges{
      {m.ptr + 2 * page + 100, 3 * page},          // pages 2-5
      {m.ptr + 10 * page + 8, page - 8},           // page 10
      {m.ptr + 11 * page - 4, 3 * page + 4},       // pages 10-13, sharing page 10
      {m.ptr + 40 * page, std::size_t{0}},         // nothing
      {m.ptr + 30 * page, 8 * page},               // pages 30-37
      {m.ptr + 30 * page, 8 * page}};              // again: joined with the one before
  {
    lris::page_populator pop(ranges, 2, 3 * page);
    pop.wait();
    if (pop.error() == EINVAL) {
      WARN("this kernel has no MADV_POPULATE_WRITE (Linux 5.14): nothing populated");
      return;
    }
    CHECK(pop.error() == 0);
    CHECK(pop.populated() == (4 + 4 + 8) * page);
  }
  std::vector<unsigned char> vec(64);
  REQUIRE(::mincore(m.ptr, 64 * page, vec.data()) == 0);
  for (std::size_t i = 0; i < 64; ++i) {
    const bool wanted = (i >= 2 && i <= 5) || (i >= 10 && i <= 13) || (i >= 30 && i <= 37);
    INFO("page " << i);
    CHECK(static_cast<bool>(vec[i] & 1) == wanted);
  }
  for (std::size_t i = 0; i < 4 * page; ++i) REQUIRE(m.ptr[10 * page + i] == std::byte{0x33});
}
