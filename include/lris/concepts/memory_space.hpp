#pragma once
/// @file
/// @brief Memory spaces: the type-level tag that says where bytes live.
///
/// A span's space decides which transfer paths are possible (see transfer/traits.hpp):
/// pageable host memory must be staged through pinned memory to reach a device at full speed,
/// pinned memory of backend B is DMA-able by B, device memory of B is reachable only through B.

#include <string_view>

#include <lris/concepts/memory_properties.hpp>

namespace lris {

/// @brief Ordinary (pageable) host memory from any allocator.
struct host_space {
  static constexpr memory_properties properties{.host_accessible = true};
  static constexpr std::string_view name = "host";
};

/// @brief Page-locked host memory that `Backend`'s DMA engines read and write directly.
template <class Backend>
struct pinned_space {
  using backend_type = Backend;
  static constexpr memory_properties properties{
      .host_accessible = true, .device_accessible = true, .pinned = true};
  static constexpr std::string_view name = "pinned";
};

/// @brief Memory of a device driven by `Backend`.
template <class Backend>
struct device_space {
  using backend_type = Backend;
  static constexpr memory_properties properties{.device_accessible = true};
  static constexpr std::string_view name = "device";
};

/// @brief True for the memory space tags above.
template <class S>
inline constexpr bool is_memory_space_v = false;
template <>
inline constexpr bool is_memory_space_v<host_space> = true;
template <class B>
inline constexpr bool is_memory_space_v<pinned_space<B>> = true;
template <class B>
inline constexpr bool is_memory_space_v<device_space<B>> = true;

/// @brief A memory space tag.
template <class S>
concept memory_space = is_memory_space_v<S>;

}  // namespace lris
