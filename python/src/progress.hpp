#pragma once
// A load's progress, reported to a Python callable(bytes_done, bytes_total) -> bool on the
// thread that waits for the load, and the load's stop (a Ctrl-C, cancel(), the callable's
// answer). The load's own threads take no GIL: they leave the newest count here and wake the
// waiter, which calls the callable under its GIL.

#include <nanobind/nanobind.h>

#include <cxxabi.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <string>
#include <utility>

#include <lris/error.hpp>
#include <lris/formats/load_options.hpp>

#include "gil.hpp"

namespace lris::python {

/// @brief Between a load's threads and the Python thread that waits for it. callback() is the
/// load's on_progress: it keeps the highest count, wakes the waiter (wake_with()) where there
/// is a callable, and says stop once stop() was called. deliver() calls the callable with a
/// count above the last it was given, one call at a time; a false value (None goes on) or an
/// exception stops the load at its next chunk, and raise_refusal() then raises that exception,
/// or lris.Cancelled, even where the last byte had arrived by then.
class progress_bridge {
 public:
  /// @brief `what`: the call, for messages, e.g. lris.load("model.safetensors").
  progress_bridge(nanobind::object fn, std::string what)
      : fn_(std::move(fn)), has_fn_(!fn_.is_none()), what_(std::move(what)) {}
  progress_bridge(const progress_bridge&) = delete;
  progress_bridge& operator=(const progress_bridge&) = delete;

  /// @brief The waiter's lock and condition, notified at each count. Set before the load starts.
  void wake_with(std::mutex& mutex, std::condition_variable& changed) noexcept {
    mutex_ = &mutex;
    changed_ = &changed;
  }

  /// @brief The load's callback (any thread; refers to this bridge).
  [[nodiscard]] progress_fn callback() {
    return [this](std::uint64_t done, std::uint64_t total) {
      if (stopped()) return false;
      if (has_fn_) {
        std::uint64_t seen = done_.load(std::memory_order_relaxed);
        while (done > seen && !done_.compare_exchange_weak(seen, done)) {
        }
        total_.store(total, std::memory_order_relaxed);
        posted_.store(true, std::memory_order_release);
        if (mutex_ != nullptr) {
          { std::lock_guard lock(*mutex_); }  // a waiter between its check and its wait wakes
          changed_->notify_all();
        }
      }
      return !stopped();
    };
  }

  /// @brief Stops the load at its next chunk (any thread).
  void stop() noexcept { stop_.store(true, std::memory_order_release); }
  [[nodiscard]] bool stopped() const noexcept { return stop_.load(std::memory_order_acquire); }

  /// @brief Whether deliver() has a count to give (any thread; the waiter asks under its lock):
  /// none while another waiter is in the callable, which gives the newest count after.
  [[nodiscard]] bool news() const noexcept {
    return has_fn_ && !stopped() && !delivering_.load(std::memory_order_relaxed) &&
           posted_.load(std::memory_order_acquire) &&
           (!delivered_once_.load(std::memory_order_relaxed) ||
            done_.load(std::memory_order_relaxed) > reported_.load(std::memory_order_relaxed));
  }

  /// @brief The newest count to the callable, if there is one it was not given (the waiting
  /// thread, under the GIL). Where the interpreter ends this thread inside the callable (a
  /// daemon thread as the process exits), the thread waits for the end there.
  void deliver() {
    if (fn_.is_none() || !news()) return;
    const std::uint64_t done = done_.load(std::memory_order_relaxed);
    const std::uint64_t total = total_.load(std::memory_order_relaxed);
    reported_.store(done, std::memory_order_relaxed);
    delivered_once_.store(true, std::memory_order_relaxed);
    delivering_ = true;  // the callable may let the GIL go: another waiter must not call it now
    struct clear {
      std::atomic<bool>& flag;
      ~clear() { flag = false; }
    } at_end{delivering_};
    try {
      nanobind::object r = fn_(done, total);
      if (r.is_none()) return;
      const int go_on = PyObject_IsTrue(r.ptr());  // any object's truth, as `if r:` takes it
      if (go_on < 0) throw nanobind::python_error();
      if (go_on == 0) {
        refused_ = true;
        stop();
      }
    } catch (const abi::__forced_unwind&) {
      wait_for_the_end();
    } catch (...) {
      error_ = std::current_exception();
      stop();
    }
  }

  /// @brief The callable, for the garbage collector's traversal (under the GIL); null when
  /// there is none.
  [[nodiscard]] PyObject* callable() const noexcept { return fn_.is_none() ? nullptr : fn_.ptr(); }
  /// @brief Lets go of the callable (the collector's clear, under the GIL) and stops the load:
  /// nobody awaits it.
  void forget() {
    stop();
    fn_ = nanobind::none();
  }
  /// @brief Raises what the callable raised, or lris.Cancelled where it said stop; nothing
  /// where it did neither.
  void raise_refusal() const {
    if (error_) std::rethrow_exception(error_);
    if (refused_) throw cancelled(what_ + ": cancelled by its progress callback");
  }
  /// @brief Whether the callable said stop (a false value, not an exception).
  [[nodiscard]] bool refused() const noexcept { return refused_; }
  [[nodiscard]] const std::string& what() const noexcept { return what_; }
  /// @brief Once the load is over (under the GIL): lets go of the callable and hands over what
  /// it raised, if anything, leaving nothing here. Kept, a raised exception would hold the
  /// frames it went through, and through them whatever holds this bridge: a cycle the
  /// collector cannot see into.
  [[nodiscard]] std::exception_ptr end() {
    fn_ = nanobind::none();
    return std::exchange(error_, nullptr);
  }

 private:
  nanobind::object fn_;
  const bool has_fn_;  // read by the load's threads: fn_ itself is the GIL's
  const std::string what_;
  std::mutex* mutex_ = nullptr;
  std::condition_variable* changed_ = nullptr;
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> done_{0};
  std::atomic<std::uint64_t> total_{0};
  std::atomic<bool> posted_{false};
  // Written by the waiting thread under the GIL; news() reads them without it.
  std::atomic<std::uint64_t> reported_{0};
  std::atomic<bool> delivered_once_{false};
  std::atomic<bool> delivering_{false};  // written under the GIL
  bool refused_ = false;     // the GIL's
  std::exception_ptr error_;
};

}  // namespace lris::python
