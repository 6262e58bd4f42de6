#pragma once
/// @file
/// @brief stream_ordered_allocator: an allocator that also allocates and frees in the order of
/// a stream.

#include <concepts>
#include <cstddef>

#include <lris/concepts/allocator_policy.hpp>

namespace lris {

/// @brief An allocator_policy with `allocate_async(bytes, alignment, stream) -> void*` and
/// `deallocate_async(p, bytes, alignment, stream) noexcept` for streams of type `Stream`:
/// memory handed out for work queued on the stream after the call, and given back once the
/// work queued before the free has run, with no wait for the device.
template <class A, class Stream>
concept stream_ordered_allocator =
    allocator_policy<A> && requires(A& a, void* p, std::size_t n, Stream& s) {
      { a.allocate_async(n, n, s) } -> std::same_as<void*>;
      { a.deallocate_async(p, n, n, s) } noexcept;
    };

}  // namespace lris
