#pragma once
/// @file
/// @brief What a transfer policy is asked (transfer_request) and what a call may say about
/// it (transfer_options). A policy answers with an exec::plan, made with lris::plans.

#include <cstddef>
#include <cstdint>
#include <optional>

#include <span>
#include <vector>
#include <string_view>

#include <lris/concepts/backend_policy.hpp>
#include <lris/concepts/copy_item.hpp>
#include <lris/exec/plan.hpp>
#include <lris/exec/profile.hpp>
#include <lris/exec/sizing.hpp>
#include <lris/exec/stats.hpp>
#include <lris/io/options.hpp>
#include <lris/sched/bandwidth_semaphore.hpp>

namespace lris {

/// @brief Sizes of a transfer's plan; zero means "the next one's choice" (see complete()).
struct transfer_sizes {
  std::size_t chunk_bytes = 0;  ///< bytes per chunk (host split, staging slots)
  unsigned workers = 0;         ///< threads working on chunks at once
  unsigned streams = 0;         ///< device streams that chunks go on
  unsigned ring_depth = 0;      ///< pinned staging slots a transfer may hold
};

/// @brief What a policy is asked to plan: what moves where, derived from the spans, and what
/// the pipeline knows.
struct transfer_request {
  copy_kind kind = copy_kind::host_to_host;
  std::size_t bytes = 0;  ///< all bytes, over every buffer of a batch
  /// Buffers: 1 for copy(), the number of pairs for copy_batch().
  std::size_t items = 1;
  /// The host side is pageable while the other side is a device: only staging through pinned
  /// memory reaches full link speed.
  bool needs_staging = false;
  /// The executing backend and device, e.g. "host:0" or "cuda:1" (profiles are kept per key).
  std::string_view backend = "host:0";
  /// The calibrated profile of that backend and device, from the pipeline's context: given to
  /// policies that declare `static constexpr bool uses_profile = true`; null for others.
  const transfer_profile* profile = nullptr;
  /// copy(): where the bytes are and go. copy_batch(): the kinds and devices of every pair's
  /// ends, whose addresses are in `pairs`.
  exec::place dst = {};
  exec::place src = {};
  std::span<const copy_item> pairs = {};
  /// Sizes the call asked for (transfer_options); they override the policy's.
  transfer_sizes given = {};
  /// What the pipeline can do: the largest staging slot, the context's compute threads, and
  /// whether the backend runs a batch of copies as one operation (batch_backend).
  std::size_t max_slot_bytes = std::size_t{256} << 20;
  unsigned threads = 1;
  bool one_operation_batches = false;
  /// Storage a plan maker may take for the plan's vectors (their capacity; the contents are
  /// dropped): the executor's, kept from earlier plans, so that a batch of many buffers
  /// touches no fresh pages. Null: none.
  exec::plan_storage* spare = nullptr;
};

/// @brief `policy` with the request's given sizes over it, and defaults for what is left:
/// 4 MiB chunks, exec::default_workers(threads) workers, 2 streams, 2 slots per worker.
[[nodiscard]] constexpr transfer_sizes complete(const transfer_request& r,
                                                transfer_sizes policy) noexcept {
  transfer_sizes s = policy;
  if (r.given.chunk_bytes) s.chunk_bytes = r.given.chunk_bytes;
  if (r.given.workers) s.workers = r.given.workers;
  if (r.given.streams) s.streams = r.given.streams;
  if (r.given.ring_depth) s.ring_depth = r.given.ring_depth;
  if (!s.chunk_bytes) s.chunk_bytes = std::size_t{4} << 20;
  if (!s.workers) s.workers = exec::default_workers(r.threads);
  if (!s.streams) s.streams = 2;
  if (!s.ring_depth) s.ring_depth = 2 * s.workers;
  return s;
}

/// @brief Per-transfer options; zero means "the policy's choice".
struct transfer_options {
  std::size_t chunk_bytes = 0;
  unsigned workers = 0;
  unsigned streams = 0;
  unsigned ring_depth = 0;
  progress_fn on_progress = {};
  /// File transfers (pipeline::read, ::write): io settings of this call in place of the
  /// pipeline's pipeline_config::io, e.g. `{.direct = io::direct_mode::never}`.
  io::io_overrides io = {};
  /// Reads of data not in the page cache (`io.direct` automatic): this method in place of the
  /// storage device's calibrated one (`lris calibrate --disk`, lris::disk_profile).
  std::optional<disk_profile> cold_reads = {};
  /// The priority of this transfer's chunks at the pipeline's broker: critical work
  /// overtakes normal work, which overtakes background work (weighted fair shares).
  sched::priority priority = sched::priority::normal;
  /// Bytes this transfer may keep in flight on each resource it uses (0: the resource's
  /// capacity is the only limit).
  std::uint64_t budget_bytes = 0;
};

}  // namespace lris
