#pragma once
/// @file
/// @brief Open memory properties: tags any memory space or allocator may claim, and values it
/// may report, without a change to LRIS's core.
///
/// The four properties every space and allocator publishes in `T::properties`
/// (memory_properties.hpp) are tags here too. A type claims more by listing tags in
/// `using property_tags = std::tuple<...>` and reports a value property with a member
/// `get_property(Tag) const` (numa_allocator reports property::numa_node this way). Code asks
/// `has_property<T, Tag>` and `get_property(t, Tag{})`, never the struct of bools, so a new
/// property ("shareable between processes", "far memory") is a new tag in the code that has
/// it, and nothing else changes.

#include <tuple>
#include <type_traits>

#include <lris/concepts/memory_properties.hpp>

namespace lris {

namespace property {
struct host_accessible {};    ///< the CPU may dereference it
struct device_accessible {};  ///< a device's DMA engine or kernels may access it
struct pinned {};             ///< page-locked, DMA-able at full link speed
struct page_aligned {};       ///< allocations start on a page boundary (O_DIRECT-ready)
/// @brief A value property: the NUMA node the memory is bound to (`int`).
struct numa_node {};
}  // namespace property

namespace detail {
template <class Tag, class Tuple>
inline constexpr bool tuple_has_v = false;
template <class Tag, class... Ts>
inline constexpr bool tuple_has_v<Tag, std::tuple<Ts...>> = (std::is_same_v<Tag, Ts> || ...);

template <class T, class Tag>
consteval bool claims_property() {
  if constexpr (requires { typename T::property_tags; }) {
    if constexpr (tuple_has_v<Tag, typename T::property_tags>) return true;
  }
  if constexpr (requires(const T& t) { t.get_property(Tag{}); }) return true;
  if constexpr (has_memory_properties<T>) {
    constexpr memory_properties p = T::properties;
    if constexpr (std::is_same_v<Tag, property::host_accessible>) return p.host_accessible;
    if constexpr (std::is_same_v<Tag, property::device_accessible>) return p.device_accessible;
    if constexpr (std::is_same_v<Tag, property::pinned>) return p.pinned;
    if constexpr (std::is_same_v<Tag, property::page_aligned>) return p.page_aligned;
  }
  return false;
}
}  // namespace detail

/// @brief True when memory of `T` (a space or an allocator) has the property `Tag`.
template <class T, class Tag>
concept has_property = detail::claims_property<T, Tag>();

/// @brief The value of a value property (`t.get_property(tag)`), e.g.
/// `get_property(numa_allocator{1}, property::numa_node{}) == 1`.
template <class T, class Tag>
  requires requires(const T& t) { t.get_property(Tag{}); }
[[nodiscard]] constexpr decltype(auto) get_property(const T& t, Tag tag) {
  return t.get_property(tag);
}

}  // namespace lris
