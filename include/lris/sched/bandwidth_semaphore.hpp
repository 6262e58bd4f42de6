#pragma once
/// @file
/// @brief bandwidth_semaphore: a budget of bytes in flight on one resource (host DRAM, one
/// direction of a GPU's link, one disk), shared by the transfers that use it.
///
/// A transfer acquires tokens (bytes) before it starts a chunk and releases them when the chunk
/// has landed. When tokens are short, waiters are served by weighted fair queueing over three
/// priorities: each priority's share of the tokens granted while all are waiting follows its
/// weight (64 : 8 : 1 by default), so critical work overtakes bulk work at once while
/// background work still moves (no starvation). Within a priority, first come, first served.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include <lris/priority.hpp>

namespace lris::sched {

using lris::priority;
using lris::priority_count;

struct semaphore_options {
  /// Relative shares of the priorities while all of them wait; each at least 1.
  unsigned weight[priority_count] = {64, 8, 1};
};

/// @brief Counters of one semaphore, per priority.
struct semaphore_stats {
  std::uint64_t granted_bytes[priority_count] = {};
  std::uint64_t grants[priority_count] = {};
  std::uint64_t waits[priority_count] = {};  ///< grants that had to wait
  std::uint64_t timeouts = 0;                ///< timed acquires that gave up
  std::uint64_t in_flight = 0;               ///< bytes held now
  std::uint64_t waiting = 0;                 ///< requests waiting now
};

class bandwidth_semaphore;

/// @brief Tokens held; released when the guard is destroyed (or release() is called).
class token_guard {
 public:
  token_guard() = default;
  token_guard(token_guard&& o) noexcept
      : owner_(std::exchange(o.owner_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  token_guard& operator=(token_guard&& o) noexcept {
    if (this != &o) {
      release();
      owner_ = std::exchange(o.owner_, nullptr);
      bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
  }
  token_guard(const token_guard&) = delete;
  token_guard& operator=(const token_guard&) = delete;
  ~token_guard() { release(); }

  [[nodiscard]] std::uint64_t bytes() const noexcept { return bytes_; }
  [[nodiscard]] explicit operator bool() const noexcept { return owner_ != nullptr; }
  /// @brief Gives the tokens back now.
  void release() noexcept;

 private:
  friend class bandwidth_semaphore;
  token_guard(bandwidth_semaphore* owner, std::uint64_t bytes) noexcept
      : owner_(owner), bytes_(bytes) {}
  bandwidth_semaphore* owner_ = nullptr;
  std::uint64_t bytes_ = 0;
};

class bandwidth_semaphore {
 public:
  /// @brief A budget of `capacity` bytes in flight.
  /// @throws lris::invalid_argument for a capacity of 0 or a weight of 0.
  explicit bandwidth_semaphore(std::uint64_t capacity, semaphore_options options = {});
  /// @brief Waiters still queued are refused (their callbacks see an empty guard; blocking
  /// acquires must not be running).
  ~bandwidth_semaphore();
  bandwidth_semaphore(const bandwidth_semaphore&) = delete;
  bandwidth_semaphore& operator=(const bandwidth_semaphore&) = delete;

  [[nodiscard]] std::uint64_t capacity() const noexcept { return capacity_; }

  /// @brief Blocks until `bytes` tokens are granted. A request larger than the capacity is
  /// granted the whole capacity's worth once nothing else is in flight. A waiter spins (yielding
  /// the CPU) for up to `spin` before it sleeps: tokens released by a polling thread come back
  /// faster than a sleeping thread wakes.
  token_guard acquire(std::uint64_t bytes, priority p = priority::normal,
                      std::chrono::nanoseconds spin = {});
  /// @brief The tokens if they are free now and nobody waits ahead; else an empty guard.
  token_guard try_acquire(std::uint64_t bytes, priority p = priority::normal);
  /// @brief As acquire(), giving up (an empty guard) after `timeout`.
  token_guard try_acquire_for(std::uint64_t bytes, priority p, std::chrono::nanoseconds timeout,
                              std::chrono::nanoseconds spin = {});
  /// @brief Calls `granted` with the guard once the tokens are granted: at once, on this
  /// thread, when they are free; else on the thread whose release frees them. `granted` must
  /// not block.
  void acquire_async(std::uint64_t bytes, priority p, std::function<void(token_guard)> granted);

  [[nodiscard]] semaphore_stats stats() const;

 private:
  friend class token_guard;
  struct waiter;
  void release(std::uint64_t bytes) noexcept;
  // Grants to queued waiters while tokens allow; returns the async grants to run unlocked.
  void grant_locked(std::vector<std::pair<std::function<void(token_guard)>, token_guard>>& run);
  [[nodiscard]] std::uint64_t clamp(std::uint64_t bytes) const noexcept {
    return bytes < capacity_ ? bytes : capacity_;
  }
  bool queues_empty() const noexcept;
  std::shared_ptr<waiter> enqueue(std::uint64_t bytes, priority p);

  const std::uint64_t capacity_;
  semaphore_options options_;
  mutable std::mutex mutex_;
  std::uint64_t in_flight_ = 0;
  // Weighted fair queueing: each priority's virtual time advances by bytes / weight with each
  // grant; the priority whose head would finish first (virtual time + bytes / weight) goes
  // next, so a critical request overtakes a background one that came first.
  double virtual_time_[priority_count] = {};
  std::deque<std::shared_ptr<waiter>> queue_[priority_count];
  semaphore_stats stats_;
};

}  // namespace lris::sched
