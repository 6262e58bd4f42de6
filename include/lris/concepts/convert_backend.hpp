#pragma once
/// @file
/// @brief convert_backend: a backend that converts element types on a stream.

#include <cstddef>

#include <lris/concepts/backend_policy.hpp>
#include <lris/element/dtype.hpp>

namespace lris {

/// @brief A backend that queues element type conversion on a stream:
/// `convert_async(dst, to, src, from, count, stream)` converts `count` elements of `from` at
/// `src` into `to` at `dst`, both memory the backend's device work can reach. Loaders convert
/// with it as the bytes land.
template <class B>
concept convert_backend =
    backend_policy<B> && requires(B& b, void* dst, const void* src, dtype t, std::size_t n,
                                  typename B::stream& s) { b.convert_async(dst, t, src, t, n, s); };

}  // namespace lris
