#pragma once
/// @file
/// @brief device_allocator: memory of a device, allocated by its backend (cudaMalloc,
/// hipMalloc, or host_backend's stand-in).

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
#include <lris/concepts/stream_ordered_allocator.hpp>
#include <lris/concepts/stream_ordered_backend.hpp>

namespace lris {

/// @brief Device memory from `Backend::allocate_device`. The CPU must not dereference it: only
/// the backend's copies and kernels touch it.
///
/// Device allocation synchronises the device on most runtimes, so hot paths take device memory
/// from a caching_pool over this allocator. Alignments stricter than the backend guarantees
/// (`Backend::device_alignment`, else 256) are met by over-allocating.
template <backend_policy Backend>
class device_allocator {
 public:
  using space = device_space<Backend>;
  static constexpr memory_properties properties = space::properties;
  /// @brief The allocator's name in messages.
  static constexpr std::string_view name = "device_allocator";

  /// @brief Allocates through a default-constructed backend (its default device).
  device_allocator() requires std::default_initializable<Backend> = default;
  /// @brief Allocates on `backend`'s device.
  explicit device_allocator(Backend backend) noexcept(
      std::is_nothrow_move_constructible_v<Backend>)
      : backend_(std::move(backend)) {}

  /// @brief `bytes` bytes of device memory aligned to `alignment`.
  /// @throws lris::invalid_argument when `alignment` is not a power of two.
  /// @throws lris::out_of_memory when the device has not that much free.
  [[nodiscard]] void* allocate(std::size_t bytes, std::size_t alignment = default_alignment) {
    return detail::backend_allocate(
        label(), bytes, alignment, natural, detail::over_aligned_table_for<device_allocator>(),
        [this](std::size_t n) { return backend_.allocate_device(n); },
        [this](void* p, std::size_t n) noexcept { backend_.deallocate_device(p, n); });
  }
  /// @brief Frees what allocate(bytes, alignment) returned.
  void deallocate(void* p, std::size_t bytes, std::size_t alignment = default_alignment) noexcept {
    detail::backend_deallocate(
        p, bytes, alignment, natural, detail::over_aligned_table_for<device_allocator>(),
        [this](void* q, std::size_t n) noexcept { backend_.deallocate_device(q, n); });
  }

  /// @brief `bytes` bytes of device memory aligned to `alignment`, for work queued on `s` after
  /// the call (stream-ordered backends: cudaMallocAsync pools).
  [[nodiscard]] void* allocate_async(std::size_t bytes, std::size_t alignment,
                                     typename Backend::stream& s)
    requires stream_ordered_backend<Backend>
  {
    return detail::backend_allocate(
        label(), bytes, alignment, natural, detail::over_aligned_table_for<device_allocator>(),
        [&](std::size_t n) { return backend_.allocate_device_async(n, s); },
        [&](void* p, std::size_t n) noexcept { backend_.deallocate_device_async(p, n, s); });
  }
  /// @brief Frees what allocate_async(bytes, alignment, ...) returned once the work queued on
  /// `s` before the call has run, without waiting for the device.
  void deallocate_async(void* p, std::size_t bytes, std::size_t alignment,
                        typename Backend::stream& s) noexcept
    requires stream_ordered_backend<Backend>
  {
    detail::backend_deallocate(
        p, bytes, alignment, natural, detail::over_aligned_table_for<device_allocator>(),
        [&](void* q, std::size_t n) noexcept { backend_.deallocate_device_async(q, n, s); });
  }

  /// @brief The backend (and so the device) memory comes from.
  [[nodiscard]] const Backend& backend() const noexcept { return backend_; }

  /// @brief Equal when the backends are (same runtime and device).
  friend bool operator==(const device_allocator& a, const device_allocator& b) noexcept {
    return a.backend_ == b.backend_;
  }

 private:
  static constexpr std::size_t natural = detail::device_alignment_of<Backend>();
  static const std::string& label() {
    static const std::string s = fmt::format("device_allocator<{}>", Backend::name);
    return s;
  }

  Backend backend_{};
};

static_assert(stream_ordered_allocator<device_allocator<host_backend>, host_backend::stream>);
static_assert(allocator_policy<device_allocator<host_backend>>);
static_assert(!host_allocator<device_allocator<host_backend>>,
              "device memory must never be offered to the CPU");

}  // namespace lris
