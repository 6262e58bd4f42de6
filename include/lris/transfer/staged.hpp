#pragma once
/// @file
/// @brief The `staged` transfer policy: chunked and overlapped.

#include <cstddef>
#include <string_view>

#include <lris/transfer/plans.hpp>
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

  [[nodiscard]] exec::plan plan(const transfer_request& r) const {
    const transfer_sizes sizes{.chunk_bytes = chunk_bytes, .workers = workers,
                               .streams = streams, .ring_depth = ring_depth};
    if (r.items > 1) return r.needs_staging ? plans::packed(r, sizes) : plans::batched(r, sizes);
    return r.needs_staging ? plans::staged(r, sizes) : plans::split(r, sizes);
  }
};
static_assert(transfer_policy<staged>);

}  // namespace lris
