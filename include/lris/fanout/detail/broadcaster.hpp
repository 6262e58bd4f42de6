#pragma once
/// @file
/// @brief fanout::detail::broadcaster: the nccl route's broadcasts, on a stream of each device
/// of its own, each waited for within a timeout. The communicators are made on another
/// thread from construction on, so that their set-up overlaps the load's first reads.

#include <chrono>
#include <concepts>
#include <cstddef>
#include <future>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

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
  /// on another thread. `library` must be available and outlive the object.
  broadcaster(const nccl_library& library, std::vector<Backend> devices)
      : devices_(std::move(devices)) {
    std::vector<int> ordinals;
    for (Backend& b : devices_) {
      streams_.push_back(b.make_stream());
      events_.push_back(b.make_event());
      ordinals.push_back(b.device());
    }
    pending_ = std::async(std::launch::async, [&library, ordinals] {
      const auto t0 = std::chrono::steady_clock::now();
      made m;
      m.group = std::make_unique<nccl_group>(library, ordinals);
      m.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      return m;
    });
  }

  /// @brief Seconds the communicators took to make (0 until the first broadcast).
  [[nodiscard]] double init_seconds() const noexcept { return init_seconds_; }

  /// @brief Broadcasts `bytes` of buffers[root] into buffers[d] of every device d and waits for
  /// each device to have them, at most `timeout` in all (zero: no limit). On a failure or a
  /// timeout the communicators are aborted (nothing stays blocked on them) and the failure is
  /// returned; later calls fail at once.
  /// @throws lris::device_error naming NCCL's error when the communicators could not be made.
  [[nodiscard]] std::optional<failure> run(std::span<void* const> buffers, std::size_t bytes,
                                           std::size_t root, std::chrono::milliseconds timeout) {
    if (!group_) {
      if (aborted_) return failure{root, "the communicators were aborted after a failure", false};
      made m = pending_.get();
      group_ = std::move(m.group);
      init_seconds_ = m.seconds;
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
        if (std::string e = group_->async_error(); !e.empty()) return fail({d, std::move(e), false});
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
    return std::nullopt;
  }

 private:
  struct made {
    std::unique_ptr<nccl_group> group;
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
  std::future<made> pending_;
  std::unique_ptr<nccl_group> group_;
  double init_seconds_ = 0;
  bool aborted_ = false;
};

}  // namespace lris::fanout::detail
