// numa_allocator and the NUMA node listing.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

#include <linux/mempolicy.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <lris/error.hpp>
#include <lris/memory/numa_allocator.hpp>
#include <lris/system/host_info.hpp>

namespace {

// The node of the page at `p` and the policy covering it, as the kernel sees them. Raw
// syscalls keep the test independent of libnuma's own bookkeeping.
struct page_placement {
  long status = -1;
  int node = -1;
  int policy = -1;
};

page_placement placement(void* p) {
  page_placement r;
  int node = -1;
  r.status = ::syscall(SYS_get_mempolicy, &node, nullptr, 0, p, MPOL_F_NODE | MPOL_F_ADDR);
  r.node = node;
  int policy = -1;
  if (::syscall(SYS_get_mempolicy, &policy, nullptr, 0, p, MPOL_F_ADDR) == 0) r.policy = policy;
  return r;
}

}  // namespace

TEST_CASE("the calling CPU's node is one the host probe lists", "[memory][numa]") {
  const auto nodes = lris::probe_host().numa.nodes;
  REQUIRE(!nodes.empty());
  const int current = lris::numa_current_node();
  CHECK(std::any_of(nodes.begin(), nodes.end(),
                    [&](const auto& n) { return static_cast<int>(n.id) == current; }));
}

TEST_CASE("numa_allocator binds memory to node 0", "[memory][numa]") {
  lris::numa_allocator a(0);
  CHECK(a.node() == 0);
  CHECK(a.bound() == lris::numa_supported());
  const std::size_t n = 4 << 20;
  auto* p = static_cast<unsigned char*>(a.allocate(n, 4096));
  REQUIRE(p != nullptr);
  CHECK(reinterpret_cast<std::uintptr_t>(p) % 4096 == 0);
  std::memset(p, 0x3C, n);  // fault every page in, where the binding takes effect
  CHECK(p[0] == 0x3C);
  CHECK(p[n - 1] == 0x3C);
  if (a.bound()) {
    for (const std::size_t offset : {std::size_t{0}, n / 2, n - 1}) {
      const page_placement pl = placement(p + offset);
      INFO("offset " << offset);
      REQUIRE(pl.status == 0);
      CHECK(pl.node == 0);
      CHECK(pl.policy == MPOL_BIND);
    }
  } else {
    WARN("libnuma is unavailable here: numa_allocator fell back to unbound page-aligned memory");
  }
  a.deallocate(p, n, 4096);
}

TEST_CASE("numa_allocator honours alignments stricter than a page", "[memory][numa]") {
  lris::numa_allocator a(0);
  for (const std::size_t alignment : {std::size_t{8192}, std::size_t{2} << 20,
                                      std::size_t{64} << 20}) {
    INFO("alignment " << alignment);
    const std::size_t n = 3 * 4096 + 5;
    auto* p = static_cast<unsigned char*>(a.allocate(n, alignment));
    CHECK(reinterpret_cast<std::uintptr_t>(p) % alignment == 0);
    std::memset(p, 1, n);
    if (a.bound()) CHECK(placement(p).policy == MPOL_BIND);
    a.deallocate(p, n, alignment);
  }
}

TEST_CASE("numa_allocator's default node is the calling CPU's", "[memory][numa]") {
  const lris::numa_allocator a;
  const auto nodes = lris::probe_host().numa.nodes;
  CHECK(std::any_of(nodes.begin(), nodes.end(),
                    [&](const auto& n) { return static_cast<int>(n.id) == a.node(); }));
  CHECK(a == lris::numa_allocator(0));  // any numa_allocator frees any other's memory
}

TEST_CASE("numa_allocator refuses nodes that do not exist", "[memory][numa]") {
  const int count = lris::numa_node_count();
  const int missing = 1000 + count;
  try {
    lris::numa_allocator a(missing);
    FAIL("node " << missing << " was accepted");
  } catch (const lris::invalid_argument& e) {
    const std::string what = e.what();
    INFO(what);
    CHECK_THAT(what, Catch::Matchers::Contains("node " + std::to_string(missing)));
    CHECK_THAT(what, Catch::Matchers::Contains(std::to_string(count) + " NUMA node"));
  }
  CHECK_THROWS_AS(lris::numa_allocator(-1), lris::invalid_argument);
}
