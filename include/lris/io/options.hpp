#pragma once
/// @file
/// @brief io_options: how the io engine reads and writes files.

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>

#include <lris/io/queue.hpp>

namespace lris::io {

/// @brief Which queue runs the operations.
enum class io_backend {
  automatic,  ///< io_uring where the kernel allows it, else the pread pool (reason in stats)
  io_uring,   ///< io_uring or a clear error naming why the kernel refused it
  pread,      ///< a pool of threads doing pread/pwrite
};

/// @brief Whether reads and writes bypass the page cache.
enum class direct_mode {
  automatic,  ///< O_DIRECT for data not in the page cache, buffered for data that is
  always,     ///< O_DIRECT wherever the file system and the geometry allow
  never,      ///< buffered only
};

struct io_options {
  io_backend backend = io_backend::automatic;
  direct_mode direct = direct_mode::automatic;
  /// Operations in flight per queue.
  unsigned queue_depth = 64;
  /// Queues (each with its own thread) a large read or write is split over. Cold data on one
  /// NVMe needs one; data in the page cache is copied by the kernel, and gains from several.
  unsigned queues = 1;
  /// Queues for data found in the page cache under direct_mode::automatic.
  unsigned resident_queues = 8;
  /// Largest single operation; a multiple of 4096.
  std::size_t block_bytes = std::size_t{1} << 20;
  /// EAGAIN and EINTR are retried after a wait that doubles from backoff_initial up to
  /// backoff_max, at most max_retries times per operation.
  unsigned max_retries = 16;
  std::chrono::microseconds backoff_initial{50};
  std::chrono::microseconds backoff_max{10000};
  /// For tests and fault injection: makes the queue instead of the engine (io_uring or pread
  /// per `backend` when empty). Called with the queue depth.
  std::function<std::unique_ptr<io_queue>(unsigned depth)> make_queue;

  /// @brief The same settings. A make_queue hook is the same as nothing, not even itself.
  [[nodiscard]] bool same_as(const io_options& o) const noexcept {
    return !make_queue && !o.make_queue && backend == o.backend && direct == o.direct &&
           queue_depth == o.queue_depth && queues == o.queues &&
           resident_queues == o.resident_queues && block_bytes == o.block_bytes &&
           max_retries == o.max_retries && backoff_initial == o.backoff_initial &&
           backoff_max == o.backoff_max;
  }
};

/// @brief Settings of one read or write that differ from the engine's io_options; what is
/// left unset (nullopt, 0) is the engine's.
struct io_overrides {
  std::optional<direct_mode> direct;
  /// Operations in flight per queue: at most the engine's queue_depth (the size of its rings).
  unsigned queue_depth = 0;
  /// Queues the read or write is split over (resident_queues for data found in the page
  /// cache when `direct` is automatic).
  unsigned queues = 0;
};

}  // namespace lris::io
