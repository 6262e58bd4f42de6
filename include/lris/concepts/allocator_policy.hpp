#pragma once
/// @file
/// @brief allocator_policy: where memory comes from and what it is.

#include <concepts>
#include <cstddef>

#include <lris/concepts/memory_property.hpp>
#include <lris/concepts/memory_properties.hpp>
#include <lris/concepts/memory_space.hpp>

namespace lris {

/// @brief Default alignment of every LRIS allocation: what cuBLAS and vector loads want.
inline constexpr std::size_t default_alignment = 256;

/// @brief A copyable value type that hands out memory of one kind.
///
/// Required:
/// - `A::space`, the memory space of what it returns, and `A::properties` (constexpr);
/// - `a.allocate(bytes, alignment) -> void*`, throwing lris::out_of_memory on failure;
/// - `a.deallocate(p, bytes, alignment) noexcept` with the same size and alignment;
/// - equality: two allocators compare equal when either can free what the other returned.
/// Copies share state (a pool, statistics); stateless allocators are empty structs.
template <class A>
concept allocator_policy =
    std::copy_constructible<A> && std::equality_comparable<A> && has_memory_properties<A> &&
    requires { typename A::space; } && memory_space<typename A::space> &&
    requires(A& a, void* p, std::size_t n, std::size_t alignment) {
      { a.allocate(n, alignment) } -> std::same_as<void*>;
      { a.deallocate(p, n, alignment) } noexcept;
    };

/// @brief An allocator whose memory the CPU can touch.
template <class A>
concept host_allocator = allocator_policy<A> && has_property<A, property::host_accessible>;

/// @brief An allocator whose memory is pinned (DMA-able at full speed) for some backend.
template <class A>
concept pinned_allocator_policy = allocator_policy<A> && has_property<A, property::pinned>;

}  // namespace lris
