#pragma once
/// @file
/// @brief The `direct` transfer policy: every transfer is one operation.

#include <string_view>

#include <lris/transfer/transfer_policy.hpp>

namespace lris {

/// @brief One memcpy (host to host, on the calling thread) or one asynchronous copy on one
/// stream. The lowest latency for small transfers; pageable memory is handed to the backend
/// as it is. A batch of DMA-able buffers is one batched operation (one kernel on a GPU); a
/// batch with pageable buffers is one asynchronous copy per pair.
struct direct {
  static constexpr std::string_view name = "direct";
  [[nodiscard]] transfer_plan plan(const transfer_request& r) const noexcept {
    const bool one_operation = r.items > 1 && !r.needs_staging;
    return {.path = one_operation ? transfer_path::batched : transfer_path::direct};
  }
};
static_assert(transfer_policy<direct>);

}  // namespace lris
