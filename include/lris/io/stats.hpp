#pragma once
/// @file
/// @brief io_stats: what one read or write through the io engine did, and why.

#include <cstdint>
#include <string>

namespace lris::io {

struct io_stats {
  std::uint64_t bytes = 0;
  double seconds = 0;
  /// The queue that ran it: "io_uring", "pread", "fault(io_uring)".
  std::string backend;
  /// Why not io_uring, when automatic selection fell back to the pread pool; else empty.
  std::string fallback_reason;
  /// "direct", "buffered" or "direct+buffered" (unaligned head or tail buffered).
  std::string mode;
  /// Why that mode: "cold: 3% of the range in the page cache", "O_DIRECT refused by the file
  /// system (EINVAL)", "destination not aligned for O_DIRECT", ...
  std::string mode_reason;
  /// Fraction of the range found in the page cache (mincore) before the read; -1 unchecked.
  double resident_fraction = -1;
  std::uint64_t direct_bytes = 0;
  std::uint64_t buffered_bytes = 0;
  std::uint64_t operations = 0;
  std::uint64_t short_transfers = 0;  ///< resubmitted for the rest
  std::uint64_t eagain_retries = 0;
  std::uint64_t eintr_retries = 0;
  unsigned queues = 0;
  /// The descriptors were registered with io_uring (fixed files).
  bool registered_files = false;
  /// Operations into or out of memory registered with io_engine::register_memory that went
  /// as io_uring fixed buffers.
  std::uint64_t fixed_buffer_ops = 0;

  [[nodiscard]] double gbps() const noexcept { return seconds > 0 ? bytes / seconds / 1e9 : 0; }

  /// @brief Adds the counters of `other` (a part of the same transfer); the descriptions stay.
  void add_counters(const io_stats& other) noexcept {
    bytes += other.bytes;
    direct_bytes += other.direct_bytes;
    buffered_bytes += other.buffered_bytes;
    operations += other.operations;
    short_transfers += other.short_transfers;
    eagain_retries += other.eagain_retries;
    eintr_retries += other.eintr_retries;
    registered_files = registered_files || other.registered_files;
    fixed_buffer_ops += other.fixed_buffer_ops;
  }
  /// @brief Adds a part of the same transfer: its counters, and its description where this
  /// has none yet or the part went direct (a buffered head or tail says little).
  void add_part(const io_stats& part) {
    add_counters(part);
    if (mode.empty() || part.direct_bytes > 0) {
      backend = part.backend;
      mode = part.mode;
      mode_reason = part.mode_reason;
    }
  }
  /// @brief "io_uring with fixed buffers, direct (cold: 0% of the range in the page cache)".
  [[nodiscard]] std::string summary() const {
    return backend + (fixed_buffer_ops > 0 ? " with fixed buffers" : "") + ", " + mode + " (" +
           mode_reason + ")";
  }
};

}  // namespace lris::io
