#pragma once
/// @file
/// @brief exec::executor: the one place where plans run.

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <mutex>
#include <string>
#include <typeinfo>

#include <fmt/format.h>

#include <lris/concepts/allocator_policy.hpp>
#include <lris/concepts/backend_policy.hpp>
#include <lris/concepts/flag_wait_backend.hpp>
#include <lris/concepts/pci_backend.hpp>
#include <lris/error.hpp>
#include <lris/exec/context.hpp>
#include <lris/exec/detail/event_pool.hpp>
#include <lris/exec/detail/pacing.hpp>
#include <lris/exec/detail/staging_ring.hpp>
#include <lris/exec/detail/transfer_state.hpp>
#include <lris/exec/detail/vector_cache.hpp>
#include <lris/exec/plan.hpp>
#include <lris/exec/staging.hpp>
#include <lris/io/engine.hpp>
#include <lris/memory/buffer.hpp>
#include <lris/memory/caching_pool.hpp>
#include <lris/sched/bandwidth_broker.hpp>

namespace lris::exec {

using lris::detail::event_pool;
using lris::detail::pacing;
using lris::detail::staging_ring;
using lris::detail::staging_slot;
using lris::detail::transfer_state;

/// @brief Runs plans (exec/plan.hpp) on one device of a backend. It owns what its transfers
/// share: the backend, its streams and events; it stages through a pinned ring and io engine
/// that its context keeps (exec/staging.hpp); and uses the context's threads, broker and
/// profiles. Every transfer of a pipeline and every
/// checkpoint load runs here; transfers in flight keep it alive.
///
/// Three ways to run a plan, chosen by its data, not by a name:
///  - with slots (slot_bytes > 0): chunks take turns on the ring's slots; within a chunk, file
///    io, CPU copies and DMA follow the steps in order, or a packed batch's pieces go through
///    the slot (plan_job);
///  - without slots or devices: chunks of CPU copies and file io on the context's threads, or
///    on the calling thread (plan_job);
///  - without slots, with a device: every step on one stream, or one batched device operation,
///    or, for one coordinated copy, pieces paced by the link's tokens (device_run.hpp).
template <backend_policy Backend, allocator_policy Allocator>
class executor : public std::enable_shared_from_this<executor<Backend, Allocator>> {
 public:
  using backend_type = Backend;
  using allocator_type = Allocator;

  /// @brief An executor on `context`'s threads, staging through `shared` (which other
  /// executors may share: staging_of), taking tokens at `sch` (null: none).
  executor(Backend b, Allocator a, std::shared_ptr<staging<Backend, Allocator>> shared,
           std::shared_ptr<context> context, std::shared_ptr<sched::bandwidth_broker> sch)
      : ctx(std::move(context)),
        backend(std::move(b)),
        events(std::make_shared<event_pool<Backend>>(backend)),
        item_pool(std::move(a), caching_pool_options{.max_cached_bytes = std::size_t{64} << 20}),
        staged(std::move(shared)),
        broker(std::move(sch)) {
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

  /// @brief Sets `p` up for work of `kind` (memory to memory; file io adds its disks) at
  /// priority `prio`, with `budget` bytes in flight on each resource (0: no cap of its own).
  void pace(pacing& p, copy_kind kind, priority prio, std::uint64_t budget = 0) {
    if (!broker) return;
    p.sched = broker;
    p.prio = prio;
    if (budget > 0) p.budget = std::make_shared<sched::bandwidth_semaphore>(budget);
    p.host = host_resource;
    if (kind == copy_kind::host_to_device) p.link = h2d_resource;
    if (kind == copy_kind::device_to_host) p.link = d2h_resource;
  }
  /// @brief The disk of `fd`'s file, registered with the broker on first use.
  std::size_t storage_resource(int fd) {
    return broker ? broker->resource(sched::storage_resource(fd)) : pacing::none;
  }
  /// @brief The cold-read method of the storage device holding `fd`'s file: the call's
  /// (`given`), else the device's calibrated profile, from the context.
  const disk_profile& cold_reads(int fd, const std::optional<disk_profile>& given) {
    return given ? *given : ctx->storage_profile(sched::storage_resource(fd));
  }

  /// @brief Stream `i`, created on first use. Streams live as long as the pipeline.
  typename Backend::stream& stream(unsigned i) {
    std::lock_guard lock(streams_mutex_);
    while (streams_.size() <= i) streams_.push_back(backend.make_stream());
    return streams_[i];
  }
  /// @brief Runs `p`: validates it (exec::validate), then starts it. `stats` is the report
  /// to fill (kind, policy and backend set by the caller). Returns the state its handle
  /// waits on; a run that throws has started nothing.
  std::shared_ptr<transfer_state> run(plan p, transfer_stats stats);

  /// @brief Storage kept from plans that have run (empty vectors with capacity), or new
  /// vectors; give it to a plan maker (transfer_request::spare).
  plan_storage spare() { return {spare_steps_.take(), spare_items_.take()}; }
  /// @brief A kept vector of copy items (a batch's pairs, before its plan is made).
  std::vector<copy_item> spare_items() { return spare_items_.take(); }
  /// @brief Keeps the storage of a plan that has run (a few vectors of bounded size) for later
  /// plans.
  void recycle(plan_storage&& s) noexcept {
    spare_steps_.keep(std::move(s.steps));
    spare_items_.keep(std::move(s.items));
  }
  void recycle(plan& p) noexcept {
    spare_steps_.keep(std::move(p.steps));
    spare_items_.keep(std::move(p.copies.items));
  }

  /// @brief The io engine for file transfers (the staging's), made on first use.
  io::io_engine& io() { return staged->io(); }
  /// @brief Registers a staging slot with the io engine once (staging::register_for_io).
  void register_for_io(staging_slot<Backend>& slot) { staged->register_for_io(slot); }
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
  /// @brief Device scratch of a slot's size, made on first use and kept with the slot; null
  /// when the device has no room for it (callers then use the pinned slot itself, which the
  /// device reads over the link: slower, but correct).
  std::byte* device_scratch(staging_slot<Backend>& slot) {
    if (slot.device_scratch == nullptr) {
      try {
        slot.device_scratch = backend.allocate_device(slot.bytes);
      } catch (const out_of_memory&) {
        return nullptr;
      }
    }
    return static_cast<std::byte*>(slot.device_scratch);
  }
  /// @brief Makes `state` complete with `done`, an event recorded after its device work;
  /// `keep` stays alive until then. Either every function is set or (it throws) none.
  template <class Event, class Keep = std::nullptr_t>
  void complete_with(transfer_state& state, Event done, Keep keep = nullptr) {
    auto self = this->shared_from_this();
    std::function<void()> wait = [self, done, keep] { self->backend.synchronize(*done); };
    auto state_event = done;
    std::function<bool()> ready = [self, done = std::move(done), keep = std::move(keep)] {
      return self->backend.query(*done);
    };
    state.device_wait = std::move(wait);
    state.device_ready = std::move(ready);
    state.watch = [c = ctx](std::function<bool()> ready, std::function<void()> then) {
      c->when_ready(std::move(ready), std::move(then));
    };
    state.stream_wait = [self, ev = state_event](const std::type_info& type, int device,
                                                 void* stream) {
      if (type != typeid(Backend) || device != self->backend.device()) return false;
      self->backend.wait(*static_cast<typename Backend::stream*>(stream), *ev);
      return true;
    };
  }
  /// @brief For a transfer that does not end with one device event (one in chunks, still being
  /// queued): makes a caller's stream wait for it with no host wait, on a flag in pinned
  /// memory that the transfer raises when it finishes, however it ends (then_on's contract:
  /// the stream goes on either way; the handle tells how it ended). False where the backend or
  /// device is another, or the device cannot wait on memory: then_on then waits on the host.
  std::function<bool(const std::type_info&, int, void*)> flag_gate(
      const std::shared_ptr<transfer_state>& state) {
    return [weak_ex = this->weak_from_this(), weak = std::weak_ptr(state)](
               const std::type_info& type, int device, void* stream) {
      if constexpr (flag_wait_backend<Backend>) {
        auto self = weak_ex.lock();
        auto st = weak.lock();
        if (!self || !st || type != typeid(Backend) || device != self->backend.device()) {
          return false;
        }
        auto& s = *static_cast<typename Backend::stream*>(stream);
        auto flag =
            std::make_shared<buffer<caching_pool<Allocator>, std::uint32_t>>(1, self->item_pool);
        std::atomic_ref<std::uint32_t>(*flag->data()).store(0, std::memory_order_release);
        // Raised when the transfer finishes (now, if it has), before the stream can wait on it.
        st->add_callback([flag](std::exception_ptr) {
          std::atomic_ref<std::uint32_t> word(*flag->data());
          word.store(1, std::memory_order_release);
          word.notify_all();
        }, st);
        try {
          self->backend.wait_flag(s, flag->data());
        } catch (const unsupported&) {
          return false;
        }
        try {
          // The flag stays until the stream has passed the wait.
          auto passed = self->events->take();
          self->backend.record(*passed, s);
          self->ctx->when_ready(
              [be = self->backend, passed]() mutable { return be.query(*passed); },
              [flag, passed] {});
        } catch (...) {
          try {
            self->backend.synchronize(s);  // past the wait (the flag rises as the transfer ends)
          } catch (...) {
          }
          throw;
        }
        return true;
      } else {
        (void)type, (void)device, (void)stream;
        return false;
      }
    };
  }
  /// @brief A stream for a single-operation transfer, round robin over `count`.
  typename Backend::stream& next_stream(unsigned count) {
    return stream(next_.fetch_add(1, std::memory_order_relaxed) % std::max(1u, count));
  }

  std::shared_ptr<context> ctx;
  Backend backend;
  std::shared_ptr<event_pool<Backend>> events;
  // Item arrays of batched transfers: pinned, since a device may read them; pooled, since a
  // pinned allocation costs far more than the copies of a small batch.
  caching_pool<Allocator> item_pool;
  // The pinned staging ring and the io engine, which the context may share with other
  // pipelines' executors.
  std::shared_ptr<staging<Backend, Allocator>> staged;
  std::string key;  // "<backend>:<device>", the profile key
  std::shared_ptr<sched::bandwidth_broker> broker;  // null: transfers are not coordinated
  std::size_t host_resource = pacing::none;
  std::size_t h2d_resource = pacing::none;
  std::size_t d2h_resource = pacing::none;

 private:
  detail::vector_cache<step> spare_steps_;
  detail::vector_cache<copy_item> spare_items_;
  std::mutex streams_mutex_;
  std::deque<typename Backend::stream> streams_;  // deque: references stay valid as it grows
  std::atomic<unsigned> next_{0};
  mutable std::atomic<const transfer_profile*> profile_{nullptr};
};

}  // namespace lris::exec

#include <lris/exec/detail/device_run.hpp>
#include <lris/exec/detail/plan_job.hpp>

namespace lris::exec {

template <backend_policy Backend, allocator_policy Allocator>
std::shared_ptr<transfer_state> executor<Backend, Allocator>::run(plan p, transfer_stats stats) {
  validate(p, backend.device());
  auto state = std::make_shared<transfer_state>(p.bytes, std::move(p.on_progress));
  state->stats = std::move(stats);
  auto& st = state->stats;
  st.path = p.shape;
  if (st.chunks == 0) st.chunks = std::max<std::size_t>(1, p.chunks());
  st.priority = p.prio;
  if (p.steps.empty() && p.copies.empty()) {
    state->finish();
    return state;
  }
  auto self = this->shared_from_this();
  if (p.slot_bytes == 0 && p.uses_device()) {
    detail::start_device(self, state, std::move(p));
  } else {
    detail::start_plan_job(self, state, std::move(p));
  }
  // Not ended by one device event, nor done already: a caller's stream waits on a flag.
  if (!state->stream_wait && !state->finished_flag.load(std::memory_order_acquire)) {
    state->stream_wait = flag_gate(state);
  }
  return state;
}

}  // namespace lris::exec
