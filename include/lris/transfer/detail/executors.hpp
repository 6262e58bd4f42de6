#pragma once
/// @file
/// @brief The code that moves bytes for each transfer path. Pipelines choose; these execute.

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <lris/concepts/allocator_policy.hpp>
#include <lris/concepts/backend_policy.hpp>
#include <lris/memory/caching_pool.hpp>
#include <lris/detail/spin_wait.hpp>
#include <lris/detail/stream_copy.hpp>
#include <lris/detail/thread_pool.hpp>
#include <lris/transfer/detail/staging_ring.hpp>
#include <lris/transfer/detail/transfer_state.hpp>
#include <lris/transfer/plan.hpp>

namespace lris::detail {

/// @brief What a pipeline owns and its transfers share: the backend, its streams, the ring.
template <backend_policy Backend, allocator_policy Allocator>
struct pipeline_core {
  pipeline_core(Backend b, Allocator a, std::size_t max_staging_bytes)
      : backend(std::move(b)),
        item_pool(a, caching_pool_options{.max_cached_bytes = std::size_t{64} << 20}),
        ring(backend, std::move(a), max_staging_bytes) {}

  Backend backend;
  // Item arrays of batched transfers: pinned, since a device may read them; pooled, since a
  // pinned allocation costs far more than the copies of a small batch.
  caching_pool<Allocator> item_pool;
  staging_ring<Backend, Allocator> ring;
  std::string key;  // "<backend>:<device>", the profile key

  /// @brief Stream `i`, created on first use. Streams live as long as the pipeline.
  typename Backend::stream& stream(unsigned i) {
    std::lock_guard lock(streams_mutex_);
    while (streams_.size() <= i) streams_.push_back(backend.make_stream());
    return streams_[i];
  }
  /// @brief A stream for a single-operation transfer, round robin over `count`.
  typename Backend::stream& next_stream(unsigned count) {
    return stream(next_.fetch_add(1, std::memory_order_relaxed) % std::max(1u, count));
  }

 private:
  std::mutex streams_mutex_;
  std::deque<typename Backend::stream> streams_;  // deque: references stay valid as it grows
  std::atomic<unsigned> next_{0};
};

/// @brief One transfer's bytes, chunk geometry and progress through its chunks.
struct chunked_job {
  std::shared_ptr<transfer_state> state;
  std::byte* dst = nullptr;
  const std::byte* src = nullptr;
  std::size_t bytes = 0;
  std::size_t chunk = 0;
  std::size_t chunks = 0;
  std::atomic<std::size_t> next{0};       // next chunk to claim
  std::atomic<std::size_t> processed{0};  // chunks done or skipped

  [[nodiscard]] std::size_t offset(std::size_t i) const noexcept { return i * chunk; }
  [[nodiscard]] std::size_t length(std::size_t i) const noexcept {
    return std::min(chunk, bytes - i * chunk);
  }
};

/// @brief One pool task per chunk: a task runs one chunk of its job, then queues itself again
/// while chunks remain. Concurrent transfers thus take turns on the shared pool instead of the
/// first one holding every thread until it is done. `Job::run_one()` claims and runs the next
/// chunk and returns false when none was left.
template <class Job>
struct chunk_task {
  std::shared_ptr<Job> job;
  void operator()() const {
    if (job->run_one()) thread_pool::shared().submit(*this);
  }
};

/// @brief Starts `workers` chunk tasks of `job` (at most one per chunk).
template <class Job>
void start_workers(const std::shared_ptr<Job>& job, unsigned workers) {
  const auto n = static_cast<unsigned>(std::min<std::size_t>(workers, job->chunks));
  for (unsigned w = 0; w < n; ++w) thread_pool::shared().submit(chunk_task<Job>{job});
}

/// @brief Host <-> host: each chunk is one memcpy on a pool thread.
struct host_copy_job : chunked_job {
  bool run_one() noexcept {
    const std::size_t i = next.fetch_add(1, std::memory_order_relaxed);
    if (i >= chunks) return false;
    if (!state->should_stop()) {
      std::memcpy(dst + offset(i), src + offset(i), length(i));
      state->add_progress(length(i));
    }
    if (processed.fetch_add(1, std::memory_order_acq_rel) + 1 == chunks) state->finish();
    return true;
  }
};

/// @brief Pageable host <-> device through pinned slots. Chunk i uses slot i % k; a worker
/// waits until the slot's previous chunk (i - k) is done with it, so chunks overlap across
/// slots while each slot is used strictly in order.
///  h2d: memcpy src -> slot, DMA slot -> device on stream i % s, record the slot's event;
///       the slot's next user (or the end) waits for that event.
///  d2h: DMA device -> slot, wait for it, memcpy slot -> dst.
template <backend_policy Backend, allocator_policy Allocator>
struct staged_job : chunked_job {
  std::shared_ptr<pipeline_core<Backend, Allocator>> core;
  std::vector<staging_slot<Backend>*> slots;
  copy_kind kind = copy_kind::host_to_device;
  unsigned streams = 1;

  /// @brief Claims and runs the next chunk; false when none was left. A chunk waits only for
  /// the chunk k before it, which was claimed earlier by a task that is running or done.
  bool run_one() noexcept {
    const std::size_t i = next.fetch_add(1, std::memory_order_relaxed);
    if (i >= chunks) return false;
    auto& slot = *slots[i % slots.size()];
    if (!spin_until([&] { return slot.ready_for.load() == i; })) {
      for (std::size_t v = slot.ready_for.load(); v != i; v = slot.ready_for.load()) {
        slot.ready_for.wait(v);
      }
    }
    if (!state->should_stop()) {
      try {
        process(i, slot);
      } catch (...) {
        state->fail(std::current_exception());
      }
    }
    slot.ready_for.store(i + slots.size());
    slot.ready_for.notify_all();
    if (processed.fetch_add(1, std::memory_order_acq_rel) + 1 == chunks) finalize();
    return true;
  }

 private:
  void retire(staging_slot<Backend>& slot) {
    if (!slot.pending) return;
    slot.pending = false;
    core->backend.synchronize(slot.event);
    state->add_progress(slot.pending_bytes);
  }

  void process(std::size_t i, staging_slot<Backend>& slot) {
    auto& stream = core->stream(static_cast<unsigned>(i % streams));
    const std::size_t off = offset(i), len = length(i);
    if (kind == copy_kind::host_to_device) {
      retire(slot);
      stream_copy(slot.data, src + off, len);  // the DMA engine, not the CPU, reads it next
      core->backend.copy_async(dst + off, slot.data, len, kind, stream);
      core->backend.record(slot.event, stream);
      slot.pending = true;
      slot.pending_bytes = len;
    } else {
      core->backend.copy_async(slot.data, src + off, len, kind, stream);
      core->backend.record(slot.event, stream);
      core->backend.synchronize(slot.event);
      std::memcpy(dst + off, slot.data, len);  // the caller reads it next: keep it cached
      state->add_progress(len);
    }
  }

  void finalize() noexcept {
    for (auto* s : slots) {
      try {
        retire(*s);
      } catch (...) {
        state->fail(std::current_exception());
      }
    }
    core->ring.release(slots);
    state->finish();
  }
};

}  // namespace lris::detail
