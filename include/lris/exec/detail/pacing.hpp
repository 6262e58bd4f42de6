#pragma once
/// @file
/// @brief pacing: one transfer's use of its pipeline's broker. Every chunk of work takes
/// tokens of the resource it loads (host DRAM for CPU copies, a link direction for DMA, a disk
/// for file io) after the throttle has had its say, in pieces the throttle may make smaller.

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include <lris/sched/bandwidth_broker.hpp>
#include <lris/exec/stats.hpp>

namespace lris::detail {

struct pacing {
  static constexpr std::size_t none = sched::bandwidth_broker::npos;

  std::shared_ptr<sched::bandwidth_broker> sched;  ///< null: the transfer is not coordinated
  sched::priority prio = sched::priority::normal;
  std::shared_ptr<sched::bandwidth_semaphore> budget;  ///< the transfer's own cap, or null
  std::size_t host = none;     ///< "host"
  std::size_t link = none;     ///< the link direction the transfer's DMA takes
  std::size_t storage = none;  ///< the disk of a file transfer
  std::atomic<std::uint64_t> waits{0};
  std::array<std::atomic<std::uint64_t>, sched::throttle_action_count> decisions{};

  [[nodiscard]] bool on(std::size_t r) const noexcept { return sched != nullptr && r != none; }

  /// @brief The throttle's decision for the next piece on `r`; counted for the transfer.
  sched::throttle_action admit(std::size_t r, bool fallback_possible = false) {
    bool delayed = false;
    const auto a = sched->admit(r, prio, fallback_possible, &delayed);
    if (delayed && a != sched::throttle_action::delay_background) {
      decisions[static_cast<std::size_t>(sched::throttle_action::delay_background)].fetch_add(1, std::memory_order_relaxed);
    }
    decisions[static_cast<std::size_t>(a)].fetch_add(1, std::memory_order_relaxed);
    return a;
  }
  /// @brief Tokens for `bytes` on `r` (blocking). Critical and normal work waiting for link
  /// tokens spins a while first: they come back as the broker's thread sees device work
  /// done, sooner than a sleeping thread would wake.
  sched::resource_tokens take(std::size_t r, std::uint64_t bytes) {
    bool waited = false;
    const bool spin = r == link && prio != sched::priority::background;
    auto t = sched->acquire(r, bytes, prio, budget, &waited, spin);
    if (waited) waits.fetch_add(1, std::memory_order_relaxed);
    return t;
  }
  /// @brief Tokens for `bytes` on `r` if they are free now; else none (bytes() == 0).
  sched::resource_tokens try_take(std::size_t r, std::uint64_t bytes) {
    return sched->try_acquire(r, bytes, prio, budget);
  }
  /// @brief The size of the next piece of at most `left` bytes, planned as `planned`, after the
  /// throttle's decision (a background piece may first wait here).
  std::size_t piece(std::size_t r, std::size_t planned, std::size_t left) {
    std::size_t n = within_budget(planned);
    if (admit(r) == sched::throttle_action::smaller_chunks) {
      n = sched::smaller_piece(n, sched->options().throttle.min_chunk_bytes);
    }
    return std::max<std::size_t>(1, std::min(n, left));
  }

  /// @brief `planned`, or half the transfer's own budget where that is less, so that two of its
  /// pieces can be in flight.
  [[nodiscard]] std::size_t within_budget(std::size_t planned) const noexcept {
    if (!budget) return planned;
    return std::min<std::size_t>(planned, std::max<std::uint64_t>(1, budget->capacity() / 2));
  }

  /// @brief Tokens of a section of indivisible work on this thread; their bytes count as
  /// moved when it ends.
  class section {
   public:
    section() = default;
    section(pacing* p, std::size_t r, sched::resource_tokens t) : p_(p), r_(r), t_(std::move(t)) {}
    section(section&& o) noexcept
        : p_(std::exchange(o.p_, nullptr)), r_(o.r_), t_(std::move(o.t_)) {}
    section& operator=(section&&) = delete;
    ~section() {
      if (p_ == nullptr || t_.bytes() == 0) return;
      const std::uint64_t b = t_.bytes();
      t_.release();
      try {
        p_->sched->record(r_, b);
      } catch (...) {  // a monitor that cannot count: the bytes still moved
      }
    }

   private:
    pacing* p_ = nullptr;
    std::size_t r_ = 0;
    sched::resource_tokens t_;
  };
  /// @brief Tokens for indivisible work of `bytes` on `r` (the throttle may delay it; a
  /// decision to split it is counted but cannot be followed).
  section hold(std::size_t r, std::uint64_t bytes) { return {this, r, reserve(r, bytes)}; }
  /// @brief Tokens for indivisible device work of `bytes` on `r`, after the throttle's say;
  /// none when the transfer is not coordinated on `r`. Give them to release_after().
  sched::resource_tokens reserve(std::size_t r, std::uint64_t bytes) {
    if (!on(r) || bytes == 0) return {};
    admit(r);
    return take(r, bytes);
  }

  /// @brief Runs `work(offset, length)` over [0, bytes) on this thread, in pieces of
  /// `planned` (or smaller), each holding its tokens of `r` while it runs. Without a
  /// broker (or resource): one call for everything.
  template <class Work>
  void run(std::size_t r, std::size_t bytes, std::size_t planned, Work&& work) {
    in_pieces(r, bytes, planned, [&](std::size_t off, std::size_t len, sched::resource_tokens t) {
      const section held(this, r, std::move(t));
      work(off, len);
    });
  }

  /// @brief Queues `enqueue(offset, length)` over [0, bytes) on `stream` in pieces, each
  /// holding its tokens of `r` until the device has done it (an event per piece, polled by
  /// the broker's thread).
  template <class Backend, class Events, class Enqueue>
  void run_async(std::size_t r, std::size_t bytes, std::size_t planned, Backend& backend,
                 Events& events, typename Backend::stream& stream, Enqueue&& enqueue) {
    in_pieces(r, bytes, planned, [&](std::size_t off, std::size_t len, sched::resource_tokens t) {
      enqueue(off, len);
      release_after(r, std::move(t), backend, events, stream);
    });
  }

  /// @brief Calls `each(offset, length, tokens)` for the pieces of [0, bytes) on `r`: one
  /// piece without tokens when the transfer is not coordinated on `r`.
  template <class Each>
  void in_pieces(std::size_t r, std::size_t bytes, std::size_t planned, Each&& each) {
    if (!on(r)) {
      each(std::size_t{0}, bytes, sched::resource_tokens{});
      return;
    }
    for (std::size_t off = 0; off < bytes;) {
      const std::size_t len = piece(r, planned, bytes - off);
      each(off, len, take(r, len));
      off += len;
    }
  }

  /// @brief Gives `t` back once the work queued on `stream` so far is done (nothing to do for
  /// no tokens).
  template <class Backend, class Events>
  void release_after(std::size_t r, sched::resource_tokens t, Backend& backend, Events& events,
                     typename Backend::stream& stream) {
    if (t.bytes() == 0) return;
    auto ev = events.take();
    backend.record(*ev, stream);
    // A copy of the backend, not the pipeline: the broker's thread must never hold the
    // last reference to a pipeline (whose broker it may be).
    sched->release_when([be = backend, ev]() mutable { return be.query(*ev); }, std::move(t), r,
                        &stream);
  }

  /// @brief The transfer's share of the counts, into its stats.
  void report(transfer_stats& st) const {
    st.priority = prio;
    st.token_waits = waits.load(std::memory_order_relaxed);
    for (std::size_t i = 0; i < sched::throttle_action_count; ++i) {
      st.throttle.decisions[i] = decisions[i].load(std::memory_order_relaxed);
    }
  }
};

}  // namespace lris::detail
