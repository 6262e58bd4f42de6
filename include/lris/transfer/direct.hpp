#pragma once
/// @file
/// @brief The `direct` transfer policy: every transfer is one operation.

#include <string_view>

#include <lris/transfer/plans.hpp>
#include <lris/transfer/transfer_policy.hpp>

namespace lris {

/// @brief One memcpy (host to host, on the calling thread) or one asynchronous copy on one
/// stream. The lowest latency for small transfers; pageable memory is handed to the backend
/// as it is. A batch of DMA-able buffers is one batched operation (one kernel on a GPU); a
/// batch with pageable buffers is one asynchronous copy per pair.
struct direct {
  static constexpr std::string_view name = "direct";
  [[nodiscard]] exec::plan plan(const transfer_request& r) const {
    const bool one_operation = r.items > 1 && !r.needs_staging;
    return one_operation ? plans::batched(r) : plans::direct(r);
  }
};
static_assert(transfer_policy<direct>);

}  // namespace lris
