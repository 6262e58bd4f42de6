#pragma once
/// @file
/// @brief page_aligned_allocator: host memory that starts and ends on page boundaries, as
/// O_DIRECT reads and writes require.

#include <algorithm>
#include <cstddef>
#include <new>
#include <string_view>

#include <unistd.h>

#include <lris/concepts/allocator_policy.hpp>
#include <lris/concepts/memory_properties.hpp>
#include <lris/memory/detail/allocation.hpp>
#include <lris/concepts/memory_space.hpp>

namespace lris {

/// @brief Pageable host memory aligned to at least the system page size, its size rounded up
/// to whole pages. Stateless.
///
/// Rounding the size as well as the start means an O_DIRECT read may always transfer whole
/// pages into the buffer without touching a neighbour's memory.
struct page_aligned_allocator {
  using space = host_space;
  static constexpr memory_properties properties{.host_accessible = true, .page_aligned = true};
  /// @brief The allocator's name in messages.
  static constexpr std::string_view name = "page_aligned_allocator";

  /// @brief The system page size (sysconf(_SC_PAGESIZE)), read once.
  [[nodiscard]] static std::size_t page_size() noexcept {
    static const std::size_t size = [] {
      const long v = ::sysconf(_SC_PAGESIZE);
      return v > 0 ? static_cast<std::size_t>(v) : std::size_t{4096};
    }();
    return size;
  }

  /// @brief `bytes` bytes (rounded up to whole pages) aligned to max(`alignment`, page size).
  /// @throws lris::invalid_argument when `alignment` is not a power of two.
  /// @throws lris::out_of_memory when the memory cannot be had.
  [[nodiscard]] void* allocate(std::size_t bytes, std::size_t alignment = default_alignment) {
    detail::check_alignment(name, alignment);
    const std::size_t align = std::max(alignment, page_size());
    // Rounded to `align`, not just to a page: libstdc++'s aligned new rounds to the alignment
    // itself, without an overflow check.
    const std::size_t rounded = detail::round_up(name, detail::at_least_one(bytes), align, align);
    void* p = ::operator new(rounded, std::align_val_t{align}, std::nothrow);
    if (p == nullptr) detail::throw_out_of_memory(name, bytes, align, "operator new failed");
    return p;
  }

  /// @brief Frees what allocate(bytes, alignment) returned.
  void deallocate(void* p, std::size_t /*bytes*/,
                  std::size_t alignment = default_alignment) noexcept {
    ::operator delete(p, std::align_val_t{std::max(alignment, page_size())});
  }

  friend constexpr bool operator==(page_aligned_allocator, page_aligned_allocator) noexcept {
    return true;
  }
};

static_assert(allocator_policy<page_aligned_allocator>);
static_assert(host_allocator<page_aligned_allocator>);

}  // namespace lris
