#pragma once
/// @file
/// @brief pageable_allocator: ordinary host memory from aligned operator new.

#include <cstddef>
#include <new>
#include <string_view>

#include <lris/concepts/allocator_policy.hpp>
#include <lris/concepts/memory_properties.hpp>
#include <lris/memory/detail/allocation.hpp>
#include <lris/concepts/memory_space.hpp>

namespace lris {

/// @brief Pageable host memory from `operator new(std::align_val_t)`. Stateless; all instances
/// are interchangeable.
///
/// Memory from here reaches a device at full speed only through staging or registration
/// (registered_allocator); it is the cheapest allocator for everything else.
struct pageable_allocator {
  using space = host_space;
  static constexpr memory_properties properties = host_space::properties;
  /// @brief The allocator's name in messages.
  static constexpr std::string_view name = "pageable_allocator";

  /// @brief `bytes` bytes aligned to `alignment` (a power of two). Zero bytes give a distinct
  /// pointer that must still be deallocated.
  /// @throws lris::invalid_argument when `alignment` is not a power of two.
  /// @throws lris::out_of_memory when the memory cannot be had.
  [[nodiscard]] void* allocate(std::size_t bytes, std::size_t alignment = default_alignment) {
    detail::check_alignment(name, alignment);
    // libstdc++ (GCC 12) rounds the size up to the alignment without an overflow check, so a
    // request near SIZE_MAX would wrap to a tiny block: refuse those first.
    (void)detail::checked_add(name, bytes, alignment - 1, alignment);
    // nothrow: the sanitizers' operator new aborts on huge sizes instead of throwing bad_alloc,
    // and out_of_memory carries the size and alignment, which bad_alloc does not.
    void* p = ::operator new(detail::at_least_one(bytes), std::align_val_t{alignment},
                             std::nothrow);
    if (p == nullptr) detail::throw_out_of_memory(name, bytes, alignment, "operator new failed");
    return p;
  }

  /// @brief Frees what allocate(bytes, alignment) returned.
  void deallocate(void* p, std::size_t /*bytes*/,
                  std::size_t alignment = default_alignment) noexcept {
    ::operator delete(p, std::align_val_t{alignment});
  }

  friend constexpr bool operator==(pageable_allocator, pageable_allocator) noexcept {
    return true;
  }
};

static_assert(allocator_policy<pageable_allocator>);
static_assert(host_allocator<pageable_allocator>);

}  // namespace lris
