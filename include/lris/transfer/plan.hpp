#pragma once
/// @file
/// @brief What a transfer policy decides: the path a transfer takes and its parameters.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string_view>

#include <lris/concepts/backend_policy.hpp>
#include <lris/exec/profile.hpp>
#include <lris/io/options.hpp>
#include <lris/sched/bandwidth_semaphore.hpp>

namespace lris {

/// @brief How bytes move.
enum class transfer_path {
  direct,    ///< one operation: one memcpy (host) or one asynchronous copy on one stream
  parallel,  ///< chunks over several host threads (host<->host) or several streams (DMA-able)
  staged,    ///< pageable host memory <-> device through a pinned ring: copy workers + DMA
  batched,   ///< many buffers as one operation: one kernel (GPU) or one parallel loop (host)
  packed,    ///< many pageable buffers <-> device: packed into pinned slots, one batch per slot
};

/// @brief "direct", "parallel", "staged", "batched" or "packed".
[[nodiscard]] constexpr std::string_view to_string(transfer_path p) noexcept {
  switch (p) {
    case transfer_path::direct: return "direct";
    case transfer_path::parallel: return "parallel";
    case transfer_path::staged: return "staged";
    case transfer_path::batched: return "batched";
    case transfer_path::packed: return "packed";
  }
  return "?";
}

/// @brief What a policy is asked to plan: derived from the span types and size.
struct transfer_request {
  copy_kind kind = copy_kind::host_to_host;
  std::size_t bytes = 0;  ///< all bytes, over every buffer of a batch
  /// Buffers: 1 for copy(), the number of pairs for copy_batch(). A policy plans a batch
  /// either as one operation (`batched`, `packed`) or, with any other path, pair by pair.
  std::size_t items = 1;
  /// The host side is pageable while the other side is a device: only staging through pinned
  /// memory reaches full link speed.
  bool needs_staging = false;
  /// The executing backend and device, e.g. "host:0" or "cuda:1" (profiles are kept per key).
  std::string_view backend = "host:0";
  /// The calibrated profile of that backend and device, from the pipeline's context: given to
  /// policies that declare `static constexpr bool uses_profile = true`; null for others.
  const transfer_profile* profile = nullptr;
};

/// @brief A policy's decision. Zero fields are filled from defaults by the pipeline.
struct transfer_plan {
  transfer_path path = transfer_path::direct;
  std::size_t chunk_bytes = 0;  ///< bytes per chunk (parallel, staged)
  unsigned workers = 0;         ///< host threads copying (parallel h2h, staged)
  unsigned streams = 0;         ///< device streams (parallel DMA, staged)
  unsigned ring_depth = 0;      ///< pinned staging slots of chunk_bytes each (staged)
};

/// @brief Called after each chunk with (bytes done, bytes total); returning false cancels.
/// Calls are serialized, never concurrent.
using progress_fn = std::function<bool(std::uint64_t done, std::uint64_t total)>;

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
  /// The priority of this transfer's chunks at the pipeline's broker: critical work
  /// overtakes normal work, which overtakes background work (weighted fair shares).
  sched::priority priority = sched::priority::normal;
  /// Bytes this transfer may keep in flight on each resource it uses (0: the resource's
  /// capacity is the only limit).
  std::uint64_t budget_bytes = 0;
};

}  // namespace lris
