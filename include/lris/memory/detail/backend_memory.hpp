#pragma once
/// @file
/// @brief Aligned allocation on top of a backend's alignment-less allocation functions
/// (allocate_pinned, allocate_device), shared by pinned_allocator and device_allocator.

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string_view>
#include <unordered_map>

#include <lris/error.hpp>
#include <lris/memory/detail/allocation.hpp>

namespace lris::detail {

/// @brief The alignment `B::allocate_pinned` guarantees: `B::pinned_alignment` where the
/// backend publishes it, else 256 (what CUDA and HIP promise for every allocation).
template <class B>
[[nodiscard]] consteval std::size_t pinned_alignment_of() noexcept {
  if constexpr (requires { { B::pinned_alignment } -> std::convertible_to<std::size_t>; }) {
    return B::pinned_alignment;
  } else {
    return 256;
  }
}

/// @brief The alignment `B::allocate_device` guarantees: `B::device_alignment` or 256.
template <class B>
[[nodiscard]] consteval std::size_t device_alignment_of() noexcept {
  if constexpr (requires { { B::device_alignment } -> std::convertible_to<std::size_t>; }) {
    return B::device_alignment;
  } else {
    return 256;
  }
}

/// @brief Aligned pointer -> the base the backend returned, for over-aligned blocks.
///
/// Device memory cannot hold a header in front of the block (the CPU cannot write it), so the
/// base lives here instead. Only allocations stricter than the backend's guarantee use it.
class over_aligned_table {
 public:
  void insert(void* aligned, void* base) {
    std::lock_guard lock(mutex_);
    bases_.emplace(aligned, base);
  }
  /// @brief The base recorded for `aligned`, forgotten from now on (null when unknown).
  [[nodiscard]] void* take(void* aligned) noexcept {
    std::lock_guard lock(mutex_);
    const auto it = bases_.find(aligned);
    if (it == bases_.end()) return nullptr;
    void* base = it->second;
    bases_.erase(it);
    return base;
  }

 private:
  std::mutex mutex_;
  std::unordered_map<void*, void*> bases_;
};

/// @brief The process-wide table of allocator type `Tag`. Process-wide rather than per object
/// so that allocators stay cheap stateless values and any copy frees any other's blocks.
template <class Tag>
[[nodiscard]] over_aligned_table& over_aligned_table_for() {
  static over_aligned_table table;
  return table;
}

/// @brief `bytes` bytes aligned to `alignment` from `alloc(n)`, a function that guarantees
/// only `natural` alignment. A backend out_of_memory is rethrown naming `who`.
template <class Alloc, class Free>
[[nodiscard]] void* backend_allocate(std::string_view who, std::size_t bytes,
                                     std::size_t alignment, std::size_t natural,
                                     over_aligned_table& table, Alloc&& alloc, Free&& free) {
  check_alignment(who, alignment);
  const std::size_t n = at_least_one(bytes);
  const bool over = alignment > natural;
  const std::size_t total = over ? checked_add(who, n, alignment - natural, alignment) : n;
  void* base = nullptr;
  try {
    base = alloc(total);
  } catch (const out_of_memory& e) {
    throw_out_of_memory(who, bytes, alignment, e.what());
  }
  if (base == nullptr) throw_out_of_memory(who, bytes, alignment, "the backend returned null");
  if (!over) return base;
  const auto b = reinterpret_cast<std::uintptr_t>(base);
  void* aligned = reinterpret_cast<void*>((b + alignment - 1) &
                                          ~static_cast<std::uintptr_t>(alignment - 1));
  try {
    table.insert(aligned, base);
  } catch (...) {
    free(base, total);
    throw;
  }
  return aligned;
}

/// @brief Frees what backend_allocate(bytes, alignment, natural) returned.
template <class Free>
void backend_deallocate(void* p, std::size_t bytes, std::size_t alignment, std::size_t natural,
                        over_aligned_table& table, Free&& free) noexcept {
  if (p == nullptr) return;
  const std::size_t n = at_least_one(bytes);
  if (alignment <= natural) {
    free(p, n);
    return;
  }
  void* base = table.take(p);
  if (base != nullptr) free(base, n + (alignment - natural));
}

}  // namespace lris::detail
