#pragma once
/// @file
/// @brief The `direct` transfer policy: every transfer is one operation.

#include <string_view>

#include <lris/concepts/transfer_policy.hpp>

namespace lris {

/// @brief One memcpy (host to host, on the calling thread) or one asynchronous copy on one
/// stream. The lowest latency for small transfers; pageable memory is handed to the backend
/// as it is.
struct direct {
  static constexpr std::string_view name = "direct";
  [[nodiscard]] transfer_plan plan(const transfer_request&) const noexcept {
    return {.path = transfer_path::direct};
  }
};
static_assert(transfer_policy<direct>);

}  // namespace lris
