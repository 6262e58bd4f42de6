#pragma once
/// @file
/// @brief huge_page_allocator: host memory on 1 GiB or 2 MiB huge pages where the machine has
/// them, transparent huge pages or ordinary pages where it does not, and which one it got.
///
/// Huge pages cut TLB misses when copy workers stream through gigabytes, and pinning a buffer
/// backed by huge pages costs the driver far fewer page-table walks. MAP_HUGETLB pages must be
/// reserved by the administrator (/sys/kernel/mm/hugepages/hugepages-*/nr_hugepages); THP
/// needs no reservation but is best effort. The mmap calls live in src/memory/huge_pages.cpp.

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <lris/concepts/allocator_policy.hpp>
#include <lris/concepts/memory_properties.hpp>
#include <lris/concepts/memory_space.hpp>

namespace lris {

/// @brief The kind of page that backs a mapping, from the smallest to the largest.
enum class page_kind : std::uint8_t {
  normal,   ///< base pages (4 KiB on x86-64)
  thp,      ///< transparent huge pages requested with madvise(MADV_HUGEPAGE); best effort
  huge_2m,  ///< MAP_HUGETLB with 2 MiB pages from the reserved pool
  huge_1g,  ///< MAP_HUGETLB with 1 GiB pages from the reserved pool
};

/// @brief The number of page_kind values (for arrays indexed by kind).
inline constexpr std::size_t page_kind_count = 4;

/// @brief "normal", "thp", "2MiB" or "1GiB".
[[nodiscard]] constexpr std::string_view to_string(page_kind k) noexcept {
  switch (k) {
    case page_kind::normal: return "normal";
    case page_kind::thp: return "thp";
    case page_kind::huge_2m: return "2MiB";
    case page_kind::huge_1g: return "1GiB";
  }
  return "?";
}

/// @brief The granularity of a mapping of kind `k`: the base page size for normal, 2 MiB for
/// thp and huge_2m, 1 GiB for huge_1g.
[[nodiscard]] std::size_t page_bytes(page_kind k) noexcept;

/// @brief The reserved pool of one hugetlb page size, read from sysfs.
struct huge_page_reservation {
  std::string path;           ///< the sysfs directory read, e.g. /sys/kernel/mm/hugepages/...
  bool present = false;       ///< the kernel supports this page size at all
  std::size_t page_bytes = 0; ///< size of one page
  std::size_t total = 0;      ///< nr_hugepages: pages reserved
  std::size_t free = 0;       ///< free_hugepages: reserved pages not yet mapped
};

/// @brief The reservation of `kind`'s pool (huge_2m or huge_1g; other kinds report nothing).
[[nodiscard]] huge_page_reservation reserved_huge_pages(page_kind kind);

/// @brief The system's transparent huge page setting.
enum class thp_mode : std::uint8_t { always, madvise, never, unavailable };

/// @brief /sys/kernel/mm/transparent_hugepage/enabled, read now.
[[nodiscard]] thp_mode transparent_huge_page_mode() noexcept;

/// @brief How huge_page_allocator chooses pages.
struct huge_page_options {
  /// The largest kind to try. Allocations try it, then each smaller kind in turn.
  page_kind preferred = page_kind::huge_1g;
  /// When true, only `preferred` will do: if it cannot be had, allocation throws
  /// lris::unsupported (none reserved / THP off) or lris::out_of_memory (pool exhausted).
  bool require = false;
};

/// @brief What allocate_reporting() got.
struct huge_allocation {
  void* ptr = nullptr;              ///< the memory (aligned as requested)
  page_kind kind = page_kind::normal;  ///< the pages that back it
  std::size_t mapped_bytes = 0;     ///< the length of the mapping, a multiple of page_bytes(kind)
};

/// @brief Counters of a huge_page_allocator and all of its copies.
struct huge_page_stats {
  std::array<std::uint64_t, page_kind_count> allocations{};  ///< allocations made, per kind
  std::array<std::size_t, page_kind_count> mapped_bytes{};   ///< bytes mapped now, per kind
  std::size_t live_mappings = 0;                             ///< mappings not yet freed

  /// @brief Allocations of kind `k` made so far.
  [[nodiscard]] std::uint64_t count(page_kind k) const noexcept {
    return allocations[static_cast<std::size_t>(k)];
  }
  /// @brief Bytes mapped now with pages of kind `k`.
  [[nodiscard]] std::size_t bytes(page_kind k) const noexcept {
    return mapped_bytes[static_cast<std::size_t>(k)];
  }
};

namespace detail {
struct huge_page_state;
}  // namespace detail

/// @brief Host memory from mmap on the largest pages available, falling back step by step:
/// 1 GiB hugetlb, 2 MiB hugetlb, THP (madvise), base pages.
///
/// When falling back, a hugetlb or THP kind is skipped for requests smaller than one of its
/// pages (a 4 KiB buffer should not consume a reserved 1 GiB page); with `require` the
/// preferred kind is used whatever the size. Every allocation is its own mapping, so this
/// allocator suits large, long-lived buffers (staging rings, weight arenas); put a
/// caching_pool in front of it for small ones. Copies share their mapping table and
/// statistics; memory may be freed through any copy.
class huge_page_allocator {
 public:
  using space = host_space;
  static constexpr memory_properties properties{.host_accessible = true, .page_aligned = true};
  /// @brief The allocator's name in messages.
  static constexpr std::string_view name = "huge_page_allocator";

  /// @brief Prefers 1 GiB pages and falls back down to normal pages.
  huge_page_allocator();
  /// @brief Chooses pages as `options` says.
  explicit huge_page_allocator(huge_page_options options);

  /// @brief allocate_reporting(bytes, alignment).ptr.
  [[nodiscard]] void* allocate(std::size_t bytes, std::size_t alignment = default_alignment) {
    return allocate_reporting(bytes, alignment).ptr;
  }
  /// @brief `bytes` bytes aligned to max(`alignment`, page), with the kind of pages it got.
  /// @throws lris::invalid_argument when `alignment` is not a power of two.
  /// @throws lris::unsupported when `require` is set and the preferred kind is not available.
  /// @throws lris::out_of_memory when no mapping can be made.
  [[nodiscard]] huge_allocation allocate_reporting(std::size_t bytes,
                                                   std::size_t alignment = default_alignment);
  /// @brief Unmaps what allocate(bytes, alignment) returned (the whole mapping it made).
  void deallocate(void* p, std::size_t bytes, std::size_t alignment = default_alignment) noexcept;

  /// @brief The counters shared by this allocator and its copies.
  [[nodiscard]] huge_page_stats stats() const;
  /// @brief The options it was made with.
  [[nodiscard]] huge_page_options options() const noexcept;

  /// @brief Copies of one allocator are equal; independently made allocators are not (each
  /// knows only its own mappings).
  friend bool operator==(const huge_page_allocator& a, const huge_page_allocator& b) noexcept {
    return a.state_ == b.state_;
  }

 private:
  std::shared_ptr<detail::huge_page_state> state_;
};

static_assert(allocator_policy<huge_page_allocator>);
static_assert(host_allocator<huge_page_allocator>);

}  // namespace lris
