#pragma once
/// @file
/// @brief A fixed pool of worker threads with a lane per priority, and a blocking parallel loop
/// over it.

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <memory>
#include <thread>
#include <vector>

#include <lris/detail/fork_guard.hpp>
#include <lris/priority.hpp>

namespace lris::detail {

/// @brief Worker threads that run submitted tasks, one FIFO lane per priority.
///
/// A free thread takes the oldest critical task, else the oldest normal one, else a
/// background one, but never lets background tasks occupy more than `background_threads` of
/// its threads: a background task may sleep (a throttled prefetch) or wait for tokens, and
/// critical work must never wait behind it. Within a lane, tasks run in the order submitted,
/// so chunk tasks that queue themselves again take turns with those of other transfers.
/// The destructor finishes every task already submitted, then joins; it must not run on one of
/// the pool's own threads (lris::context sees to that for its pools).
class thread_pool {
 public:
  /// @param threads at least 1
  /// @param background_threads at most this many threads run background tasks at once
  ///        (0: half the threads, at least 1)
  explicit thread_pool(unsigned threads, unsigned background_threads = 0);
  ~thread_pool();
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;

  /// @brief Queues `task` in the lane of `p`; it must not throw (wrap it if it can).
  /// @throws lris::error in the child of a fork() after the pool was made (no thread of it
  /// runs there).
  void submit(std::function<void()> task, priority p = priority::normal);
  [[nodiscard]] unsigned size() const noexcept { return static_cast<unsigned>(workers_.size()); }
  /// @brief At most this many threads run background tasks at once.
  [[nodiscard]] unsigned background_threads() const noexcept { return background_max_; }
  /// @brief True when a task that could run now waits for a thread (a hint: it may change at
  /// once).
  [[nodiscard]] bool waiting() const noexcept {
    return queued_.load(std::memory_order_relaxed) > 0;
  }
  /// @brief True on one of this pool's threads.
  [[nodiscard]] bool on_worker_thread() const noexcept;

 private:
  void run();
  [[nodiscard]] bool runnable() const noexcept;  // under mutex_
  [[nodiscard]] bool drained() const noexcept;   // under mutex_

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> lanes_[priority_count];
  std::atomic<std::size_t> queued_{0};  // runnable tasks, readable without the lock
  unsigned background_max_ = 1;
  unsigned background_running_ = 0;
  std::atomic<bool> stopping_{false};  // set under mutex_, read without it while spinning
  fork_guard fork_;
  std::vector<std::thread> workers_;
};

/// @brief The compute lanes of the process's default context (lris::default_context()), for
/// code below the context that runs on no context of its own: the host backend's copy engine
/// and the host element operations (convert, block_checksum). Shared ownership: a default
/// context replaced while such work runs lives until the work lets go of its pool.
[[nodiscard]] std::shared_ptr<thread_pool> default_thread_pool();
/// @brief The io lane of the process's default context, likewise: for an io engine made with
/// no pool of its own.
[[nodiscard]] std::shared_ptr<thread_pool> default_io_thread_pool();

/// @brief Calls `fn(i)` for every i in [0, count) on up to `max_threads` threads of `pool`
/// plus the calling thread, and returns when all calls have returned. The caller takes part,
/// so this never deadlocks, even from inside the pool; helpers go in the lane of `p`. The first
/// exception is rethrown after every started call has finished; calls not yet started are
/// skipped.
void parallel_for(thread_pool& pool, std::size_t count, unsigned max_threads,
                  const std::function<void(std::size_t)>& fn, priority p = priority::normal);

/// @brief memcpy of `bytes` split into pieces of at least `min_piece` bytes over up to
/// `max_threads` threads (the caller included).
void parallel_memcpy(thread_pool& pool, void* dst, const void* src, std::size_t bytes,
                     unsigned max_threads, std::size_t min_piece = std::size_t{1} << 20,
                     priority p = priority::normal);

}  // namespace lris::detail
