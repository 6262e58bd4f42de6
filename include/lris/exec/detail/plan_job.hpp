#pragma once
/// @file
/// @brief Runs a plan's chunks on the context's threads: with staging slots (chunks take
/// turns on the ring's slots) or without (CPU copies and file io only).
///
/// A chunk takes a free slot of the transfer's, or makes one the ring kept room for (a first
/// transfer pins its slots as it goes, several at once, instead of all before it starts), or
/// waits for another chunk to give one back. Within a chunk the steps run in order, grouped by
/// the resource they load: file io step by step (disk tokens), a run of CPU copies under one
/// hold of host tokens, a run of DMA under one reservation of link tokens. DMA into a device
/// is not waited for: the slot's event is recorded and its next user (or the end) waits. DMA
/// out of a device into the slot is waited for before the CPU reads the slot. A packed batch's
/// chunk is its pieces copied into the slot and moved by one DMA and one batched operation (or
/// gathered that way and copied out).

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstring>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include <lris/concepts/batch_backend.hpp>
#include <lris/concepts/convert_backend.hpp>
#include <lris/concepts/copy_item.hpp>
#include <lris/detail/stream_copy.hpp>
#include <lris/element/checksum.hpp>
#include <lris/element/convert.hpp>
#include <lris/error.hpp>
#include <lris/exec/detail/device_run.hpp>
#include <lris/exec/detail/job.hpp>
#include <lris/exec/detail/packing.hpp>
#include <lris/exec/detail/staging_ring.hpp>
#include <lris/exec/plan.hpp>
#include <lris/io/stats.hpp>

namespace lris::exec::detail {

template <class Exec>
struct plan_job : lris::detail::job_base {
  using Backend = typename Exec::backend_type;
  using slot_type = lris::detail::staging_slot<Backend>;

  std::shared_ptr<Exec> ex;
  plan p;
  // The transfer's slots (none: a plan without slots): every one made so far, those no chunk
  // holds, and how many more the ring kept room for.
  std::vector<slot_type*> slots;
  // Free slots, the longest free first (its last DMA is likely done): a ring of fixed size,
  // so that a chunk giving a slot back allocates nothing.
  std::vector<slot_type*> free_slots;
  std::size_t free_head = 0, free_count = 0;
  std::size_t unmade = 0;
  std::mutex slot_mutex;
  std::condition_variable slot_cv;
  std::vector<std::size_t> storage;    // per file of the plan: its disk at the broker
  std::mutex io_mutex;
  io::io_stats io_total;
  bool did_io = false;

  /// @brief Claims and runs the next chunk; false when none was left. A chunk waits for a
  /// slot only while every slot of the transfer is held by a chunk claimed earlier, which
  /// gives it back when done.
  bool run_one() noexcept {
    const std::size_t i = next.fetch_add(1, std::memory_order_relaxed);
    if (i >= chunks) return false;
    slot_type* slot = p.slot_bytes == 0 ? nullptr : take_slot();  // slots grows meanwhile
    if (!state->should_stop()) {
      try {
        process(i, slot);
      } catch (const cancelled&) {
        // The io stopped because the transfer is being cancelled: counted by its bytes.
      } catch (...) {
        state->fail(std::current_exception());
      }
    }
    if (slot != nullptr) {
      {
        std::lock_guard lock(slot_mutex);
        free_slots[(free_head + free_count++) % free_slots.size()] = slot;
      }
      slot_cv.notify_one();
    }
    if (processed.fetch_add(1, std::memory_order_acq_rel) + 1 == chunks) finalize();
    return true;
  }

 private:
  // The free slot of the transfer's that came back first (the one whose DMA has had the
  // longest to finish, as round robin over the slots would pick), unless its DMA may still
  // be running and another may be made; else one made now, where the ring kept room for it (no
  // lock held while it pins: other chunks make theirs, or move bytes, meanwhile); else the
  // next one given back. Pinned memory that runs out leaves the transfer the slots it has.
  slot_type* take_slot() noexcept {
    std::unique_lock lock(slot_mutex);
    for (;;) {
      // A slot whose DMA is still in flight is reused only where no new one may be made: the
      // ring depth is there so that DMA runs from some slots while chunks fill others
      // (reusing them at once left later loads 3-7% slower on an H200); one whose DMA has
      // finished is reused rather than pinning another.
      if (free_count > 0 && (unmade == 0 || !in_flight(*free_slots[free_head]))) {
        slot_type* s = free_slots[free_head];
        free_head = (free_head + 1) % free_slots.size();
        --free_count;
        return s;
      }
      if (unmade > 0) {
        --unmade;
        lock.unlock();
        slot_type* s = nullptr;
        try {
          s = ex->staged->ring.make(p.slot_bytes);
        } catch (const out_of_memory&) {
        } catch (...) {
          state->fail(std::current_exception());
        }
        lock.lock();
        if (s != nullptr) {
          slots.push_back(s);
          return s;
        }
        ex->staged->ring.release({}, unmade + 1, p.slot_bytes);  // make no more
        unmade = 0;
        continue;
      }
      slot_cv.wait(lock);
    }
  }

  std::byte* at(const place& where, slot_type* slot) const noexcept {
    return where.kind == place_kind::slot ? slot->data + where.offset : where.ptr;
  }
  typename Backend::stream& stream_for(std::size_t i) {
    return ex->stream(static_cast<unsigned>(i % std::max(1u, p.streams)));
  }

  static void hash(const step& s, const std::byte* bytes) {
    for (std::size_t off = 0, b = 0; off < s.bytes; off += default_checksum_block, ++b) {
      s.check[b] = block_hash(bytes + off, std::min(default_checksum_block, s.bytes - off));
    }
  }

  void process(std::size_t i, slot_type* slot) {
    if (slot != nullptr) retire(*slot);
    if (p.copies.packed()) {
      packed_chunk(p.copies.chunk(i), *slot, stream_for(i));
      return;
    }
    const std::span<const step> steps = p.chunk(i);
    typename Backend::stream* stream = nullptr;
    std::uint64_t delivered = 0, on_device = 0;
    bool slot_filling = false;  // DMA into the slot queued and not yet waited for
    for (std::size_t b = 0; b < steps.size();) {
      std::size_t e = b + 1;
      if (steps[b].dma()) {
        while (e < steps.size() && steps[e].dma()) ++e;
        if (stream == nullptr) stream = &stream_for(i);
        const auto group = steps.subspan(b, e - b);
        dma(group, slot, *stream);
        for (const step& s : group) {
          if (s.to.kind == place_kind::slot) slot_filling = true;
          if (s.delivers()) on_device += s.bytes;
        }
        b = e;
        continue;
      }
      if (slot_filling) {
        ex->backend.record(slot->event, *stream);
        ex->backend.synchronize(slot->event);
        slot_filling = false;
      }
      if (steps[b].io()) {
        file_io(steps[b], slot, i);
      } else {
        std::uint64_t bytes = steps[b].bytes;
        while (e < steps.size() && !steps[e].dma() && !steps[e].io()) bytes += steps[e++].bytes;
        const auto held = pace.hold(pace.host, bytes);
        for (const step& s : steps.subspan(b, e - b)) cpu_copy(s, slot);
      }
      for (const step& s : steps.subspan(b, e - b)) delivered += s.delivers() ? s.bytes : 0;
      b = e;
    }
    if (on_device > 0 || slot_filling) {
      if (slot != nullptr) {
        // Counted once the slot's next user (or the end) has waited for its event.
        ex->backend.record(slot->event, *stream);
        slot->pending = true;
        slot->pending_bytes = on_device;
      } else {
        ex->backend.synchronize(*stream);
        delivered += on_device;
      }
    }
    if (delivered > 0) state->add_progress(delivered);
  }

  // The slot's last DMA has not finished (an error from asking counts as finished: retire()
  // reports it).
  bool in_flight(slot_type& slot) noexcept {
    if (!slot.pending) return false;
    try {
      return !ex->backend.query(slot.event);
    } catch (...) {
      return false;
    }
  }

  // Waits for the slot's device work still in flight and counts its bytes as done.
  void retire(slot_type& slot) {
    if (!slot.pending) return;
    slot.pending = false;
    ex->backend.synchronize(slot.event);
    if (slot.pending_bytes > 0) state->add_progress(slot.pending_bytes);
  }

  void cpu_copy(const step& s, slot_type* slot) {
    const std::byte* src = at(s.from, slot);
    std::byte* dst = at(s.to, slot);
    if (s.check != nullptr) hash(s, src);
    if (s.convert) {
      convert(src, s.from_type, dst, s.to_type, s.bytes * 8 / bits_of(s.from_type));
    } else if (s.to.kind == place_kind::slot) {
      lris::detail::stream_copy(dst, src, s.bytes);  // the DMA engine reads it next
    } else {
      std::memcpy(dst, src, s.bytes);  // the caller reads it next: keep it cached
    }
  }

  void file_io(const step& s, slot_type* slot, std::size_t chunk) {
    const bool reading = s.from.kind == place_kind::file;
    const place& file_end = reading ? s.from : s.to;
    const io::file& f = *p.files[file_end.file];
    std::byte* mem = at(reading ? s.to : s.from, slot);
    if (slot != nullptr && (s.from.kind == place_kind::slot || s.to.kind == place_kind::slot)) {
      ex->register_for_io(*slot);
    }
    auto stop = [st = state.get()] { return st->should_stop(); };
    auto& engine = ex->io();
    const std::size_t disk = storage.empty() ? pace.none : storage[file_end.file];
    io::io_overrides how = p.io;
    if (reading && p.buffered_every > 0 && chunk % p.buffered_every == p.buffered_every - 1) {
      how.direct = io::direct_mode::never;
    }
    pace.run(disk, s.bytes, s.bytes, [&](std::size_t off, std::size_t n) {
      // const_cast: writing needs the descriptor only; io::file's const API is for readers.
      note(reading ? engine.read(f, file_end.offset + off, {mem + off, n}, stop, how)
                   : engine.write(const_cast<io::file&>(f), file_end.offset + off,
                                  {mem + off, n}, stop, p.io));
    });
    if (reading && s.check != nullptr) hash(s, mem);
  }

  // A run of DMA steps: one step in pieces, each holding its link tokens until done; several
  // under one reservation.
  void dma(std::span<const step> group, slot_type* slot, typename Backend::stream& stream) {
    auto& be = ex->backend;
    for (const step& s : group) {
      if (s.check != nullptr) hash(s, at(s.from, slot));
    }
    if (group.size() == 1 && !group.front().convert) {
      const step& s = group.front();
      std::byte* d = at(s.to, slot);
      const std::byte* from = at(s.from, slot);
      pace.run_async(pace.link, s.bytes, s.bytes, be, *ex->events, stream,
                     [&](std::size_t off, std::size_t n) {
                       be.copy_async(d + off, from + off, n, s.kind(), stream);
                     });
      return;
    }
    std::uint64_t bytes = 0;
    for (const step& s : group) bytes += s.bytes;
    auto link = pace.reserve(pace.link, bytes);
    for (const step& s : group) one_dma(s, slot, stream);
    pace.release_after(pace.link, std::move(link), be, *ex->events, stream);
  }

  // One DMA step; a conversion goes through the slot's device scratch (DMA, then a kernel
  // there), or reads the pinned slot over the link when the device has no room for scratch.
  void one_dma(const step& s, slot_type* slot, typename Backend::stream& stream) {
    if (!s.convert || s.from.kind != place_kind::slot) {
      step direct = s;
      direct.from.ptr = at(s.from, slot);
      direct.from.kind = s.from.kind == place_kind::slot ? place_kind::pinned : s.from.kind;
      direct.to.ptr = at(s.to, slot);
      direct.to.kind = s.to.kind == place_kind::slot ? place_kind::pinned : s.to.kind;
      enqueue_step(*ex, direct, stream);
      return;
    }
    step from_scratch = s;
    from_scratch.from = place::pinned(at(s.from, slot));
    if (std::byte* scratch = ex->device_scratch(*slot)) {
      ex->backend.copy_async(scratch + s.from.offset, slot->data + s.from.offset, s.bytes,
                             copy_kind::host_to_device, stream);
      from_scratch.from = place::on_device(scratch + s.from.offset, s.to.device);
    }
    enqueue_step(*ex, from_scratch, stream);
  }

  // A packed batch's chunk: host -> the slot (the pieces one after another, slot_layout),
  // then one DMA of the packed bytes into the slot's device scratch and one batched operation
  // that spreads them on the device; or the reverse, gathered on the device, then copied out
  // of the slot. DMA runs the link faster than a kernel reading host memory, and
  // device-to-device copies cost next to nothing. The item array goes into the slot behind
  // the packed bytes. Without device scratch the kernel reads (or writes) the slot over the
  // link; without batches, one DMA per piece.
  void packed_chunk(std::span<const copy_item> pieces, slot_type& slot,
                    typename Backend::stream& stream) {
    const bool in = p.copies.to.kind == place_kind::device;
    lris::detail::slot_layout layout;
    std::uint64_t bytes = 0;
    for (const copy_item& c : pieces) bytes += c.bytes, layout.place(c.bytes);
    const std::size_t items_at = layout.items_at();
    auto each = [&](auto&& f) {  // f(piece, where its bytes are in the slot)
      lris::detail::slot_layout at;
      for (const copy_item& c : pieces) f(c, slot.data + at.place(c.bytes));
    };
    if (in) {
      const auto held = pace.hold(pace.host, bytes);
      each([](const copy_item& c, std::byte* at) {
        lris::detail::stream_copy(at, c.src, c.bytes);  // the DMA engine reads it next
      });
    }
    auto& be = ex->backend;
    auto link = pace.reserve(pace.link, bytes);
    if constexpr (batch_backend<Backend>) {
      std::byte* scratch = ex->device_scratch(slot);
      std::byte* packed = scratch != nullptr ? scratch : slot.data;
      auto* items = reinterpret_cast<copy_item*>(slot.data + items_at);
      std::size_t k = 0;
      each([&](const copy_item& c, std::byte* at) {
        std::byte* on_device = packed + (at - slot.data);
        items[k++] =
            in ? copy_item{on_device, c.dst, c.bytes} : copy_item{c.src, on_device, c.bytes};
      });
      if (in && scratch != nullptr) {
        be.copy_async(scratch, slot.data, items_at, copy_kind::host_to_device, stream);
      }
      be.copy_batch_async(items, pieces.size(), stream);
      if (!in && scratch != nullptr) {
        be.copy_async(slot.data, scratch, items_at, copy_kind::device_to_host, stream);
      }
    } else {
      each([&](const copy_item& c, std::byte* at) {
        if (in) {
          be.copy_async(c.dst, at, c.bytes, copy_kind::host_to_device, stream);
        } else {
          be.copy_async(at, c.src, c.bytes, copy_kind::device_to_host, stream);
        }
      });
    }
    pace.release_after(pace.link, std::move(link), be, *ex->events, stream);
    be.record(slot.event, stream);
    if (in) {  // counted once the slot's next user (or the end) has waited for its event
      slot.pending = true;
      slot.pending_bytes = bytes;
      return;
    }
    be.synchronize(slot.event);
    {
      const auto held = pace.hold(pace.host, bytes);
      each([](const copy_item& c, std::byte* at) { std::memcpy(c.dst, at, c.bytes); });
    }
    state->add_progress(bytes);
  }

  void note(const io::io_stats& st) {
    std::lock_guard lock(io_mutex);
    io_total.add_part(st);
    did_io = true;
  }

  void finalize() noexcept {
    for (auto* s : slots) {
      try {
        retire(*s);
      } catch (...) {
        state->fail(std::current_exception());
      }
    }
    if (!slots.empty()) ex->staged->ring.release(slots, unmade, p.slot_bytes);
    pace.report(state->stats);
    if (did_io) {
      auto& st = state->stats;
      if (!p.io_reason.empty()) io_total.mode_reason = p.io_reason;
      st.io_direct_bytes = io_total.direct_bytes;
      st.io_buffered_bytes = io_total.buffered_bytes;
      st.io_fixed_buffer_ops = io_total.fixed_buffer_ops;
      try {
        st.io = io_total.summary();
      } catch (...) {  // out of memory for a description: leave it empty
      }
    }
    ex->recycle(p);
    // The executor and the context let go before the waiter wakes: a pipeline or context
    // destroyed after wait() returns frees its pinned memory on that thread, not later on
    // this one. (The pool this task runs on outlives it: its destructor joins this thread.)
    ex.reset();
    ctx.reset();
    state->finish();
  }
};

/// @brief Starts a plan with slots, or one without a device: slots from the ring (at most
/// ring_depth, one per chunk), at most one worker per chunk and per slot, on the io threads
/// when it does file io; or every chunk here, before returning, when the plan says so.
template <class Exec>
void start_plan_job(const std::shared_ptr<Exec>& ex, const std::shared_ptr<transfer_state>& state,
                    plan p) {
  auto job = std::make_shared<plan_job<Exec>>();
  job->state = state;
  job->ex = ex;
  job->chunks = p.chunks();
  ex->pace(job->pace, p.direction(), p.prio, p.budget_bytes);
  if (ex->broker) {
    for (const io::file* f : p.files) job->storage.push_back(ex->storage_resource(f->fd()));
  }
  auto& st = state->stats;
  std::size_t workers = std::max(1u, p.workers);
  if (p.slot_bytes > 0) {
    job->slots = ex->staged->ring.acquire(
        std::min<std::size_t>(std::max(1u, p.ring_depth), job->chunks), p.slot_bytes,
        &job->unmade);
    // Room for every slot the transfer may make: taking and giving back allocate nothing.
    job->free_slots.assign(job->slots.size() + job->unmade, nullptr);
    std::copy(job->slots.begin(), job->slots.end(), job->free_slots.begin());
    job->free_count = job->slots.size();
    job->slots.reserve(job->free_slots.size());
    workers = std::min(workers, job->slots.size() + job->unmade);
    st.ring_slots = static_cast<unsigned>(job->slots.size() + job->unmade);
    st.streams = p.streams;
  }
  st.workers = static_cast<unsigned>(std::min(workers, job->chunks));
  st.chunk_bytes = p.slot_bytes > 0 ? p.slot_bytes : p.chunk(0).front().bytes;
  const bool blocking_io = !p.files.empty();
  const priority lane = p.prio;
  const bool here = p.here;
  job->p = std::move(p);
  if (here) {
    st.workers = 1;
    while (job->run_one()) {
    }
    return;
  }
  lris::detail::start_workers(job, static_cast<unsigned>(workers), ex->ctx, lane, blocking_io);
}

}  // namespace lris::exec::detail
