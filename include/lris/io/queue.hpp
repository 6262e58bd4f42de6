#pragma once
/// @file
/// @brief io_queue: the seam under the io engine. A queue takes read and write operations and
/// hands back their completions, in any order. io_uring, a pread thread pool and the seeded
/// fault-injecting queue (fault_queue.hpp) are its models; the engine's request driver works
/// against this interface only, so every fault it must survive can be injected in a test.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace lris::io {

/// @brief One operation: `len` bytes at file offset `offset` of `fd`, into or out of `buf`.
struct io_op {
  int fd = -1;
  std::uint64_t offset = 0;
  void* buf = nullptr;
  std::size_t len = 0;
  bool write = false;
  std::uint64_t tag = 0;  ///< returned with the completion
};

/// @brief Memory registered with a queue for the operations into or out of it (io_uring:
/// fixed buffers, which spare the kernel pinning its pages for every operation). `id` is
/// unique for the life of the engine: memory freed and allocated again at the same address
/// comes back under another id, so a queue never mistakes it for the old registration.
struct fixed_buffer {
  std::uint64_t id = 0;
  std::byte* data = nullptr;
  std::size_t bytes = 0;
};

/// @brief How an operation ended: bytes moved (>= 0; fewer than asked is a short read or
/// write), or -errno.
struct io_completion {
  std::uint64_t tag = 0;
  long result = 0;
};

/// @brief A queue of asynchronous file operations. Not thread-safe: one driver owns it.
class io_queue {
 public:
  virtual ~io_queue() = default;
  /// @brief Operations that may be in flight at once.
  [[nodiscard]] virtual unsigned capacity() const noexcept = 0;
  /// @brief "io_uring", "pread", "fault(io_uring)".
  [[nodiscard]] virtual std::string_view name() const noexcept = 0;
  /// @brief Starts `ops` (at most capacity() minus those in flight). Throws lris::io_error
  /// only when the queue itself fails; a failed operation reports through its completion.
  virtual void submit(std::span<const io_op> ops) = 0;
  /// @brief Waits until at least `min` completions are ready or `timeout` passes, then moves
  /// up to out.size() of them into `out`; returns how many. Blocks without busy-polling.
  virtual std::size_t wait(std::span<io_completion> out, std::size_t min,
                           std::chrono::microseconds timeout) = 0;
  /// @brief Registers `fds` with the kernel for the operations that follow, where the queue
  /// can (io_uring: fixed files, which spares the kernel a file lookup per operation); true
  /// when it did. Until release_files(), the descriptors must stay open.
  virtual bool use_files(std::span<const int> fds) {
    (void)fds;
    return false;
  }
  /// @brief Forgets what use_files registered; called with no operation in flight.
  virtual void release_files() noexcept {}
  /// @brief Makes the queue's registered memory exactly `buffers`, where the queue can (the
  /// rest of the operations go as before); returns how many of them it holds. Called with no
  /// operation in flight.
  virtual std::size_t sync_buffers(std::span<const fixed_buffer> buffers) {
    (void)buffers;
    return 0;
  }
  /// @brief Operations so far that went through registered memory.
  [[nodiscard]] virtual std::uint64_t fixed_buffer_ops() const noexcept { return 0; }

  /// @brief Gives the queue up after submit() or wait() failed: returns only once no operation
  /// submitted to it can still read or write its memory, drops their completions, and leaves
  /// the queue broken (submit() and wait() throw lris::io_error from then on). The request
  /// driver calls it before it reports the failure, so that the caller never gets back memory
  /// the kernel or a thread may still write into. It waits as long as the operations take
  /// (as a blocking read of the same range would), never less. Returns how many operations
  /// were in flight: submitted, their completions not yet returned by wait().
  virtual std::size_t quiesce() noexcept = 0;
  /// @brief True once quiesce() ran: the queue takes no more operations, and its owner drops
  /// it (the io engine makes a fresh one).
  [[nodiscard]] virtual bool broken() const noexcept = 0;
};

}  // namespace lris::io
