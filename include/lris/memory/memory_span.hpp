#pragma once
/// @file
/// @brief memory_span: a pointer and an element count, typed by the memory space it lives in.

#include <cstddef>
#include <span>
#include <type_traits>

#include <lris/concepts/memory_property.hpp>
#include <lris/concepts/memory_space.hpp>

namespace lris {

/// @brief A contiguous range of `T` in memory space `Space`. Non-owning, trivially copyable.
///
/// Device spans also carry the device ordinal they belong to. Element access is offered only
/// where the CPU can read the memory.
template <memory_space Space, class T = std::byte>
class memory_span {
 public:
  using space_type = Space;
  using element_type = T;

  constexpr memory_span() noexcept = default;
  /// @brief `count` elements starting at `data`, on `device` (ignored for host memory).
  constexpr memory_span(T* data, std::size_t count, int device = 0) noexcept
      : data_(data), count_(count), device_(device) {}
  /// @brief A const view of a mutable span.
  template <class U>
    requires std::is_convertible_v<U (*)[], T (*)[]>
  constexpr memory_span(const memory_span<Space, U>& other) noexcept  // NOLINT(implicit)
      : data_(other.data()), count_(other.size()), device_(other.device()) {}

  [[nodiscard]] constexpr T* data() const noexcept { return data_; }
  [[nodiscard]] constexpr std::size_t size() const noexcept { return count_; }
  [[nodiscard]] constexpr std::size_t size_bytes() const noexcept { return count_ * sizeof(T); }
  [[nodiscard]] constexpr bool empty() const noexcept { return count_ == 0; }
  [[nodiscard]] constexpr int device() const noexcept { return device_; }

  /// @brief Elements [offset, offset + count).
  [[nodiscard]] constexpr memory_span subspan(std::size_t offset, std::size_t count) const noexcept {
    return {data_ + offset, count, device_};
  }

  /// @brief The same bytes as a std::span, for host-accessible memory only.
  [[nodiscard]] constexpr std::span<T> host() const noexcept
    requires(has_property<Space, property::host_accessible>)
  {
    return {data_, count_};
  }

 private:
  T* data_ = nullptr;
  std::size_t count_ = 0;
  int device_ = 0;
};

/// @brief Pageable host memory.
template <class T = std::byte>
using host_span = memory_span<host_space, T>;
/// @brief Host memory pinned for `Backend`.
template <class Backend, class T = std::byte>
using pinned_span = memory_span<pinned_space<Backend>, T>;
/// @brief Device memory of `Backend`.
template <class Backend, class T = std::byte>
using device_span = memory_span<device_space<Backend>, T>;

/// @brief Views any contiguous host range as pageable host memory.
template <class T>
[[nodiscard]] constexpr host_span<T> as_host(T* data, std::size_t count) noexcept {
  return {data, count};
}
template <class Range>
[[nodiscard]] constexpr auto as_host(Range&& r) noexcept
    -> host_span<std::remove_pointer_t<decltype(std::data(r))>> {
  return {std::data(r), std::size(r)};
}

/// @brief Reinterprets a span as bytes (const-preserving).
template <memory_space S, class T>
[[nodiscard]] auto as_bytes(memory_span<S, T> s) noexcept {
  using byte_t = std::conditional_t<std::is_const_v<T>, const std::byte, std::byte>;
  return memory_span<S, byte_t>(reinterpret_cast<byte_t*>(s.data()), s.size_bytes(), s.device());
}

}  // namespace lris
