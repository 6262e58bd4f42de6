#pragma once
/// @file
/// @brief transfer: the handle copy() returns — wait, poll, cancel, progress, stats.

#include <exception>
#include <functional>
#include <memory>
#include <typeinfo>
#include <vector>

#include <lris/error.hpp>
#include <lris/exec/detail/transfer_state.hpp>
#include <lris/exec/stats.hpp>

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
    if (const auto e = s.outcome()) std::rethrow_exception(e);
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
  /// @brief Calls `fn(error)` once the transfer has finished: `error` is null on success, the
  /// transfer's error, or lris::cancelled. At once, on this thread, when it already has;
  /// else on the thread that finishes it (a thread of the pipeline's context; for a transfer
  /// that ends with device work, a compute thread once its poller sees the work done). `fn`
  /// should be short and must not wait for this transfer. Callbacks run in the order added.
  void on_complete(std::function<void(std::exception_ptr error)> fn) {
    checked().add_callback(std::move(fn), state_);
  }
  /// @brief Makes work queued on `s` (a stream of `backend`) from now on wait for this
  /// transfer, with no host wait where the device can: a transfer that ends with one operation
  /// on the pipeline's device (a direct or batched copy) by its event; one in chunks, whose
  /// device work is still being queued, by a flag in pinned memory that the stream waits on
  /// and the transfer raises when it finishes (flag_wait_backend: cuStreamWaitValue32 on
  /// CUDA). `s` may then be queued on at once, and it goes on however the transfer ends: ask
  /// wait() or on_complete() how it did. A transfer of another backend or device (or of a
  /// when_all, or on a device that cannot wait on memory) is waited for here first, and then
  /// this throws what wait() throws.
  template <class Backend>
  void then_on(Backend& backend, typename Backend::stream& s) {
    auto& st = checked();
    if (st.stream_wait && !st.finished_flag.load(std::memory_order_acquire) &&
        st.stream_wait(typeid(Backend), backend.device(), &s)) {
      return;
    }
    (void)wait();
  }
  /// @brief Lets the transfer run on without this handle: destroying the handle no longer
  /// waits for it. What the transfer reads and writes must then stay alive until it finishes
  /// (kept by an on_complete() callback): for giving up on a transfer that does not finish in
  /// time, as on a device that hangs, without freeing memory under it.
  void detach() noexcept { state_.reset(); }
  /// @brief True when this handle refers to a transfer.
  [[nodiscard]] bool valid() const noexcept { return state_ != nullptr; }

 private:
  friend transfer when_all(std::vector<transfer> transfers);
  detail::transfer_state& checked() const {
    LRIS_EXPECTS(state_ != nullptr, "transfer: use of an empty or moved-from transfer handle");
    return *state_;
  }
  void finish_quietly() noexcept {
    // A finished transfer needs nothing: a handle dropped inside one of its own callbacks
    // (when_all's parts) must not wait on its completion again.
    if (state_ && !state_->finished_flag.load(std::memory_order_acquire)) state_->wait_finished();
  }

  std::shared_ptr<detail::transfer_state> state_;
};

/// @brief One transfer that finishes when every one of `transfers` has: its wait() returns
/// once all are done and throws the first error (lris::cancelled when one was cancelled);
/// bytes are summed, the other statistics are the largest part's. Takes the handles over; an
/// empty list is a transfer already done. Composes with on_complete, poll and when_all itself.
[[nodiscard]] inline transfer when_all(std::vector<transfer> transfers) {
  std::uint64_t total = 0;
  for (const auto& t : transfers) total += t.bytes_total();
  auto all = std::make_shared<detail::transfer_state>(total, progress_fn{});
  if (transfers.empty()) {
    all->finish();
    return transfer(std::move(all));
  }
  struct join {
    std::mutex mutex;
    std::size_t left;
    std::uint64_t largest = 0;
    std::vector<transfer> parts;  // kept until the last is done
  };
  auto j = std::make_shared<join>();
  j->left = transfers.size();
  j->parts = std::move(transfers);
  for (auto& part : j->parts) {
    auto* s = part.state_.get();
    part.on_complete([all, j, s](std::exception_ptr e) {
      if (e) all->fail(e);
      // Its bytes count before the count of parts left goes down: the last part's finish()
      // reads them all.
      all->done.fetch_add(s->done.load(), std::memory_order_relaxed);
      bool last = false;
      {
        std::lock_guard lock(j->mutex);
        if (s->total >= j->largest) {
          j->largest = s->total;
          std::lock_guard stats_lock(all->mutex);
          all->stats = s->stats;
        }
        last = --j->left == 0;
      }
      // The parts are released by whoever drops the last reference to the join, never here
      // inside one of their own callbacks.
      if (last) all->finish();
    });
  }
  return transfer(std::move(all));
}

}  // namespace lris
