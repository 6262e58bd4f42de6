// The staging ring: slots made now or as a transfer goes, the bound kept for those not made
// yet, and a transfer that runs out of pinned memory part way finishing with the slots it has.
#include <catch2/catch.hpp>

#include "support/what_contains.hpp"

#include <atomic>
#include <chrono>
#include <thread>
#include <cstring>
#include <memory>
#include <vector>

#include <lris/lris.hpp>

using lris::host_backend;

namespace {

// Pinned memory of the host backend that runs out after `left` allocations (shared by copies).
struct running_out {
  using space = lris::pinned_space<host_backend>;
  static constexpr lris::memory_properties properties = space::properties;
  std::shared_ptr<std::atomic<int>> left = std::make_shared<std::atomic<int>>(1 << 30);
  std::shared_ptr<std::atomic<int>> made = std::make_shared<std::atomic<int>>(0);

  void* allocate(std::size_t n, std::size_t alignment) {
    if (left->fetch_sub(1) <= 0) throw lris::out_of_memory("test: no more pinned memory", n);
    ++*made;
    return lris::pinned_allocator<host_backend>().allocate(n, alignment);
  }
  void deallocate(void* p, std::size_t n, std::size_t alignment) noexcept {
    lris::pinned_allocator<host_backend>().deallocate(p, n, alignment);
  }
  bool operator==(const running_out& o) const noexcept { return left == o.left; }
};
static_assert(lris::allocator_policy<running_out>);

using ring = lris::detail::staging_ring<host_backend, running_out>;

}  // namespace

TEST_CASE("staging ring: slots made now, or room kept for the caller to make", "[exec][ring]") {
  running_out alloc;
  ring r(host_backend{}, alloc, 4 << 20);
  // Made now: all four.
  auto now = r.acquire(4, 1 << 20);
  CHECK(now.size() == 4);
  CHECK(*alloc.made == 4);
  r.release(now);
  // Free slots are taken first, whatever is asked.
  std::size_t unmade = 99;
  auto again = r.acquire(4, 1 << 20, &unmade);
  CHECK(again.size() == 4);
  CHECK(unmade == 0);
  CHECK(*alloc.made == 4);
  r.release(again);

  // Another size: the cached slots give way; one is made now, the room of three is kept.
  auto first = r.acquire(3, 1 << 20, &unmade);  // takes three cached ones
  CHECK(first.size() == 3);
  r.release(first);
  ring fresh(host_backend{}, alloc, 4 << 20);
  auto lazy = fresh.acquire(4, 1 << 20, &unmade);
  CHECK(lazy.size() == 1);
  CHECK(unmade == 3);
  CHECK(*alloc.made == 5);
  // The kept room counts against the bound: another transfer gets nothing made, so it waits;
  // here it asks after the room is made and given back.
  auto* two = fresh.make(1 << 20);
  CHECK(*alloc.made == 6);
  lazy.push_back(two);
  fresh.release(lazy, 2, 1 << 20);  // two made slots back, two slots of room never made
  auto all = fresh.acquire(4, 1 << 20, &unmade);
  CHECK(all.size() == 2);  // the free ones
  CHECK(unmade == 2);      // and the room given back, kept again
  fresh.release(all, unmade, 1 << 20);
}

TEST_CASE("staging ring: pinned memory that runs out", "[exec][ring][errors]") {
  running_out alloc;
  *alloc.left = 0;
  ring r(host_backend{}, alloc, 4 << 20);
  std::size_t unmade = 0;
  REQUIRE_THROWS_MATCHES(r.acquire(2, 1 << 20, &unmade), lris::out_of_memory,
                         lris::test::what_contains("no more pinned memory"));
  *alloc.left = 1;
  auto one = r.acquire(2, 1 << 20, &unmade);
  REQUIRE(one.size() == 1);
  REQUIRE(unmade == 1);
  REQUIRE_THROWS_AS(r.make(1 << 20), lris::out_of_memory);
  r.release(one, unmade, 1 << 20);
}

TEST_CASE("a transfer pins its slots as it goes, and finishes with those it has when pinned "
          "memory runs out", "[exec][ring]") {
  // "Device" -> pageable through slots of 1 MiB, a worker per CPU (up to 8): each chunk holds
  // its slot while its progress report sleeps, so that every worker needs a slot at once; the
  // transfer makes 1 before it starts and the others as it goes. With memory for 1 slot, it is
  // refused the second and goes on with the one.
  for (const int pinned : {1, 1 << 20}) {
    CAPTURE(pinned);
    running_out alloc;
    *alloc.left = pinned;
    lris::pipeline<lris::staged, host_backend, running_out> p(
        lris::staged{.chunk_bytes = 1 << 20, .workers = 8}, host_backend{}, alloc);
    std::vector<std::byte> src(24 << 20);
    for (std::size_t i = 0; i < src.size(); ++i) src[i] = static_cast<std::byte>(i * 7 + (i >> 20));
    lris::buffer<lris::device_allocator<host_backend>, std::byte> dev(src.size());
    std::memcpy(dev.data(), src.data(), src.size());
    std::vector<std::byte> back(src.size());
    lris::transfer_options o;
    o.on_progress = [](std::uint64_t, std::uint64_t) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      return true;
    };
    const auto st = p.copy(lris::as_host(back), dev.span(), o).wait();
    CHECK(back == src);
    CHECK(st.bytes == src.size());
    CHECK(st.ring_slots == 2 * st.workers);  // what the ring let it have, made or not
    // Only what it needed at once: a slot per worker that ran (the context's compute threads).
    const int workers = static_cast<int>(std::min<std::size_t>(st.workers, p.context()->compute().size()));
    CHECK(*alloc.made == std::min(pinned, workers));
    // A second transfer finds the slots made, and makes no more where memory ran out.
    std::vector<std::byte> again(src.size());
    p.copy(lris::as_host(again), dev.span(), o).wait();
    CHECK(again == src);
    CHECK(*alloc.made <= std::min(pinned, 2 * workers));
  }
}
