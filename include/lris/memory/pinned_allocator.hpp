#pragma once
/// @file
/// @brief pinned_allocator: page-locked host memory allocated by a backend
/// (cudaHostAlloc/hipHostMalloc, or host_backend's stand-in).

#include <concepts>
#include <cstddef>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include <fmt/format.h>

#include <lris/backends/host_backend.hpp>
#include <lris/concepts/allocator_policy.hpp>
#include <lris/concepts/backend_policy.hpp>
#include <lris/concepts/memory_properties.hpp>
#include <lris/memory/detail/backend_memory.hpp>
#include <lris/concepts/memory_space.hpp>

namespace lris {

/// @brief Pinned host memory from `Backend::allocate_pinned`: DMA-able by that backend at full
/// link speed and readable by the CPU.
///
/// Pinning is expensive (the driver locks and maps every page), so hot paths take pinned
/// memory from a caching_pool over this allocator rather than from it directly. Alignments
/// stricter than the backend guarantees (`Backend::pinned_alignment`, else 256) are met by
/// over-allocating.
template <backend_policy Backend>
class pinned_allocator {
 public:
  using space = pinned_space<Backend>;
  static constexpr memory_properties properties = space::properties;
  /// @brief The allocator's name in messages.
  static constexpr std::string_view name = "pinned_allocator";

  /// @brief Allocates through a default-constructed backend (its default device).
  pinned_allocator() requires std::default_initializable<Backend> = default;
  /// @brief Allocates through `backend`.
  explicit pinned_allocator(Backend backend) noexcept(
      std::is_nothrow_move_constructible_v<Backend>)
      : backend_(std::move(backend)) {}

  /// @brief `bytes` bytes of pinned memory aligned to `alignment`.
  /// @throws lris::invalid_argument when `alignment` is not a power of two.
  /// @throws lris::out_of_memory when the backend cannot pin that much.
  [[nodiscard]] void* allocate(std::size_t bytes, std::size_t alignment = default_alignment) {
    return detail::backend_allocate(
        label(), bytes, alignment, natural, detail::over_aligned_table_for<pinned_allocator>(),
        [this](std::size_t n) { return backend_.allocate_pinned(n); },
        [this](void* p, std::size_t n) noexcept { backend_.deallocate_pinned(p, n); });
  }
  /// @brief Frees what allocate(bytes, alignment) returned.
  void deallocate(void* p, std::size_t bytes, std::size_t alignment = default_alignment) noexcept {
    detail::backend_deallocate(
        p, bytes, alignment, natural, detail::over_aligned_table_for<pinned_allocator>(),
        [this](void* q, std::size_t n) noexcept { backend_.deallocate_pinned(q, n); });
  }

  /// @brief The backend memory comes from.
  [[nodiscard]] const Backend& backend() const noexcept { return backend_; }

  /// @brief Equal when the backends are (same runtime and device).
  friend bool operator==(const pinned_allocator& a, const pinned_allocator& b) noexcept {
    return a.backend_ == b.backend_;
  }

 private:
  static constexpr std::size_t natural = detail::pinned_alignment_of<Backend>();
  static const std::string& label() {
    static const std::string s = fmt::format("pinned_allocator<{}>", Backend::name);
    return s;
  }

  Backend backend_{};
};

static_assert(allocator_policy<pinned_allocator<host_backend>>);
static_assert(host_allocator<pinned_allocator<host_backend>>);
static_assert(pinned_allocator_policy<pinned_allocator<host_backend>>);

}  // namespace lris
