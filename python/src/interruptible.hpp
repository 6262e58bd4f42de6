#pragma once
// Waits that a Ctrl-C ends: work that takes no Python runs on a thread of its own while the
// calling Python thread waits with the GIL released, looking for a signal every 100 ms. On a
// Ctrl-C the work is asked to stop (a flag its progress callback reads: a load stops at its
// next chunk), waited for, and KeyboardInterrupt is raised.

#include <nanobind/nanobind.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>

#include <lris/formats/load_options.hpp>

#include "gil.hpp"
#include "progress.hpp"

namespace lris::python {

/// @brief True on a thread while it runs a progress callback of the caller's (Python code, on
/// one of a load's threads): whatever a Python object dropped there would wait for, it must
/// not wait for the load.
inline thread_local bool in_load_callback = false;

/// @brief A progress callback that says stop once `stop` is set, and else asks `inner` (none:
/// go on), marking the thread as in_load_callback meanwhile.
[[nodiscard]] inline progress_fn stoppable(const std::atomic<bool>& stop, progress_fn inner) {
  return [&stop, inner = std::move(inner)](std::uint64_t done, std::uint64_t total) {
    if (stop.load(std::memory_order_relaxed)) return false;
    if (!inner) return true;
    in_load_callback = true;
    const bool go_on = inner(done, total);
    in_load_callback = false;
    return go_on;
  };
}

/// @brief Waits, the GIL released, until done() holds (called under `mutex`; `changed` is
/// notified when it may). On a Ctrl-C: interrupted(), then a wait until finished() holds, then
/// KeyboardInterrupt. Called with the GIL held.
template <class Done, class Interrupted, class Finished>
void wait_interruptibly(std::mutex& mutex, std::condition_variable& changed, Done done,
                        Interrupted interrupted, Finished finished) {
  for (;;) {
    {
      gil_released nogil;
      std::unique_lock lock(mutex);
      if (changed.wait_for(lock, std::chrono::milliseconds(100), done)) return;
    }
    if (PyErr_CheckSignals() != 0) {
      interrupted();
      {
        nanobind::error_scope keep;  // the KeyboardInterrupt, kept across the wait for the end
        gil_released nogil;
        std::unique_lock lock(mutex);
        changed.wait(lock, finished);
      }
      throw nanobind::python_error();
    }
  }
}

/// @brief fn() (no Python in it) on a thread of its own, or here where no thread can be
/// started; its result, or what it threw. On a Ctrl-C meanwhile `stop` is set, fn's end waited
/// for, and KeyboardInterrupt raised. Called with the GIL held.
template <class Fn>
std::invoke_result_t<Fn&> run_interruptibly(Fn fn, std::atomic<bool>& stop) {
  using T = std::invoke_result_t<Fn&>;
  std::mutex mutex;
  std::condition_variable changed;
  bool finished = false;
  std::optional<T> value;
  std::exception_ptr error;
  auto body = [&]() noexcept {
    std::optional<T> v;
    std::exception_ptr e;
    try {
      v.emplace(fn());
    } catch (...) {
      e = std::current_exception();
    }
    std::lock_guard lock(mutex);
    value = std::move(v);
    error = std::move(e);
    finished = true;
    changed.notify_all();
  };
  std::thread thread;
  try {
    thread = std::thread(body);
  } catch (const std::system_error&) {
    gil_released nogil;
    body();
  }
  struct joined {
    std::thread& t;
    ~joined() {
      if (!t.joinable()) return;
      gil_released nogil;
      t.join();
    }
  } join_at_exit{thread};
  wait_interruptibly(mutex, changed, [&] { return finished; }, [&] { stop = true; },
                     [&] { return finished; });
  if (error) std::rethrow_exception(error);
  return std::move(*value);
}

/// @brief run_interruptibly(fn, stop) for a load whose progress goes to `bridge`: what the
/// caller's callback raised is raised in place of the load's lris.Cancelled.
template <class Fn>
std::invoke_result_t<Fn&> run_interruptibly(Fn fn, std::atomic<bool>& stop,
                                            const progress_bridge& bridge) {
  try {
    return run_interruptibly(std::move(fn), stop);
  } catch (const nanobind::python_error&) {
    throw;  // a Ctrl-C
  } catch (...) {
    bridge.rethrow();
    throw;
  }
}

}  // namespace lris::python
