#pragma once
/// @file
/// @brief stream_ordered_backend: a backend that allocates and frees device memory in the
/// order of a stream.

#include <concepts>
#include <cstddef>

#include <lris/concepts/backend_policy.hpp>

namespace lris {

/// @brief A backend whose device memory can be allocated and freed in stream order:
/// `allocate_device_async(bytes, stream)` returns memory usable by work queued on the stream
/// after the call; `deallocate_device_async(p, bytes, stream)` frees it once the work queued
/// before it has run, without waiting for the device (cudaMallocAsync / hipMallocAsync pools).
/// A cache that evicts weights frees this way, so that eviction never stalls the device.
template <class B>
concept stream_ordered_backend =
    backend_policy<B> && requires(B& b, void* p, std::size_t n, typename B::stream& s) {
      { b.allocate_device_async(n, s) } -> std::same_as<void*>;
      { b.deallocate_device_async(p, n, s) } noexcept;
    };

}  // namespace lris
