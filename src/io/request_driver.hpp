#pragma once
// Runs a list of file segments to completion through one io_queue: keeps the queue full, and
// survives what files and kernels do: short transfers (the rest is resubmitted at the right
// offset), EAGAIN and EINTR (retried after a capped exponential backoff, counted), errors and
// an unexpected end of file (reported naming the file and offset). On an error or a stop it
// submits nothing more and waits for every operation in flight before it returns: every
// operation completes exactly once, and no buffer is released while the kernel may use it.
// When the queue itself fails (submit or wait throws), it quiesces the queue, which ends every
// operation in flight and leaves the queue broken, then throws lris::io_error.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>

#include <lris/io/options.hpp>
#include <lris/io/queue.hpp>
#include <lris/io/stats.hpp>

namespace lris::io::detail {

/// A contiguous range of a file and of memory. `fd` is the descriptor to use (O_DIRECT or
/// not); `buffered_fd` takes over a remainder that a short transfer left unaligned.
struct io_segment {
  int fd = -1;
  int buffered_fd = -1;
  std::uint64_t offset = 0;
  std::byte* buf = nullptr;
  std::size_t len = 0;
  bool write = false;
  bool direct = false;  ///< counts as direct_bytes in the stats
};

/// Runs `segments`, at most o.queue_depth operations in flight; adds to `stats` (bytes,
/// operations, retries). `should_stop` is polled
/// between completions; when it returns true the run drains and throws lris::cancelled.
/// Throws lris::io_error naming `file` and the offset for a failed operation, and naming the
/// queue, `file` and the operations in flight when the queue fails (see io_queue::quiesce).
void run_segments(io_queue& queue, std::span<const io_segment> segments, const io_options& o,
                  const std::filesystem::path& file, io_stats& stats,
                  const std::function<bool()>& should_stop = {});

}  // namespace lris::io::detail
