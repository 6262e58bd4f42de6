/// @file
/// @brief The libnuma side of numa_allocator and the NUMA node listing.

#include <lris/memory/numa_allocator.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <new>
#include <string>

#include <numa.h>
#include <numaif.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <lris/error.hpp>
#include <lris/memory/detail/allocation.hpp>

namespace lris {
namespace {

std::size_t page_size() noexcept {
  static const std::size_t size = [] {
    const long v = ::sysconf(_SC_PAGESIZE);
    return v > 0 ? static_cast<std::size_t>(v) : std::size_t{4096};
  }();
  return size;
}

// numa_all_nodes_ptr: the nodes this task may allocate on (its cpuset's mems), which is what
// binding can use; nodes outside the cpuset would fail in mbind.
std::vector<int> allowed_nodes() {
  std::vector<int> nodes;
  if (!numa_supported()) {
    nodes.push_back(0);
    return nodes;
  }
  const int max_node = ::numa_max_node();
  for (int n = 0; n <= max_node; ++n) {
    if (::numa_bitmask_isbitset(::numa_all_nodes_ptr, static_cast<unsigned>(n))) {
      nodes.push_back(n);
    }
  }
  if (nodes.empty()) nodes.push_back(0);
  return nodes;
}

std::string describe_nodes(const std::vector<int>& nodes) {
  return fmt::format("{} NUMA node{} exist{}: {}", nodes.size(), nodes.size() == 1 ? "" : "s",
                     nodes.size() == 1 ? "s" : "", fmt::join(nodes, ", "));
}

}  // namespace

bool numa_supported() noexcept {
  static const bool supported = ::numa_available() >= 0;
  return supported;
}

int numa_node_count() noexcept {
  try {
    return static_cast<int>(allowed_nodes().size());
  } catch (...) {
    return 1;
  }
}

int numa_current_node() noexcept {
  if (!numa_supported()) return 0;
  const int cpu = ::sched_getcpu();
  if (cpu < 0) return 0;
  const int node = ::numa_node_of_cpu(cpu);
  return node < 0 ? 0 : node;
}

bool bind_to_node(void* p, std::size_t bytes, int node, std::string& why) noexcept {
  try {
    if (!numa_supported()) {
      why = "libnuma is unavailable here";
      return false;
    }
    if (node < 0 || node > ::numa_max_node()) {
      why = fmt::format("NUMA node {} does not exist", node);
      return false;
    }
    struct bitmask* mask = ::numa_allocate_nodemask();
    ::numa_bitmask_setbit(mask, static_cast<unsigned>(node));
    const long r = ::mbind(p, bytes, MPOL_BIND, mask->maskp, mask->size + 1, 0);
    const int e = errno;
    ::numa_free_nodemask(mask);
    if (r != 0) {
      why = fmt::format("mbind to node {} failed: {}", node, std::strerror(e));
      return false;
    }
    why.clear();
    return true;
  } catch (...) {
    why = "out of memory";
    return false;
  }
}

numa_allocator::numa_allocator() noexcept
    : node_(numa_current_node()), bound_(numa_supported()) {}

numa_allocator::numa_allocator(int node) : node_(node), bound_(numa_supported()) {
  const std::vector<int> nodes = allowed_nodes();
  if (std::find(nodes.begin(), nodes.end(), node) == nodes.end()) {
    throw invalid_argument(fmt::format("numa_allocator: NUMA node {} does not exist here ({}{})",
                                       node, describe_nodes(nodes),
                                       bound_ ? "" : "; libnuma is unavailable"));
  }
}

void* numa_allocator::allocate(std::size_t bytes, std::size_t alignment) {
  detail::check_alignment(name, alignment);
  const std::size_t page = page_size();
  const std::size_t align = std::max(alignment, page);
  const std::size_t size = detail::round_up(name, detail::at_least_one(bytes), page, align);
  const auto fail = [&](const char* why) {
    detail::throw_out_of_memory(fmt::format("numa_allocator(node {})", node_), bytes, align, why);
  };
  if (!bound_) {
    // libstdc++'s aligned new rounds to the alignment without an overflow check.
    (void)detail::round_up(name, size, align, align);
    void* p = ::operator new(size, std::align_val_t{align}, std::nothrow);
    if (p == nullptr) fail("operator new failed (libnuma unavailable, unbound fallback)");
    return p;
  }
  if (align == page) {
    void* p = ::numa_alloc_onnode(size, node_);
    if (p == nullptr) fail("numa_alloc_onnode failed");
    return p;
  }
  // mmap only promises page alignment: map the slack too, then unmap what lies either side of
  // the aligned block so that deallocate's numa_free(p, size) covers exactly what is left.
  const std::size_t total = detail::checked_add(name, size, align - page, align);
  void* raw = ::numa_alloc_onnode(total, node_);
  if (raw == nullptr) fail("numa_alloc_onnode failed");
  const auto base = reinterpret_cast<std::uintptr_t>(raw);
  const std::uintptr_t aligned = (base + align - 1) & ~static_cast<std::uintptr_t>(align - 1);
  const std::size_t head = aligned - base;
  const std::size_t tail = total - head - size;
  if (head != 0) ::munmap(raw, head);
  if (tail != 0) ::munmap(reinterpret_cast<void*>(aligned + size), tail);
  return reinterpret_cast<void*>(aligned);
}

void numa_allocator::deallocate(void* p, std::size_t bytes, std::size_t alignment) noexcept {
  const std::size_t page = page_size();
  const std::size_t align = std::max(alignment, page);
  if (!bound_) {
    ::operator delete(p, std::align_val_t{align});
    return;
  }
  // The same rounding as allocate; it cannot overflow here because allocate succeeded.
  const std::size_t size = (detail::at_least_one(bytes) + page - 1) & ~(page - 1);
  ::numa_free(p, size);
}

}  // namespace lris
