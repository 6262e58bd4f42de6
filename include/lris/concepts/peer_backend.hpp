#pragma once
/// @file
/// @brief peer_backend: a backend whose devices copy to each other.

#include <cstddef>

#include <lris/concepts/backend_policy.hpp>

namespace lris {

/// @brief A backend whose devices copy device memory to each other:
/// `copy_peer_async(dst, dst_device, src, src_device, bytes, stream)` and
/// `enable_peer_access(peer) -> bool` (false: the hardware cannot, and copies go through host
/// memory).
template <class B>
concept peer_backend =
    backend_policy<B> && requires(B& b, void* dst, const void* src, int device, std::size_t n,
                                  typename B::stream& s) {
      b.copy_peer_async(dst, device, src, device, n, s);
      { b.enable_peer_access(device) } -> std::same_as<bool>;
    };

}  // namespace lris
