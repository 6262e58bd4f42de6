#pragma once
/// @file
/// @brief The code that moves bytes for each transfer path. Pipelines choose; these execute.

#include <algorithm>
#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include <lris/concepts/allocator_policy.hpp>
#include <lris/error.hpp>
#include <lris/concepts/backend_policy.hpp>
#include <lris/concepts/batch_backend.hpp>
#include <lris/concepts/pci_backend.hpp>
#include <lris/memory/buffer.hpp>
#include <lris/memory/caching_pool.hpp>
#include <lris/detail/spin_wait.hpp>
#include <lris/detail/stream_copy.hpp>
#include <lris/detail/thread_pool.hpp>
#include <lris/exec/context.hpp>
#include <lris/io/engine.hpp>
#include <lris/io/file.hpp>
#include <lris/sched/nvml_pcie.hpp>
#include <lris/sched/bandwidth_broker.hpp>
#include <lris/transfer/detail/pacing.hpp>
#include <lris/transfer/detail/packing.hpp>
#include <lris/transfer/detail/staging_ring.hpp>
#include <lris/transfer/detail/transfer_state.hpp>
#include <lris/transfer/plan.hpp>

namespace lris::detail {

/// @brief Events for single-operation transfers, kept for reuse: creating one per transfer
/// costs more than a small copy. An event goes back to the pool when the last holder of its
/// shared_ptr lets go, which is after its transfer is over.
template <backend_policy Backend>
class event_pool : public std::enable_shared_from_this<event_pool<Backend>> {
 public:
  using event = typename Backend::event;
  explicit event_pool(Backend b) : backend_(std::move(b)) {}

  [[nodiscard]] std::shared_ptr<event> take() {
    std::unique_ptr<event> e;
    {
      std::lock_guard lock(mutex_);
      if (!free_.empty()) {
        e = std::move(free_.back());
        free_.pop_back();
      }
    }
    if (!e) e = std::make_unique<event>(backend_.make_event());
    return {e.release(), [pool = this->shared_from_this()](event* ev) {
              std::lock_guard lock(pool->mutex_);
              pool->free_.emplace_back(ev);
            }};
  }

 private:
  Backend backend_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<event>> free_;
};

/// @brief What a pipeline owns and its transfers share: the backend, its streams, the ring;
/// and the context whose threads, broker and profiles they use.
template <backend_policy Backend, allocator_policy Allocator>
struct pipeline_core {
  pipeline_core(Backend b, Allocator a, std::size_t max_staging_bytes,
                io::io_options io_options, std::shared_ptr<context> context,
                std::shared_ptr<sched::bandwidth_broker> sch)
      : io_options_(std::move(io_options)),
        ctx(std::move(context)),
        backend(std::move(b)),
        events(std::make_shared<event_pool<Backend>>(backend)),
        item_pool(a, caching_pool_options{.max_cached_bytes = std::size_t{64} << 20}),
        ring(backend, std::move(a), max_staging_bytes),
        broker(std::move(sch)) {
    // The ring dies before the engine (declared earlier), so the engine outlives every slot.
    ring.on_unregister([this](std::uint64_t id) noexcept { io_->unregister_memory(id); });
    key = fmt::format("{}:{}", Backend::name, backend.device());
    if (broker) {
      host_resource = broker->resource(sched::host_resource());
      h2d_resource = broker->resource(sched::link_resource(key, true), 0, driver_measure(true));
      d2h_resource = broker->resource(sched::link_resource(key, false), 0, driver_measure(false));
    }
  }

  /// @brief The driver's measure of the link one way (NVML, by the GPU's PCI address), for
  /// the broker's monitor: NVIDIA GPUs only; none elsewhere. Called by the monitor's
  /// sampler only (a source that throws has no sample).
  sched::bandwidth_monitor::external_source driver_measure(bool to_device) const {
    if constexpr (pci_backend<Backend>) {
      // NVML knows NVIDIA GPUs only: another vendor's address reads as no sample.
      return [be = backend, nvml = ctx->nvml(), to_device] {
        return nvml->get().read_gbps(be.pci_bus_id(), to_device);
      };
    }
    return {};
  }

  /// @brief Sets `p` up for a transfer of `kind` (memory to memory; file transfers add their
  /// disk) with the call's priority and budget.
  void pace(pacing& p, copy_kind kind, const transfer_options& o) {
    if (!broker) return;
    p.sched = broker;
    p.prio = o.priority;
    if (o.budget_bytes > 0) p.budget = std::make_shared<sched::bandwidth_semaphore>(o.budget_bytes);
    p.host = host_resource;
    if (kind == copy_kind::host_to_device) p.link = h2d_resource;
    if (kind == copy_kind::device_to_host) p.link = d2h_resource;
  }
  /// @brief The disk of `fd`'s file, registered with the broker on first use.
  std::size_t storage_resource(int fd) {
    return broker ? broker->resource(sched::storage_resource(fd)) : pacing::none;
  }

  /// @brief Stream `i`, created on first use. Streams live as long as the pipeline.
  typename Backend::stream& stream(unsigned i) {
    std::lock_guard lock(streams_mutex_);
    while (streams_.size() <= i) streams_.push_back(backend.make_stream());
    return streams_[i];
  }
  /// @brief The io engine for file transfers, made on first use.
  io::io_engine& io() {
    std::call_once(io_once_, [this] {
      io_ = std::make_unique<io::io_engine>(io_options_,
                                            std::shared_ptr<thread_pool>(ctx, &ctx->io()));
    });
    return *io_;
  }
  /// @brief Registers a staging slot with the io engine once, so that file io into and out of
  /// it goes as io_uring fixed buffers. The slot's owner calls it; the ring unregisters the
  /// slot before freeing it.
  void register_for_io(staging_slot<Backend>& slot) {
    if (slot.io_registration == 0) slot.io_registration = io().register_memory({slot.data, slot.bytes});
  }
  /// @brief The profile of this pipeline's backend and device, from its context: asked once
  /// (the context keeps it), then read here without a lock on every plan.
  [[nodiscard]] const transfer_profile& profile() const {
    const transfer_profile* p = profile_.load(std::memory_order_acquire);
    if (p == nullptr) {
      p = &ctx->profile(key);
      profile_.store(p, std::memory_order_release);
    }
    return *p;
  }
  /// @brief A stream for a single-operation transfer, round robin over `count`.
  typename Backend::stream& next_stream(unsigned count) {
    return stream(next_.fetch_add(1, std::memory_order_relaxed) % std::max(1u, count));
  }

 private:
  io::io_options io_options_;

 public:
  std::shared_ptr<context> ctx;  // before the io engine, which runs on its threads

 private:
  std::once_flag io_once_;
  std::unique_ptr<io::io_engine> io_;

 public:
  Backend backend;
  std::shared_ptr<event_pool<Backend>> events;
  // Item arrays of batched transfers: pinned, since a device may read them; pooled, since a
  // pinned allocation costs far more than the copies of a small batch.
  caching_pool<Allocator> item_pool;
  staging_ring<Backend, Allocator> ring;
  std::string key;  // "<backend>:<device>", the profile key
  std::shared_ptr<sched::bandwidth_broker> broker;  // null: transfers are not coordinated
  std::size_t host_resource = pacing::none;
  std::size_t h2d_resource = pacing::none;
  std::size_t d2h_resource = pacing::none;

 private:
  std::mutex streams_mutex_;
  std::deque<typename Backend::stream> streams_;  // deque: references stay valid as it grows
  std::atomic<unsigned> next_{0};
  mutable std::atomic<const transfer_profile*> profile_{nullptr};
};

/// @brief A job of `chunks` pieces of work and its progress through them, and the lane of the
/// context's threads its tasks run in.
struct job_base {
  std::shared_ptr<context> ctx;  // kept until the last task is gone: its threads run them
  thread_pool* pool = nullptr;   // one of ctx's
  priority lane = priority::normal;
  std::shared_ptr<transfer_state> state;
  pacing pace;  // the transfer's tokens
  std::size_t chunks = 0;
  std::atomic<std::size_t> next{0};       // next chunk to claim
  std::atomic<std::size_t> processed{0};  // chunks done or skipped
};

/// @brief One transfer's bytes cut into chunks of equal size (the last one shorter).
struct chunked_job : job_base {
  std::byte* dst = nullptr;
  const std::byte* src = nullptr;
  std::size_t bytes = 0;
  std::size_t chunk = 0;

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
    if (job->run_one()) job->pool->submit(*this, job->lane);
  }
};

/// @brief Starts `workers` chunk tasks of `job` (at most one per chunk) in the lane of
/// `lane` of `ctx`'s threads: the io threads when its chunks block on io.
template <class Job>
void start_workers(const std::shared_ptr<Job>& job, unsigned workers,
                   const std::shared_ptr<context>& ctx, priority lane, bool blocking_io = false) {
  job->ctx = ctx;
  job->pool = blocking_io ? &ctx->io() : &ctx->compute();
  job->lane = lane;
  const auto n = static_cast<unsigned>(std::min<std::size_t>(workers, job->chunks));
  for (unsigned w = 0; w < n; ++w) job->pool->submit(chunk_task<Job>{job}, lane);
}

/// @brief Host <-> host: each chunk is one memcpy on a pool thread.
struct host_copy_job : chunked_job {
  bool run_one() noexcept {
    const std::size_t i = next.fetch_add(1, std::memory_order_relaxed);
    if (i >= chunks) return false;
    if (!state->should_stop()) {
      try {
        pace.run(pace.host, length(i), length(i), [&](std::size_t off, std::size_t len) {
          std::memcpy(dst + offset(i) + off, src + offset(i) + off, len);
        });
        state->add_progress(length(i));
      } catch (...) {
        state->fail(std::current_exception());
      }
    }
    if (processed.fetch_add(1, std::memory_order_acq_rel) + 1 == chunks) {
      pace.report(state->stats);
      state->finish();
    }
    return true;
  }
};

/// @brief Pinned (or device) memory <-> device as one coordinated transfer: its pieces go on
/// one stream, each after its link tokens are granted. lead() queues the pieces whose tokens
/// are free at once on the caller's thread, so that the link starts without waiting for a
/// thread to wake; run(), on a pool thread, queues the rest and waits for the last. Critical
/// work on a link congested by lower-priority work takes the backend's batched copy (the GPU's
/// cores read host memory over the link) instead of the DMA engines that the bulk work queues
/// on, where the backend has one and the throttle allows it.
template <backend_policy Backend, allocator_policy Allocator>
struct paced_copy_job : job_base {
  std::shared_ptr<pipeline_core<Backend, Allocator>> core;
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
    core.reset();  // as ring_job's finalize: the pipeline let go before the waiter wakes
    state->finish();
  }

 private:
  // The batched copy in groups of 1 MiB items, a piece's worth per group; the items live in
  // the pipeline's pinned memory until the last group is done.
  void run_batched(typename Backend::stream& s) {
    if constexpr (batch_backend<Backend>) {
      constexpr std::size_t item_bytes = std::size_t{1} << 20;
      std::vector<copy_item> pieces;
      append_pieces(pieces, copy_item{src, dst, bytes}, item_bytes);
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

/// @brief Work that goes through pinned slots of the pipeline's ring. Chunk i uses slot
/// i % k; a worker waits until the slot's previous chunk (i - k) is done with it, so chunks
/// overlap across slots while each slot is used strictly in order. `Derived::process(i, slot)`
/// does chunk i: for host -> device it fills the slot, queues the device work and calls
/// mark_pending(); for device -> host it queues, waits and empties the slot.
template <class Derived, backend_policy Backend, allocator_policy Allocator, class Base>
struct ring_job : Base {
  std::shared_ptr<pipeline_core<Backend, Allocator>> core;
  std::vector<staging_slot<Backend>*> slots;
  copy_kind kind = copy_kind::host_to_device;
  unsigned streams = 1;

  /// @brief Claims and runs the next chunk; false when none was left. A chunk waits only for
  /// the chunk k before it, which was claimed earlier by a task that is running or done.
  bool run_one() noexcept {
    const std::size_t i = this->next.fetch_add(1, std::memory_order_relaxed);
    if (i >= this->chunks) return false;
    auto& slot = *slots[i % slots.size()];
    if (!spin_until([&] { return slot.ready_for.load() == i; })) {
      for (std::size_t v = slot.ready_for.load(); v != i; v = slot.ready_for.load()) {
        slot.ready_for.wait(v);
      }
    }
    if (!this->state->should_stop()) {
      try {
        static_cast<Derived*>(this)->process(i, slot);
      } catch (...) {
        this->state->fail(std::current_exception());
      }
    }
    slot.ready_for.store(i + slots.size());
    slot.ready_for.notify_all();
    if (this->processed.fetch_add(1, std::memory_order_acq_rel) + 1 == this->chunks) finalize();
    return true;
  }

 protected:
  /// @brief Called once every chunk is done, before the transfer finishes: a job's last word
  /// on the stats.
  void on_finish() noexcept {}
  typename Backend::stream& stream_for(std::size_t i) {
    return core->stream(static_cast<unsigned>(i % streams));
  }
  /// @brief Waits for the slot's device work still in flight and counts its bytes as done.
  void retire(staging_slot<Backend>& slot) {
    if (!slot.pending) return;
    slot.pending = false;
    core->backend.synchronize(slot.event);
    this->state->add_progress(slot.pending_bytes);
  }
  /// @brief Records the slot's event on `s`: `bytes` are done once it has passed.
  void mark_pending(staging_slot<Backend>& slot, typename Backend::stream& s, std::size_t bytes) {
    core->backend.record(slot.event, s);
    slot.pending = true;
    slot.pending_bytes = bytes;
  }
  /// @brief Copies `len` bytes from `src` to `dst` with the CPU, holding "host" tokens.
  template <class Copy>
  void host_copy(std::byte* dst, const std::byte* src, std::size_t len, Copy&& copy) {
    this->pace.run(this->pace.host, len, len, [&](std::size_t off, std::size_t n) {
      copy(dst + off, src + off, n);
    });
  }
  /// @brief Queues DMA of `len` bytes on `s` in pieces, each holding link tokens until done.
  void dma_async(std::byte* dst, const std::byte* src, std::size_t len, copy_kind k,
                 typename Backend::stream& s) {
    this->pace.run_async(this->pace.link, len, len, core->backend, *core->events, s,
                         [&](std::size_t off, std::size_t n) {
                           core->backend.copy_async(dst + off, src + off, n, k, s);
                         });
  }
  /// @brief The slot's device scratch, made on first use and kept with the slot; null when the
  /// device has no room for it (callers then work from the pinned slot itself, which the
  /// device reads over the link, slower but correct).
  std::byte* device_scratch(staging_slot<Backend>& slot) {
    if (slot.device_scratch == nullptr) {
      try {
        slot.device_scratch = core->backend.allocate_device(slot.bytes);
      } catch (const out_of_memory&) {
        return nullptr;
      }
    }
    return static_cast<std::byte*>(slot.device_scratch);
  }
  /// @brief Queues the device work and waits for it.
  void run_now(staging_slot<Backend>& slot, typename Backend::stream& s) {
    core->backend.record(slot.event, s);
    core->backend.synchronize(slot.event);
  }

 private:
  void finalize() noexcept {
    for (auto* s : slots) {
      try {
        retire(*s);
      } catch (...) {
        this->state->fail(std::current_exception());
      }
    }
    core->ring.release(slots);
    this->pace.report(this->state->stats);
    static_cast<Derived*>(this)->on_finish();
    // The pipeline let go before the waiter wakes: a pipeline destroyed after wait() returns
    // frees its pinned memory on that thread, not later on this one.
    core.reset();
    this->state->finish();
  }
};

/// @brief Pageable host <-> device through pinned slots, one chunk per slot.
///  h2d: memcpy src -> slot, DMA slot -> device, record the slot's event;
///       the slot's next user (or the end) waits for that event.
///  d2h: DMA device -> slot, wait for it, memcpy slot -> dst.
template <backend_policy Backend, allocator_policy Allocator>
struct staged_job : ring_job<staged_job<Backend, Allocator>, Backend, Allocator, chunked_job> {
  void process(std::size_t i, staging_slot<Backend>& slot) {
    auto& s = this->stream_for(i);
    const std::size_t off = this->offset(i), len = this->length(i);
    if (this->kind == copy_kind::host_to_device) {
      this->retire(slot);
      // The DMA engine, not the CPU, reads it next: streaming stores.
      this->host_copy(slot.data, this->src + off, len, stream_copy);
      this->dma_async(this->dst + off, slot.data, len, this->kind, s);
      this->mark_pending(slot, s, len);
    } else {
      this->dma_async(slot.data, this->src + off, len, this->kind, s);
      this->run_now(slot, s);
      // The caller reads it next: keep it cached.
      this->host_copy(this->dst + off, slot.data, len,
                      [](std::byte* d, const std::byte* from, std::size_t n) { std::memcpy(d, from, n); });
      this->state->add_progress(len);
    }
  }
};

/// @brief Many pageable buffers <-> device: each chunk is a group of pieces packed into one
/// slot (see pack_into_slots). A group of one piece is one DMA. A group of several moves as a
/// whole in one DMA between the slot and the slot's device scratch, and one batched operation
/// on the device spreads it (h2d) or gathers it (d2h): DMA runs the link faster than a kernel
/// reading host memory, and device-to-device copies cost next to nothing. Where no scratch can
/// be had (device memory full), the batched operation reads or writes the slot itself.
///  h2d: memcpy each piece into the slot, write the group's items behind them, DMA, batch.
///  d2h: batch into the scratch, DMA into the slot, wait, memcpy each piece out.
template <backend_policy Backend, allocator_policy Allocator>
struct packed_job : ring_job<packed_job<Backend, Allocator>, Backend, Allocator, job_base> {
  slot_packing packing;

  void process(std::size_t g, staging_slot<Backend>& slot) {
    auto& s = this->stream_for(g);
    const std::size_t b = packing.begin[g], e = packing.begin[g + 1];
    std::size_t bytes = 0;
    for (std::size_t k = b; k < e; ++k) bytes += packing.pieces[k].bytes;
    const bool h2d = this->kind == copy_kind::host_to_device;
    auto& pace = this->pace;
    if (h2d) {
      this->retire(slot);
      auto cpu = pace.hold(pace.host, bytes);
      for (std::size_t k = b; k < e; ++k) {
        stream_copy(slot.data + packing.offset[k], packing.pieces[k].src, packing.pieces[k].bytes);
      }
    }
    auto& be = this->core->backend;
    // The group moves as one: its link tokens are taken whole and given back when it is done.
    auto link = pace.reserve(pace.link, bytes);
    if (e - b == 1) {
      const copy_item& p = packing.pieces[b];
      if (h2d) {
        be.copy_async(p.dst, slot.data, p.bytes, this->kind, s);
      } else {
        be.copy_async(slot.data, p.src, p.bytes, this->kind, s);
      }
    } else {
      // Packed bytes [0, span) move as one; the items say where each piece goes from there.
      const std::size_t span = packing.offset[e - 1] + packing.pieces[e - 1].bytes;
      std::byte* packed = this->device_scratch(slot);
      const bool via_scratch = packed != nullptr;
      if (!via_scratch) packed = slot.data;
      auto* items = reinterpret_cast<copy_item*>(slot.data + packing.items_offset[g]);
      for (std::size_t k = b; k < e; ++k) {
        const copy_item& p = packing.pieces[k];
        std::byte* at = packed + packing.offset[k];
        items[k - b] = h2d ? copy_item{at, p.dst, p.bytes} : copy_item{p.src, at, p.bytes};
      }
      if (h2d && via_scratch) be.copy_async(packed, slot.data, span, this->kind, s);
      be.copy_batch_async(items, e - b, s);
      if (!h2d && via_scratch) be.copy_async(slot.data, packed, span, this->kind, s);
    }
    pace.release_after(pace.link, std::move(link), be, *this->core->events, s);
    if (h2d) {
      this->mark_pending(slot, s, bytes);
      return;
    }
    this->run_now(slot, s);
    auto cpu = pace.hold(pace.host, bytes);
    for (std::size_t k = b; k < e; ++k) {
      std::memcpy(packing.pieces[k].dst, slot.data + packing.offset[k], packing.pieces[k].bytes);
    }
    this->state->add_progress(bytes);
  }

};

/// @brief A file <-> device transfer through pinned slots. Chunk i covers the file bytes
/// [base + i * chunk, base + (i + 1) * chunk) that fall in the transfer, where `base` is the
/// transfer's offset rounded down to `chunk` (a multiple of the O_DIRECT alignment): file
/// offsets and slot addresses then agree modulo the alignment, so the io engine can read or
/// write each chunk's middle with O_DIRECT wherever the file allows it.
///  file -> device: io read into the slot, DMA slot -> device, record the slot's event.
///  device -> file: DMA device -> slot, wait, io write from the slot.
template <backend_policy Backend, allocator_policy Allocator>
struct file_job : ring_job<file_job<Backend, Allocator>, Backend, Allocator, job_base> {
  const io::file* file = nullptr;
  std::byte* device = nullptr;  // start of the device range
  std::uint64_t offset = 0;     // file offset of its first byte
  std::uint64_t end = 0;        // file offset past its last byte
  std::uint64_t base = 0;
  std::size_t chunk = 0;
  io::io_overrides io;  // the call's io settings; `direct` decided once for every chunk
  std::string mode_reason;                            // why, when decided here
  std::mutex io_mutex;
  io::io_stats io_total;

  void process(std::size_t i, staging_slot<Backend>& slot) {
    auto& s = this->stream_for(i);
    const std::uint64_t from = std::max(offset, base + i * chunk);
    const std::uint64_t to = std::min<std::uint64_t>(end, base + (i + 1) * chunk);
    const auto len = static_cast<std::size_t>(to - from);
    std::byte* in_slot = slot.data + (from - (base + i * chunk));
    std::byte* on_device = device + (from - offset);
    auto stop = [st = this->state.get()] { return st->should_stop(); };
    this->core->register_for_io(slot);
    auto& pace = this->pace;
    if (this->kind == copy_kind::host_to_device) {
      this->retire(slot);
      pace.run(pace.storage, len, len, [&](std::size_t off, std::size_t n) {
        note(this->core->io().read(*file, from + off, {in_slot + off, n}, stop, io));
      });
      this->dma_async(on_device, in_slot, len, copy_kind::host_to_device, s);
      this->mark_pending(slot, s, len);
    } else {
      this->dma_async(in_slot, on_device, len, copy_kind::device_to_host, s);
      this->run_now(slot, s);
      // const_cast: writing needs the descriptor only; io::file's const API is for readers.
      pace.run(pace.storage, len, len, [&](std::size_t off, std::size_t n) {
        note(this->core->io().write(const_cast<io::file&>(*file), from + off, {in_slot + off, n},
                                    stop, io));
      });
      this->state->add_progress(len);
    }
  }

 private:
  friend struct ring_job<file_job, Backend, Allocator, job_base>;
  void on_finish() noexcept {
    auto& st = this->state->stats;
    st.io_direct_bytes = io_total.direct_bytes;
    st.io_buffered_bytes = io_total.buffered_bytes;
    st.io_fixed_buffer_ops = io_total.fixed_buffer_ops;
    try {
      st.io = io_total.summary();
    } catch (...) {  // out of memory for a description: leave it empty
    }
  }
  void note(const io::io_stats& st) {
    std::lock_guard lock(io_mutex);
    io_total.add_part(st);
    if (!mode_reason.empty()) io_total.mode_reason = mode_reason;
  }
};

}  // namespace lris::detail
