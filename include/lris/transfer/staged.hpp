#pragma once
/// @file
/// @brief The `staged` transfer policy: chunked and overlapped.

#include <cstddef>
#include <string_view>

#include <lris/transfer/transfer_policy.hpp>

namespace lris {

/// @brief Pageable host memory <-> device goes through the pinned ring (copy workers and DMA
/// overlapped on several streams); host <-> host is split over worker threads; what is already
/// DMA-able goes direct. A batch is one operation: packed into the ring where it needs
/// staging, else batched. Zero fields take the pipeline's defaults.
struct staged {
  static constexpr std::string_view name = "staged";
  std::size_t chunk_bytes = 0;
  unsigned workers = 0;
  unsigned streams = 0;
  unsigned ring_depth = 0;

  [[nodiscard]] transfer_plan plan(const transfer_request& r) const noexcept {
    transfer_plan p{.chunk_bytes = chunk_bytes, .workers = workers, .streams = streams,
                    .ring_depth = ring_depth};
    if (r.items > 1) {
      p.path = r.needs_staging ? transfer_path::packed : transfer_path::batched;
    } else if (r.needs_staging) {
      p.path = transfer_path::staged;
    } else if (r.kind == copy_kind::host_to_host) {
      p.path = transfer_path::parallel;
    } else {
      p.path = transfer_path::direct;
    }
    return p;
  }
};
static_assert(transfer_policy<staged>);

}  // namespace lris
