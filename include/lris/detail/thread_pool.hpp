#pragma once
/// @file
/// @brief A fixed pool of worker threads and a blocking parallel loop over it.

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace lris::detail {

/// @brief Worker threads that run submitted tasks in FIFO order. The destructor finishes every
/// task already submitted, then joins.
class thread_pool {
 public:
  explicit thread_pool(unsigned threads);
  ~thread_pool();
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;

  /// @brief Queues `task`; it must not throw (wrap it if it can).
  void submit(std::function<void()> task);
  [[nodiscard]] unsigned size() const noexcept { return static_cast<unsigned>(workers_.size()); }
  /// @brief True on one of this pool's threads.
  [[nodiscard]] bool on_worker_thread() const noexcept;

  /// @brief The process-wide pool: one thread per hardware thread, created on first use.
  static thread_pool& shared();

 private:
  void run();

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  std::atomic<std::size_t> queued_{0};  // tasks_.size(), readable without the lock
  std::atomic<bool> stopping_{false};
  std::vector<std::thread> workers_;
};

/// @brief Calls `fn(i)` for every i in [0, count) on up to `max_threads` threads of `pool`
/// plus the calling thread, and returns when all calls have returned. The caller takes part,
/// so this never deadlocks, even from inside the pool. The first exception is rethrown after
/// every started call has finished; calls not yet started are skipped.
void parallel_for(thread_pool& pool, std::size_t count, unsigned max_threads,
                  const std::function<void(std::size_t)>& fn);

/// @brief memcpy of `bytes` split into pieces of at least `min_piece` bytes over up to
/// `max_threads` threads (the caller included).
void parallel_memcpy(thread_pool& pool, void* dst, const void* src, std::size_t bytes,
                     unsigned max_threads, std::size_t min_piece = std::size_t{1} << 20);

}  // namespace lris::detail
