#pragma once
/// @file
/// @brief Compile-time properties of memory: who can access it and how it is laid out.

#include <concepts>
#include <type_traits>

namespace lris {

/// @brief What a piece of memory is. Every memory space and allocator publishes one as
/// `static constexpr memory_properties properties`.
struct memory_properties {
  bool host_accessible = false;    ///< the CPU may dereference it
  bool device_accessible = false;  ///< a device's DMA engine or kernels may access it
  bool pinned = false;             ///< page-locked, DMA-able at full link speed
  bool page_aligned = false;       ///< allocations start on a page boundary (O_DIRECT-ready)
};

/// @brief True when `T` publishes constant memory properties.
template <class T>
concept has_memory_properties = requires {
  { T::properties } -> std::convertible_to<memory_properties>;
  typename std::integral_constant<bool, T::properties.host_accessible>;
};

template <has_memory_properties T>
inline constexpr bool is_host_accessible_v = T::properties.host_accessible;
template <has_memory_properties T>
inline constexpr bool is_device_accessible_v = T::properties.device_accessible;
template <has_memory_properties T>
inline constexpr bool is_pinned_v = T::properties.pinned;
template <has_memory_properties T>
inline constexpr bool is_page_aligned_v = T::properties.page_aligned;

}  // namespace lris
