#pragma once
/// @file
/// @brief One worker thread running tasks strictly in submission order (a host "stream").

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include <lris/detail/spin_wait.hpp>

namespace lris::detail {

/// @brief Runs submitted tasks one after another on its own thread; the destructor runs what
/// is queued, then joins. Tasks must not throw.
class serial_queue {
 public:
  serial_queue() : worker_([this] { run(); }) {}
  ~serial_queue() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    cv_.notify_all();
    worker_.join();
  }
  serial_queue(const serial_queue&) = delete;
  serial_queue& operator=(const serial_queue&) = delete;

  void submit(std::function<void()> task) {
    {
      std::lock_guard lock(mutex_);
      tasks_.push_back(std::move(task));
      queued_.store(tasks_.size(), std::memory_order_release);
    }
    cv_.notify_all();
  }

  /// @brief Blocks until every task submitted before the call has run.
  void drain() {
    std::unique_lock lock(mutex_);
    const unsigned long long target = submitted_ + tasks_.size();
    idle_cv_.wait(lock, [&] { return completed_ >= target; });
  }

 private:
  void run() {
    for (;;) {
      std::function<void()> task;
      (void)spin_until([this] {
        return queued_.load(std::memory_order_acquire) > 0 || stopping_.load();
      });
      {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
        if (tasks_.empty()) return;
        task = std::move(tasks_.front());
        tasks_.pop_front();
        queued_.store(tasks_.size(), std::memory_order_release);
        ++submitted_;
      }
      task();
      {
        std::lock_guard lock(mutex_);
        ++completed_;
      }
      idle_cv_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable cv_;
  std::condition_variable idle_cv_;
  std::deque<std::function<void()>> tasks_;
  unsigned long long submitted_ = 0;  // tasks taken off the queue
  unsigned long long completed_ = 0;  // tasks finished
  std::atomic<std::size_t> queued_{0};  // tasks_.size(), readable without the lock
  std::atomic<bool> stopping_{false};
  std::thread worker_;  // last: starts after the members it uses exist
};

}  // namespace lris::detail
