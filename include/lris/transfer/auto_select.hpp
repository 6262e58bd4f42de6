#pragma once
/// @file
/// @brief The `auto_select` transfer policy: picks a path per transfer from size and memory
/// kinds, with thresholds from the calibrated profile.

#include <optional>
#include <string_view>

#include <lris/transfer/plans.hpp>
#include <lris/transfer/transfer_policy.hpp>
#include <lris/exec/profile.hpp>

namespace lris {

/// @brief Small transfers go direct (lowest latency); large host copies are split over worker
/// threads; large pageable <-> device copies are staged. Batches of pageable buffers and a
/// device are packed into the ring; batches of DMA-able buffers are one kernel while their
/// mean size is under the profile's batch_max_item_bytes, and one DMA per pair above it; host
/// batches are one parallel loop. Thresholds and chunk parameters come
/// from the profile written by `lris calibrate` (the pipeline's context reads it:
/// transfer_request::profile) unless one is given explicitly.
class auto_select {
 public:
  static constexpr std::string_view name = "auto";
  static constexpr bool uses_profile = true;

  auto_select() = default;
  /// @brief Uses `profile` instead of the calibrated one.
  explicit auto_select(transfer_profile profile) : profile_(std::move(profile)) {}

  [[nodiscard]] exec::plan plan(const transfer_request& r) const {
    static const transfer_profile defaults;
    const transfer_profile& p = profile_ ? *profile_ : r.profile ? *r.profile : defaults;
    const transfer_sizes sizes{.chunk_bytes = p.chunk_bytes, .workers = p.workers,
                               .streams = p.streams, .ring_depth = p.ring_depth};
    if (r.items > 1) {
      if (r.needs_staging) return plans::packed(r, sizes);
      if (r.kind == copy_kind::host_to_host || r.bytes / r.items < p.batch_max_item_bytes) {
        return plans::batched(r, sizes);
      }
      return plans::direct(r, sizes);
    }
    if (r.needs_staging && r.bytes >= p.staged_min_bytes) return plans::staged(r, sizes);
    if (r.kind == copy_kind::host_to_host && r.bytes >= p.parallel_min_bytes) {
      return plans::split(r, sizes);
    }
    return plans::direct(r, sizes);
  }

 private:
  std::optional<transfer_profile> profile_;
};
static_assert(transfer_policy<auto_select>);

}  // namespace lris
