#pragma once
/// @file
/// @brief What a finished transfer reports.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <functional>

#include <lris/concepts/backend_policy.hpp>
#include <lris/sched/throttle.hpp>

namespace lris {

/// @brief How bytes moved: the shape of a transfer's plan, as its stats report it.
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

/// @brief Called after each chunk with (bytes done, bytes total); returning false cancels.
/// Calls are serialized, never concurrent.
using progress_fn = std::function<bool(std::uint64_t done, std::uint64_t total)>;


/// @brief Per-transfer statistics, complete once the transfer has finished.
struct transfer_stats {
  std::uint64_t bytes = 0;     ///< bytes moved (less than asked for when cancelled)
  double seconds = 0;          ///< from copy() to completion
  transfer_path path = transfer_path::direct;
  copy_kind kind = copy_kind::host_to_host;
  std::string_view policy;     ///< the transfer policy that planned it
  std::string_view backend;    ///< the backend that executed it
  std::size_t chunks = 1;
  std::size_t chunk_bytes = 0;
  unsigned workers = 0;
  unsigned streams = 0;
  unsigned ring_slots = 0;     ///< pinned staging slots actually used
  bool cancelled = false;
  /// File transfers: what the io engine did, e.g. "io_uring, direct (cold: 0% of the range in
  /// the page cache)"; empty for memory-to-memory transfers.
  std::string io;
  std::uint64_t io_direct_bytes = 0;    ///< file bytes moved with O_DIRECT
  std::uint64_t io_buffered_bytes = 0;  ///< file bytes moved through the page cache
  /// io operations into or out of the pinned staging slots as io_uring fixed buffers.
  std::uint64_t io_fixed_buffer_ops = 0;
  /// The priority its chunks took tokens at (transfer_options::priority).
  sched::priority priority = sched::priority::normal;
  /// Pieces that waited for tokens of a resource (0 when the pipeline has no broker).
  std::uint64_t token_waits = 0;
  /// The throttle's decisions for its pieces.
  sched::throttle_counts throttle;

  /// @brief Achieved rate in GB/s (10^9 bytes per second).
  [[nodiscard]] double gbps() const noexcept { return seconds > 0 ? bytes / seconds / 1e9 : 0.0; }
};

}  // namespace lris
