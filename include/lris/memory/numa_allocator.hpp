#pragma once
/// @file
/// @brief numa_allocator: host memory bound to one NUMA node, and a listing of the nodes.
///
/// Staging buffers belong on the node nearest the GPU's PCIe root; memory on the far node
/// crosses the socket interconnect on every DMA. The libnuma calls live in src/memory/numa.cpp
/// so that this header (and every user of it) never includes numa.h.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include <lris/concepts/memory_property.hpp>
#include <lris/concepts/allocator_policy.hpp>
#include <lris/concepts/memory_properties.hpp>
#include <lris/concepts/memory_space.hpp>

namespace lris {

/// @brief True when libnuma works here (numa_available() >= 0). Containers whose seccomp
/// profile forbids get_mempolicy/mbind make it false even on multi-node hosts.
[[nodiscard]] bool numa_supported() noexcept;

/// @brief The number of NUMA nodes with memory (1 when NUMA is unsupported).
[[nodiscard]] int numa_node_count() noexcept;

/// @brief The node of the CPU the caller runs on now (0 when unknown or unsupported).
[[nodiscard]] int numa_current_node() noexcept;

/// @brief Binds the pages of [p, p + bytes), page-aligned and not touched yet, to NUMA node
/// `node` (MPOL_BIND); for shared memory (tmpfs) the binding holds for the segment's pages
/// whichever process touches them first. False, with `why` saying so, where libnuma is
/// unavailable or the kernel refuses (a container's seccomp profile, a node outside the
/// cpuset).
[[nodiscard]] bool bind_to_node(void* p, std::size_t bytes, int node, std::string& why) noexcept;

// The nodes themselves (memory, CPUs) are listed by probe_host() in lris/system/host_info.hpp.

/// @brief Host memory bound (MPOL_BIND) to one NUMA node through libnuma.
///
/// Allocations are page-aligned mappings of whole pages. Where libnuma is unusable
/// (numa_available() < 0) the allocator still works, handing out ordinary page-aligned memory,
/// and says so through bound() == false. Binding is enforced when pages are first touched: a
/// node that runs out of memory then triggers the OOM killer rather than an exception here.
class numa_allocator {
 public:
  using space = host_space;
  static constexpr memory_properties properties{.host_accessible = true, .page_aligned = true};
  /// @brief The allocator's name in messages.
  static constexpr std::string_view name = "numa_allocator";

  /// @brief Binds to the node of the CPU the constructing thread runs on.
  numa_allocator() noexcept;
  /// @brief Binds to `node`.
  /// @throws lris::invalid_argument naming the node and the nodes that exist, when `node` has
  /// no memory or does not exist.
  explicit numa_allocator(int node);

  /// @brief The node memory is bound to.
  [[nodiscard]] int node() const noexcept { return node_; }
  /// @brief property::numa_node: node().
  [[nodiscard]] int get_property(property::numa_node) const noexcept { return node_; }
  /// @brief True when allocations are really bound to node(); false on the page-aligned
  /// fallback used where libnuma is unusable.
  [[nodiscard]] bool bound() const noexcept { return bound_; }

  /// @brief `bytes` bytes (whole pages) on node(), aligned to max(`alignment`, page size).
  /// @throws lris::invalid_argument when `alignment` is not a power of two.
  /// @throws lris::out_of_memory when no mapping of that size can be made.
  [[nodiscard]] void* allocate(std::size_t bytes, std::size_t alignment = default_alignment);
  /// @brief Frees what allocate(bytes, alignment) returned.
  void deallocate(void* p, std::size_t bytes, std::size_t alignment = default_alignment) noexcept;

  /// @brief Always true: any numa_allocator frees any other's memory (numa_free is munmap of
  /// the size, whatever the node).
  friend bool operator==(const numa_allocator&, const numa_allocator&) noexcept { return true; }

 private:
  int node_ = 0;
  bool bound_ = false;
};

static_assert(allocator_policy<numa_allocator>);
static_assert(host_allocator<numa_allocator>);

}  // namespace lris
