#pragma once
/// @file
/// @brief Shared state between a transfer handle and the threads executing it.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <typeinfo>
#include <mutex>
#include <vector>

#include <fmt/format.h>

#include <lris/error.hpp>

#include <lris/detail/spin_wait.hpp>
#include <lris/exec/stats.hpp>

namespace lris::detail {

struct transfer_state {
  explicit transfer_state(std::uint64_t total_bytes, progress_fn progress)
      : total(total_bytes), on_progress(std::move(progress)) {}

  const std::uint64_t total;
  std::atomic<std::uint64_t> done{0};
  std::atomic<bool> cancel_requested{false};
  const std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();

  std::mutex mutex;
  std::condition_variable cv;
  bool finished = false;
  std::atomic<bool> finished_flag{false};  // `finished`, readable without the lock
  std::exception_ptr error;
  transfer_stats stats;  // written before `finished`, read after

  progress_fn on_progress;
  std::mutex progress_mutex;  // serializes on_progress calls

  // Single-operation device transfers finish when their device event does. The waiter observes
  // it directly (event wait or query) rather than through a callback thread, which would add a
  // thread wake-up, tens of microseconds or more, to every small transfer.
  std::function<void()> device_wait;   // blocks until the device work is done; may throw
  std::function<bool()> device_ready;  // never blocks
  std::mutex completion_mutex;         // one thread completes; others then see `finished`
  // Work that a waiter does itself before it waits, if no pool thread has begun it: the rest
  // of a transfer, which then needs no thread to wake, neither to go on nor to say it is done.
  // Set before the transfer is handed out.
  std::function<void()> help;
  // Transfers that complete by a device event: asks someone (the context's poller) to call
  // `then` once `ready` is true, so that on_complete callbacks run without a waiter. Set with
  // device_wait, before the transfer is handed out.
  std::function<void(std::function<bool()> ready, std::function<void()> then)> watch;
  // Transfers that complete by a device event: makes `stream` (a Backend::stream of the
  // backend whose typeid and device are given) wait for that event, with no host wait; false
  // when the backend or device is another. Set with device_wait.
  std::function<bool(const std::type_info& backend, int device, void* stream)> stream_wait;

  // Called once each, after finish(), with the error (lris::cancelled for a cancelled
  // transfer; null on success). Guarded by `mutex`.
  std::vector<std::function<void(std::exception_ptr)>> callbacks;
  bool watched = false;  // guarded by `mutex`

  /// @brief The outcome as on_complete callbacks see it: null, the error, or lris::cancelled.
  /// After finish().
  [[nodiscard]] std::exception_ptr outcome() const {
    if (error) return error;
    if (stats.cancelled) {
      return std::make_exception_ptr(cancelled(fmt::format(
          "transfer cancelled after {} of {} bytes", stats.bytes, total)));
    }
    return nullptr;
  }

  /// @brief Calls `fn(outcome)` once the transfer has finished: now, on this thread, when it
  /// already has; else on the thread that finishes it.
  void add_callback(std::function<void(std::exception_ptr)> fn, std::shared_ptr<transfer_state> self) {
    std::unique_lock lock(mutex);
    if (finished) {
      const std::exception_ptr e = outcome();
      lock.unlock();
      fn(e);
      return;
    }
    callbacks.push_back(std::move(fn));
    if (device_ready && watch && !watched) {
      watched = true;
      lock.unlock();
      watch([self] { return self->finished_flag.load(std::memory_order_acquire) ||
                            self->device_ready(); },
            [self] { self->complete_device(true); });
    }
  }

  /// @brief For device transfers: completes the transfer if its event is done (or, with
  /// `block`, once it is). True when the transfer has finished.
  bool complete_device(bool block) noexcept {
    std::lock_guard lock(completion_mutex);
    if (finished_flag.load(std::memory_order_acquire)) return true;
    try {
      if (block) {
        device_wait();
      } else if (!device_ready()) {
        return false;
      }
      add_progress(total);
    } catch (...) {
      fail(std::current_exception());
    }
    finish();
    return true;
  }

  /// @brief Counts `bytes` as delivered and tells the progress callback, which may cancel.
  void add_progress(std::uint64_t bytes) noexcept {
    const std::uint64_t now = done.fetch_add(bytes, std::memory_order_relaxed) + bytes;
    if (!on_progress) return;
    std::lock_guard lock(progress_mutex);
    try {
      if (!on_progress(now, total)) cancel_requested = true;
    } catch (...) {
      fail(std::current_exception());
    }
  }

  /// @brief Records the first error; the executors stop at their next chunk.
  void fail(std::exception_ptr e) noexcept {
    {
      std::lock_guard lock(mutex);
      if (!error) error = std::move(e);
    }
    cancel_requested = true;
  }

  /// @brief Blocks until finish() has run: spins briefly first, since most waits are short.
  void wait_finished() {
    if (device_wait) {
      complete_device(true);
      return;
    }
    if (help) help();
    if (spin_until([&] { return finished_flag.load(std::memory_order_acquire); })) return;
    std::unique_lock lock(mutex);
    cv.wait(lock, [&] { return finished; });
  }

  [[nodiscard]] bool should_stop() const noexcept {
    return cancel_requested.load(std::memory_order_relaxed);
  }

  /// @brief Marks the transfer finished; called exactly once, after the last byte has landed.
  /// Then runs the on_complete callbacks (an exception one throws is dropped: there is no one
  /// to give it to).
  void finish() noexcept {
    std::vector<std::function<void(std::exception_ptr)>> run;
    std::exception_ptr e;
    {
      std::lock_guard lock(mutex);
      stats.bytes = done.load();
      stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      stats.cancelled = !error && stats.bytes < total;
      finished = true;
      finished_flag.store(true, std::memory_order_release);
      run.swap(callbacks);
      if (!run.empty()) {
        try {
          e = outcome();
        } catch (...) {
          e = std::current_exception();  // out of memory for the message
        }
      }
    }
    cv.notify_all();
    for (auto& fn : run) {
      try {
        fn(e);
      } catch (...) {
      }
    }
  }
};

}  // namespace lris::detail
