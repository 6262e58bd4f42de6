#pragma once
/// @file
/// @brief batch_backend: a backend that performs a batch of copies as one operation.

#include <cstddef>

#include <lris/concepts/backend_policy.hpp>
#include <lris/concepts/copy_item.hpp>

namespace lris {

/// @brief A backend that performs a whole batch of copies as one operation on a stream
/// (`copy_batch_async(items, count, stream)`; `items` stays valid until the stream passes it).
/// Pipelines use it for many small buffers; backends without it get one copy per item.
template <class B>
concept batch_backend =
    backend_policy<B> && requires(B& b, const copy_item* items, std::size_t n,
                                  typename B::stream& s) { b.copy_batch_async(items, n, s); };

}  // namespace lris
