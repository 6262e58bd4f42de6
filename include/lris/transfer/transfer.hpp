#pragma once
/// @file
/// @brief transfer: the handle copy() returns — wait, poll, cancel, progress, stats.

#include <memory>

#include <fmt/format.h>

#include <lris/error.hpp>
#include <lris/transfer/detail/transfer_state.hpp>
#include <lris/transfer/stats.hpp>

namespace lris {

/// @brief A transfer in flight. Move-only. Destroying an unfinished transfer waits for it, so
/// no buffer it uses is released while bytes still move into or out of it.
class [[nodiscard]] transfer {
 public:
  transfer() = default;
  explicit transfer(std::shared_ptr<detail::transfer_state> state) : state_(std::move(state)) {}
  transfer(transfer&&) noexcept = default;
  transfer& operator=(transfer&& other) noexcept {
    if (this != &other) {
      finish_quietly();
      state_ = std::move(other.state_);
    }
    return *this;
  }
  ~transfer() { finish_quietly(); }

  /// @brief Blocks until the transfer has finished and returns its statistics (a copy, so
  /// `auto st = lris::copy(...).wait();` is safe). Throws what the transfer failed with, or
  /// lris::cancelled when it was cancelled before the last byte.
  transfer_stats wait() const {
    auto& s = checked();
    s.wait_finished();
    std::lock_guard lock(s.mutex);
    if (s.error) std::rethrow_exception(s.error);
    if (s.stats.cancelled) {
      throw cancelled(fmt::format("transfer cancelled after {} of {} bytes", s.stats.bytes,
                                  s.total));
    }
    return s.stats;
  }
  /// @brief True once the transfer has finished (successfully or not); never blocks.
  [[nodiscard]] bool poll() const {
    auto& s = checked();
    if (s.device_ready) return s.complete_device(false);
    return s.finished_flag.load(std::memory_order_acquire);
  }
  /// @brief Asks the transfer to stop: chunks not yet started are skipped. A transfer whose
  /// last chunk was already under way finishes normally.
  void cancel() noexcept {
    if (state_) state_->cancel_requested = true;
  }
  /// @brief Bytes delivered so far.
  [[nodiscard]] std::uint64_t bytes_done() const { return checked().done.load(); }
  /// @brief Bytes asked for.
  [[nodiscard]] std::uint64_t bytes_total() const { return checked().total; }
  /// @brief Fraction delivered, 0 to 1.
  [[nodiscard]] double progress() const {
    const auto& s = checked();
    return s.total == 0 ? (poll() ? 1.0 : 0.0) : static_cast<double>(s.done.load()) / s.total;
  }
  /// @brief True when this handle refers to a transfer.
  [[nodiscard]] bool valid() const noexcept { return state_ != nullptr; }

 private:
  detail::transfer_state& checked() const {
    LRIS_EXPECTS(state_ != nullptr, "transfer: use of an empty or moved-from transfer handle");
    return *state_;
  }
  void finish_quietly() noexcept {
    if (state_) state_->wait_finished();
  }

  std::shared_ptr<detail::transfer_state> state_;
};

}  // namespace lris
