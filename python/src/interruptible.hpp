#pragma once
// Waits that a Ctrl-C ends: work that takes no Python runs on a thread of its own while the
// calling Python thread waits with the GIL released, giving the work's progress to the
// caller's callable as it comes and looking for a signal every 100 ms. On a Ctrl-C the work is
// asked to stop (its progress callback says stop: a load stops at its next chunk), waited
// for, and KeyboardInterrupt is raised.

#include <nanobind/nanobind.h>

#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>

#include "gil.hpp"
#include "progress.hpp"

namespace lris::python {

/// @brief Waits, the GIL released, until done() holds (called under `mutex`; `changed` is
/// notified when it may), giving the load's progress to its callable (`bridge`) under the GIL
/// as it comes, and once more at the end. On a Ctrl-C: the load stopped, a wait until
/// finished() holds, then KeyboardInterrupt. Called with the GIL held.
template <class Done, class Finished>
void wait_interruptibly(std::mutex& mutex, std::condition_variable& changed, Done done,
                        Finished finished, progress_bridge& bridge) {
  for (;;) {
    bool over = false;
    {
      gil_released nogil;
      std::unique_lock lock(mutex);
      changed.wait_for(lock, std::chrono::milliseconds(100),
                       [&] { return done() || bridge.news(); });
      over = done();
    }
    bridge.deliver();
    if (over) return;
    if (PyErr_CheckSignals() != 0) {
      bridge.stop();
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

/// @brief fn() (no Python in it; a load whose on_progress is bridge.callback()) on a thread of
/// its own, or here where no thread can be started; its result, or what it threw: what the
/// progress callable raised (or lris.Cancelled where it said stop) in place of either. Progress
/// goes to the callable from here meanwhile. On a Ctrl-C the load is stopped, its end waited for, and
/// KeyboardInterrupt raised. Called with the GIL held.
template <class Fn>
std::invoke_result_t<Fn&> run_interruptibly(Fn fn, progress_bridge& bridge) {
  using T = std::invoke_result_t<Fn&>;
  std::mutex mutex;
  std::condition_variable changed;
  bool finished = false;
  std::optional<T> value;
  std::exception_ptr error;
  bridge.wake_with(mutex, changed);
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
  wait_interruptibly(mutex, changed, [&] { return finished; }, [&] { return finished; }, bridge);
  bridge.raise_refusal();
  if (error) std::rethrow_exception(error);
  return std::move(*value);
}

}  // namespace lris::python
