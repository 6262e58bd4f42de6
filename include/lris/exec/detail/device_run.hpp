#pragma once
/// @file
/// @brief Plans with a device and no staging slot: every step on one stream, one batched
/// device operation, or one copy in pieces paced by the link's tokens.

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstring>
#include <memory>
#include <vector>

#include <fmt/format.h>

#include <lris/concepts/batch_backend.hpp>
#include <lris/concepts/convert_backend.hpp>
#include <lris/concepts/copy_item.hpp>
#include <lris/error.hpp>
#include <lris/exec/detail/job.hpp>
#include <lris/exec/detail/packing.hpp>
#include <lris/exec/detail/pacing.hpp>
#include <lris/exec/detail/transfer_state.hpp>
#include <lris/exec/plan.hpp>
#include <lris/exec/sizing.hpp>
#include <lris/memory/buffer.hpp>
#include <lris/memory/caching_pool.hpp>

namespace lris::exec::detail {

using lris::detail::transfer_state;

/// @brief Pinned (or device) memory <-> device as one coordinated transfer: its pieces go on
/// one stream, each after its link tokens are granted. lead() queues the pieces whose tokens
/// are free at once on the caller's thread, so that the link starts without waiting for a
/// thread to wake; run(), on a pool thread, queues the rest and waits for the last. Critical
/// work on a link congested by lower-priority work takes the backend's batched copy (the GPU's
/// cores read host memory over the link) instead of the DMA engines that the bulk work queues
/// on, where the backend has one and the throttle allows it.
template <class Exec>
struct paced_copy_job : lris::detail::job_base {
  using Backend = typename Exec::backend_type;
  using Allocator = typename Exec::allocator_type;
  std::shared_ptr<Exec> core;
  std::byte* dst = nullptr;
  const std::byte* src = nullptr;
  std::size_t bytes = 0;
  copy_kind kind = copy_kind::host_to_device;
  unsigned streams = 1;
  std::size_t piece = 0;

  /// @brief On the caller's thread: picks the stream and the path, and queues the pieces
  /// whose tokens are free now (none for background work, which may have to wait first).
  /// True when every piece is queued: the caller may then complete the transfer by an event
  /// instead of running run().
  bool lead() {
    stream_ = &core->next_stream(streams);
    if constexpr (batch_backend<Backend>) {
      batched_ = pace.admit(pace.link, true) == sched::throttle_action::fallback_path;
    }
    if (batched_ || pace.prio == sched::priority::background) return false;
    auto& be = core->backend;
    while (issued_ < bytes) {
      const std::size_t len = pace.piece(pace.link, piece, bytes - issued_);
      auto t = pace.try_take(pace.link, len);
      if (t.bytes() == 0) break;
      be.copy_async(dst + issued_, src + issued_, len, kind, *stream_);
      pace.release_after(pace.link, std::move(t), be, *core->events, *stream_);
      issued_ += len;
    }
    return issued_ == bytes;
  }

  /// @brief The stream lead() chose.
  [[nodiscard]] typename Backend::stream& stream() const noexcept { return *stream_; }
  [[nodiscard]] transfer_path path() const noexcept {
    return batched_ ? transfer_path::batched : transfer_path::direct;
  }

  /// @brief After lead(), on a pool thread or on a thread that waits for the transfer,
  /// whichever comes first (once): the rest, then waits for the last piece.
  void run() noexcept {
    if (claimed_.exchange(true, std::memory_order_acq_rel)) return;
    auto& be = core->backend;
    try {
      if (stream_ == nullptr) {  // lead() failed before it had a stream (reported): nothing queued
        core.reset();
        ctx.reset();
        state->finish();
        return;
      }
      auto& s = *stream_;
      if (batched_) {
        run_batched(s);
      } else if (issued_ < bytes) {
        pace.run_async(pace.link, bytes - issued_, piece, be, *core->events, s,
                       [&](std::size_t off, std::size_t n) {
                         if (!state->should_stop()) {
                           be.copy_async(dst + issued_ + off, src + issued_ + off, n, kind, s);
                         }
                       });
      }
      auto done = core->events->take();
      be.record(*done, s);
      be.synchronize(*done);
      state->stats.path = path();
      if (!state->should_stop()) state->add_progress(bytes);
    } catch (...) {
      state->fail(std::current_exception());
    }
    pace.report(state->stats);
    core.reset();  // as plan_job's finalize: the executor and context let go before the
    ctx.reset();   // waiter wakes
    state->finish();
  }

 private:
  // The batched copy in groups of 1 MiB items, a piece's worth per group; the items live in
  // the pipeline's pinned memory until the last group is done.
  void run_batched(typename Backend::stream& s) {
    if constexpr (batch_backend<Backend>) {
      constexpr std::size_t item_bytes = std::size_t{1} << 20;
      std::vector<copy_item> pieces;
      lris::detail::append_pieces(pieces, copy_item{src, dst, bytes}, item_bytes);
      buffer<caching_pool<Allocator>, copy_item> items(pieces.size(), core->item_pool);
      std::copy(pieces.begin(), pieces.end(), items.data());
      const std::size_t per_group = std::max<std::size_t>(1, piece / item_bytes);
      for (std::size_t first = 0; first < pieces.size(); first += per_group) {
        const std::size_t n = std::min(per_group, pieces.size() - first);
        std::uint64_t group = 0;
        for (std::size_t k = first; k < first + n; ++k) group += pieces[k].bytes;
        auto t = pace.take(pace.link, group);
        core->backend.copy_batch_async(items.data() + first, n, s);
        pace.release_after(pace.link, std::move(t), core->backend, *core->events, s);
      }
      core->backend.synchronize(s);  // before the items go back to the pool
    }
  }

  typename Backend::stream* stream_ = nullptr;
  bool batched_ = false;
  std::size_t issued_ = 0;  // bytes queued by lead()
  std::atomic<bool> claimed_{false};
};


/// @brief Queues `s` on `stream`: one asynchronous copy, or a conversion on the device.
template <class Exec>
void enqueue_step(Exec& ex, const step& s, typename Exec::backend_type::stream& stream) {
  using Backend = typename Exec::backend_type;
  if (!s.convert) {
    ex.backend.copy_async(s.to.ptr, s.from.ptr, s.bytes, s.kind(), stream);
    return;
  }
  if constexpr (convert_backend<Backend>) {
    ex.backend.convert_async(s.to.ptr, s.to_type, s.from.ptr, s.from_type,
                             s.bytes * 8 / bits_of(s.from_type), stream);
  } else {
    throw unsupported(fmt::format("exec::executor: {} cannot convert {} to {} on the device",
                                  Backend::name, to_string(s.from_type), to_string(s.to_type)));
  }
}

/// @brief Queues device work on one stream and makes the transfer complete with it. `keep`
/// stays alive until the transfer is over (memory the device work reads). Work over a link
/// takes that link's tokens for all its bytes first (it cannot be split), which may wait here.
template <class Exec, class Enqueue, class Keep = std::nullptr_t>
void run_on_stream(Exec& ex, transfer_state& state, const plan& p, const Enqueue& enqueue,
                   Keep keep = nullptr) {
  auto& stream = ex.next_stream(p.streams);
  state.stats.streams = 1;
  lris::detail::pacing pace;
  ex.pace(pace, p.direction(), p.prio, p.budget_bytes);
  auto link = pace.reserve(pace.link, state.total);
  pace.report(state.stats);
  auto done = ex.events->take();
  try {
    enqueue(stream);
    pace.release_after(pace.link, std::move(link), ex.backend, *ex.events, stream);
    ex.backend.record(*done, stream);
  } catch (...) {
    ex.backend.synchronize(stream);  // what was queued may be running: let it land first
    throw;
  }
  ex.complete_with(state, std::move(done), std::move(keep));
}

/// @brief One coordinated copy in paced pieces: those whose tokens are free now from here,
/// the rest from an io thread (or from a thread that waits for the transfer, first).
template <class Exec>
void start_paced(const std::shared_ptr<Exec>& ex, const std::shared_ptr<transfer_state>& state,
                 const plan& p) {
  const step& s = p.steps.front();
  auto job = std::make_shared<paced_copy_job<Exec>>();
  ex->pace(job->pace, s.kind(), p.prio, p.budget_bytes);
  job->state = state;
  job->core = ex;
  job->dst = s.to.ptr;
  job->src = s.from.ptr;
  job->bytes = s.bytes;
  job->kind = s.kind();
  job->streams = p.streams;
  job->piece = job->pace.within_budget(
      exec::paced_piece_bytes(ex->broker->capacity(job->pace.link)));
  state->stats.streams = 1;
  state->stats.chunk_bytes = job->piece;
  state->stats.chunks = (s.bytes + job->piece - 1) / job->piece;
  bool all = false;
  try {
    all = job->lead();
  } catch (...) {
    state->fail(std::current_exception());
  }
  if (all) {
    // Every piece is queued: the transfer completes with the last, as a single copy does.
    try {
      auto done = ex->events->take();
      ex->backend.record(*done, job->stream());
      state->stats.path = job->path();
      job->pace.report(state->stats);
      ex->complete_with(*state, std::move(done));
      return;
    } catch (...) {
      state->fail(std::current_exception());
    }
  }
  // It waits for the device: a blocking task, on the io threads (the context's, kept until
  // the job lets go: set before a waiter can run it).
  job->ctx = ex->ctx;
  auto& io = job->ctx->io();
  // The job does not keep the state's hold on it alive.
  state->help = [weak = std::weak_ptr(job)] {
    if (auto j = weak.lock()) j->run();
  };
  io.submit([job] { job->run(); }, p.prio);
}

/// @brief Starts a plan with a device and no slot.
template <class Exec>
void start_device(const std::shared_ptr<Exec>& ex, const std::shared_ptr<transfer_state>& state,
                  plan p) {
  using Backend = typename Exec::backend_type;
  using Allocator = typename Exec::allocator_type;
  if (!p.copies.empty()) {
    const batch& b = p.copies;
    if constexpr (batch_backend<Backend>) {
      // The item array is read by whoever executes the batch (a GPU reads it over the link),
      // so it lives in the executor's pinned memory until the transfer is over.
      auto items = std::make_shared<buffer<caching_pool<Allocator>, copy_item>>(b.items.size(),
                                                                                ex->item_pool);
      std::memcpy(items->data(), b.items.data(), b.items.size() * sizeof(copy_item));
      run_on_stream(*ex, *state, p, [&](typename Backend::stream& stream) {
        ex->backend.copy_batch_async(items->data(), items->size(), stream);
      }, items);
    } else {  // a backend without batches: one copy each, on one stream
      const copy_kind kind = step{b.from, b.to}.kind();
      run_on_stream(*ex, *state, p, [&](typename Backend::stream& stream) {
        for (const copy_item& c : b.items) {
          ex->backend.copy_async(c.dst, c.src, c.bytes, kind, stream);
        }
      });
    }
    ex->recycle(p);
    return;
  }
  if (p.steps.size() == 1 && ex->broker && p.steps[0].kind() != copy_kind::device_to_device) {
    start_paced(ex, state, p);
    return;
  }
  run_on_stream(*ex, *state, p, [&](typename Backend::stream& stream) {
    for (const step& s : p.steps) enqueue_step(*ex, s, stream);
  });
  ex->recycle(p);  // queued: the steps are not needed any more
}

}  // namespace lris::exec::detail
