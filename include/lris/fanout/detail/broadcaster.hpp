#pragma once
/// @file
/// @brief fanout::detail::broadcaster: the nccl route's broadcasts, on a stream of each device
/// of its own, each waited for within a timeout. The communicators are made on another
/// thread from construction on, so that their set-up overlaps the load's first reads; the
/// first broadcast waits for them within its timeout too.

#include <chrono>
#include <concepts>
#include <cstddef>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include <lris/error.hpp>
#include <lris/fanout/nccl.hpp>

namespace lris::fanout::detail {

/// @brief A backend whose streams NCCL can run on: streams with a runtime handle, and events.
template <class B>
concept collective_backend = requires(B& b, typename B::stream& s, typename B::event& e) {
  { b.make_stream().native() } -> std::same_as<void*>;
  { b.make_event() } -> std::same_as<typename B::event>;
  b.record(e, s);
  { b.query(e) } -> std::same_as<bool>;
};

/// @brief Taken by a load on the nccl route for as long as its communicators live, in the
/// registry of its first pipeline's context: one such load at a time, since NCCL's
/// communicators of two at once on the same GPUs may deadlock each other.
struct collective_turn {
  std::mutex m;
};

/// @brief Broadcasts among devices of a collective_backend (Backend), one NCCL group.
template <class Backend>
class broadcaster {
 public:
  /// @brief Why a broadcast failed: the device (its index among the group's) and what it met.
  struct failure {
    std::size_t device = 0;
    std::string why;
    bool timed_out = false;
  };

  /// @brief A stream and an event on each of `devices`; their communicators made from now on,
  /// on a thread of their own (`library` must be available).
  broadcaster(std::shared_ptr<const nccl_library> library, std::vector<Backend> devices)
      : devices_(std::move(devices)), init_(std::make_shared<init_state>()) {
    std::vector<int> ordinals;
    for (Backend& b : devices_) {
      streams_.push_back(b.make_stream());
      events_.push_back(b.make_event());
      ordinals.push_back(b.device());
    }
    // Detached: a set-up that never ends (a GPU that does not answer) holds its thread, never
    // the caller; a group made after the caller gave up on it is destroyed there.
    std::thread([state = init_, library = std::move(library), ordinals = std::move(ordinals)] {
      const auto t0 = std::chrono::steady_clock::now();
      std::unique_ptr<nccl_group> group;
      std::exception_ptr error;
      try {
        group = std::make_unique<nccl_group>(*library, ordinals);
      } catch (...) {
        error = std::current_exception();
      }
      std::lock_guard lock(state->m);
      state->seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      state->done = true;
      if (!state->abandoned) {
        state->group = std::move(group);
        state->error = error;
      }
      state->cv.notify_all();
    }).detach();
  }
  ~broadcaster() {
    std::lock_guard lock(init_->m);
    init_->abandoned = true;
  }
  broadcaster(const broadcaster&) = delete;
  broadcaster& operator=(const broadcaster&) = delete;

  /// @brief Seconds the communicators took to make (0 until the first broadcast).
  [[nodiscard]] double init_seconds() const noexcept { return init_seconds_; }

  /// @brief Broadcasts `bytes` of buffers[root] into buffers[d] of every device d and waits for
  /// each device to have them, at most `timeout` in all (zero: no limit). On a failure or a
  /// timeout the communicators are aborted (nothing stays blocked on them) and the failure is
  /// returned; later calls fail at once.
  /// @throws lris::device_error naming NCCL's error when the communicators could not be made
  /// (then later calls fail at once).
  [[nodiscard]] std::optional<failure> run(std::span<void* const> buffers, std::size_t bytes,
                                           std::size_t root, std::chrono::milliseconds timeout) {
    if (!group_) {
      if (aborted_) return failure{root, "the communicators were aborted after a failure", false};
      std::unique_lock lock(init_->m);
      auto done = [&] { return init_->done; };
      if (timeout.count() > 0) {
        if (!init_->cv.wait_for(lock, timeout, done)) {
          init_->abandoned = true;
          aborted_ = true;
          return failure{root, fmt::format("NCCL's communicators were not made within {} ms",
                                           timeout.count()), true};
        }
      } else {
        init_->cv.wait(lock, done);
      }
      init_seconds_ = init_->seconds;
      if (init_->error) {
        aborted_ = true;
        std::rethrow_exception(init_->error);
      }
      group_ = std::move(init_->group);
    }
    const std::size_t n = devices_.size();
    std::vector<void*> streams(n);
    for (std::size_t d = 0; d < n; ++d) streams[d] = streams_[d].native();
    try {
      group_->broadcast(buffers, bytes, root, streams);
      for (std::size_t d = 0; d < n; ++d) devices_[d].record(events_[d], streams_[d]);
    } catch (const std::exception& e) {
      return fail({root, e.what(), false});
    }
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (std::size_t d = 0; d < n; ++d) {
      for (unsigned polls = 0;; ++polls) {
        try {
          if (devices_[d].query(events_[d])) break;
        } catch (const std::exception& e) {
          return fail({d, e.what(), false});
        }
        if (auto e = group_->async_error()) return fail({e->rank, std::move(e->what), false});
        if (timeout.count() > 0 && std::chrono::steady_clock::now() > deadline) {
          return fail({d, "not received within " + std::to_string(timeout.count()) + " ms", true});
        }
        if (polls < 64) {
          std::this_thread::yield();
        } else {
          std::this_thread::sleep_for(std::chrono::microseconds(20));
        }
      }
    }
    // A communicator that failed may have ended its work early: done is not delivered.
    if (auto e = group_->async_error()) return fail({e->rank, std::move(e->what), false});
    return std::nullopt;
  }

 private:
  // The communicators' set-up, shared with the thread that makes them.
  struct init_state {
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
    bool abandoned = false;  // the broadcaster is gone or gave up: the thread keeps nothing
    std::unique_ptr<nccl_group> group;
    std::exception_ptr error;
    double seconds = 0;
  };
  failure fail(failure f) {
    group_->abort();
    group_.reset();
    aborted_ = true;
    return f;
  }

  std::vector<Backend> devices_;
  std::vector<typename Backend::stream> streams_;
  std::vector<typename Backend::event> events_;
  std::shared_ptr<init_state> init_;
  std::unique_ptr<nccl_group> group_;  // destroyed first: before the streams it ran on
  double init_seconds_ = 0;
  bool aborted_ = false;
};

}  // namespace lris::fanout::detail
