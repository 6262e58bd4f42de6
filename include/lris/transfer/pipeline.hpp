#pragma once
/// @file
/// @brief pipeline<Transfer, Backend, Allocator>: a transfer policy, a backend and a pinned
/// staging allocator composed into something that moves bytes.

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <functional>
#include <memory>
#include <ranges>
#include <span>
#include <thread>

#include <fmt/format.h>

#include <lris/concepts/memory_property.hpp>
#include <lris/backends/host_backend.hpp>
#include <lris/concepts/allocator_policy.hpp>
#include <lris/concepts/backend_policy.hpp>
#include <lris/transfer/transfer_policy.hpp>
#include <lris/error.hpp>
#include <lris/exec/sizing.hpp>
#include <lris/io/file.hpp>
#include <lris/io/options.hpp>
#include <lris/memory/buffer.hpp>
#include <lris/memory/caching_pool.hpp>
#include <lris/memory/memory_span.hpp>
#include <lris/memory/pinned_allocator.hpp>
#include <lris/transfer/detail/executors.hpp>
#include <lris/transfer/traits.hpp>
#include <lris/transfer/transfer.hpp>

namespace lris {

/// @brief Settings of a pipeline that outlive single transfers.
struct pipeline_config {
  /// Upper bound of pinned staging memory, shared by concurrent transfers.
  std::size_t max_staging_bytes = std::size_t{256} << 20;
  /// How file transfers (read, write) do their io.
  io::io_options io = {};
  /// The context whose threads run its transfers and whose broker and profiles they use. Null:
  /// the process's default (lris::default_context()).
  context_ptr context = nullptr;
  /// Where its transfers take tokens for their chunks (see sched::bandwidth_broker). Null: the
  /// context's broker, so that every pipeline of a context shares one budget per resource.
  std::shared_ptr<sched::bandwidth_broker> broker = nullptr;
  /// False: its transfers take no tokens and are not coordinated with any other.
  bool coordinated = true;
};

/// @brief Moves bytes between typed spans. `Transfer` plans each transfer, `Backend` executes
/// device work, `Allocator` provides the pinned staging ring.
///
/// Transfers are asynchronous: copy() returns a handle at once (direct host copies excepted,
/// which complete before it returns; and a staged copy waits in copy() while concurrent
/// transfers hold the whole staging ring). A pipeline may be used from many threads; transfers
/// in flight keep what they need alive, so the pipeline may be destroyed before them.
template <transfer_policy Transfer, backend_policy Backend,
          allocator_policy Allocator = pinned_allocator<Backend>>
class pipeline {
  static_assert(has_property<Allocator, property::pinned> &&
                    has_property<Allocator, property::host_accessible>,
                "lris::pipeline: the staging allocator must give pinned host memory "
                "(pinned_allocator<Backend> or registered_allocator<..., Backend>)");

 public:
  using transfer_type = Transfer;
  using backend_type = Backend;
  using allocator_type = Allocator;

  explicit pipeline(Transfer transfer = {}, Backend backend = {}, Allocator alloc = {},
                    pipeline_config config = {})
      : transfer_(std::move(transfer)) {
    auto ctx = config.context ? std::move(config.context) : default_context();
    ctx->check_process();
    auto tokens = !config.coordinated ? nullptr
                  : config.broker  ? std::move(config.broker)
                                      : ctx->broker();
    core_ = std::make_shared<detail::pipeline_core<Backend, Allocator>>(
        std::move(backend), std::move(alloc), config.max_staging_bytes, std::move(config.io),
        std::move(ctx), std::move(tokens));
  }

  [[nodiscard]] const Transfer& policy() const noexcept { return transfer_; }
  [[nodiscard]] const Backend& backend() const noexcept { return core_->backend; }
  /// @brief The io engine of this pipeline's file transfers, made on first use.
  [[nodiscard]] io::io_engine& io() { return core_->io(); }
  /// @brief The broker its transfers take tokens from; null when they are not coordinated.
  [[nodiscard]] const std::shared_ptr<sched::bandwidth_broker>& broker() const noexcept {
    return core_->broker;
  }
  /// @brief The context whose threads run its transfers.
  [[nodiscard]] const context_ptr& context() const noexcept {
    return core_->ctx;
  }
  /// @brief What the pipeline's transfers share (backend, streams, staging ring, io engine):
  /// for the jobs of other parts of the library, such as the format loaders.
  [[nodiscard]] const std::shared_ptr<detail::pipeline_core<Backend, Allocator>>& core() const noexcept {
    return core_;
  }

  /// @brief Pins `slots` staging slots of `chunk_bytes` now, so that the first staged transfer
  /// with that chunk size does not pay for page-locking (which can cost more than the copy).
  /// Returns how many slots the ring holds for that size (fewer when its bound is reached).
  std::size_t reserve_staging(std::size_t chunk_bytes, unsigned slots) {
    auto got = core_->ring.acquire(std::max(1u, slots), chunk_bytes);
    const std::size_t n = got.size();
    core_->ring.release(got);
    return n;
  }

  /// @brief The plan this pipeline would use for `bytes` from `Src` to `Dst`.
  template <memory_space Dst, memory_space Src>
  [[nodiscard]] transfer_plan plan_for(std::size_t bytes, const transfer_options& opts = {}) const {
    using traits = transfer_traits<Dst, Src>;
    transfer_plan p = transfer_.plan({.kind = traits::kind, .bytes = bytes,
                                      .needs_staging = traits::needs_staging,
                                      .backend = core_->key, .profile = profile()});
    return complete(p, opts);
  }

  /// @brief Starts copying `src` into `dst`; both must have the same size in bytes.
  template <memory_space DstSpace, class T, memory_space SrcSpace, class U>
  transfer copy(memory_span<DstSpace, T> dst, memory_span<SrcSpace, U> src,
                const transfer_options& opts = {}) {
    static_assert(!std::is_const_v<T>, "lris::copy: the destination span is const");
    using traits = transfer_traits<DstSpace, SrcSpace>;
    static_assert(traits::possible,
                  "lris::copy: no direct path between device memory of two different backends; "
                  "copy through host memory");
    static_assert(std::is_same_v<typename traits::backend, Backend> ||
                      std::is_same_v<typename traits::backend, host_backend>,
                  "lris::pipeline::copy: a span is device or pinned memory of another backend "
                  "than this pipeline's");

    const std::size_t bytes = src.size_bytes();
    check_arguments<DstSpace, SrcSpace>(dst.data(), dst.size_bytes(), dst.device(), src.data(),
                                        bytes, src.device());
    auto state = std::make_shared<detail::transfer_state>(bytes, opts.on_progress);
    const transfer_plan p = plan_for<DstSpace, SrcSpace>(bytes, opts);
    auto& st = state->stats;
    st.kind = traits::kind;
    st.path = p.path;
    st.policy = Transfer::name;
    st.backend = traits::kind == copy_kind::host_to_host ? host_backend::name : Backend::name;
    auto* d = reinterpret_cast<std::byte*>(dst.data());
    const auto* s = reinterpret_cast<const std::byte*>(src.data());

    if (bytes == 0) {
      state->finish();
    } else if (p.path == transfer_path::staged && traits::needs_staging) {
      start_staged(state, traits::kind, d, s, bytes, p, opts);
    } else if (traits::kind == copy_kind::host_to_host && p.path != transfer_path::direct) {
      start_parallel_host(state, d, s, bytes, p, opts);
    } else if (traits::kind == copy_kind::host_to_host) {
      st.path = transfer_path::direct;
      copy_here(*state, d, s, bytes, opts);
    } else {
      start_direct(state, traits::kind, d, s, bytes, p, opts);
    }
    // Made only now: a start that throws has left nothing running, and a handle would wait.
    return transfer(std::move(state));
  }

  /// @brief Starts reading dst.size_bytes() bytes of `f` from `offset` into `dst`.
  ///
  /// Host memory (pageable or pinned) is read into directly by the io engine; device memory
  /// through the pinned ring, io and DMA overlapped (path `staged`): the file's chunks are
  /// read with O_DIRECT where they are not in the page cache. `f` must stay open until the
  /// transfer is over. The stats' `io` field says what the io engine did and why.
  /// @throws lris::invalid_argument when the range passes the end of the file (naming it).
  template <memory_space DstSpace, class T>
  transfer read(memory_span<DstSpace, T> dst, const io::file& f, std::uint64_t offset,
                const transfer_options& opts = {}) {
    static_assert(!std::is_const_v<T>, "lris::pipeline::read: the destination span is const");
    const std::size_t bytes = dst.size_bytes();
    const std::uint64_t size = f.size();
    LRIS_EXPECTS(offset <= size && bytes <= size - offset,
                 "lris::read: [{}, +{}) of {} goes past the end of the file ({} bytes)", offset,
                 bytes, f.path().string(), size);
    LRIS_EXPECTS(bytes == 0 || dst.data() != nullptr, "lris::read: null destination for {} bytes",
                 bytes);
    return start_file<DstSpace>(copy_kind::host_to_device, reinterpret_cast<std::byte*>(dst.data()),
                                bytes, f, offset, dst.device(), opts);
  }

  /// @brief Starts writing `src` into `f` at `offset` (O_DIRECT for the aligned middle where
  /// the file allows it; device memory goes through the pinned ring). Call f.sync() after the
  /// transfer for durability. `f` must stay open until the transfer is over.
  template <memory_space SrcSpace, class U>
  transfer write(io::file& f, std::uint64_t offset, memory_span<SrcSpace, U> src,
                 const transfer_options& opts = {}) {
    const std::size_t bytes = src.size_bytes();
    LRIS_EXPECTS(bytes == 0 || src.data() != nullptr, "lris::write: null source for {} bytes",
                 bytes);
    return start_file<SrcSpace>(copy_kind::device_to_host,
                                const_cast<std::byte*>(reinterpret_cast<const std::byte*>(src.data())),
                                bytes, f, offset, src.device(), opts);
  }

  /// @brief Copies `src[i]` into `dst[i]` for every i, as one transfer.
  ///
  /// The policy plans the batch as a whole (transfer_request::items is the number of pairs):
  ///  - `batched`: one operation. Pinned and device memory on a batch_backend: one kernel on a
  ///    GPU, which reads pinned memory over the link itself. Host to host: one parallel loop.
  ///  - `packed`: pageable buffers and a device: the buffers are packed into pinned staging
  ///    slots by the copy workers, and each slot is one batched operation (or one DMA).
  ///  - `direct`: one asynchronous copy per pair, all on one stream.
  ///  - otherwise, and where the backend cannot do the planned path: each pair in turn with
  ///    the plan copy() would use, before copy_batch returns (the path reported is that of
  ///    the largest pair).
  /// Options apply to the whole batch.
  template <std::ranges::contiguous_range DstRange, std::ranges::contiguous_range SrcRange>
  transfer copy_batch(const DstRange& dst, const SrcRange& src, const transfer_options& opts = {}) {
    return copy_batch_spans(std::span(std::ranges::data(dst), std::ranges::size(dst)),
                            std::span(std::ranges::data(src), std::ranges::size(src)), opts);
  }

 private:
  template <memory_space DstSpace, class T, memory_space SrcSpace, class U>
  transfer copy_batch_spans(std::span<const memory_span<DstSpace, T>> dst,
                            std::span<const memory_span<SrcSpace, U>> src,
                            const transfer_options& opts) {
    static_assert(!std::is_const_v<T>, "lris::copy_batch: the destination spans are const");
    using traits = transfer_traits<DstSpace, SrcSpace>;
    static_assert(traits::possible,
                  "lris::copy_batch: no direct path between device memory of two different "
                  "backends; copy through host memory");
    LRIS_EXPECTS(dst.size() == src.size(),
                 "lris::copy_batch: {} destinations but {} sources", dst.size(), src.size());
    std::uint64_t total = 0;
    for (std::size_t i = 0; i < src.size(); ++i) {
      LRIS_EXPECTS(dst[i].size_bytes() == src[i].size_bytes(),
                   "lris::copy_batch: pair {}: the destination has {} bytes but the source has {}",
                   i, dst[i].size_bytes(), src[i].size_bytes());
      LRIS_EXPECTS(src[i].size_bytes() == 0 || (dst[i].data() != nullptr && src[i].data() != nullptr),
                   "lris::copy_batch: pair {}: null pointer (destination {}, source {})", i,
                   static_cast<const void*>(dst[i].data()), static_cast<const void*>(src[i].data()));
      total += src[i].size_bytes();
    }
    if (src.size() == 1) return copy(dst[0], src[0], opts);
    const transfer_plan p = complete(
        transfer_.plan({.kind = traits::kind, .bytes = total, .items = src.size(),
                        .needs_staging = traits::needs_staging, .backend = core_->key,
                        .profile = profile()}),
        opts);
    auto state = std::make_shared<detail::transfer_state>(total, opts.on_progress);
    auto& st = state->stats;
    st.kind = traits::kind;
    st.policy = Transfer::name;
    st.backend = traits::kind == copy_kind::host_to_host ? host_backend::name : Backend::name;
    st.chunks = src.size();
    auto item = [&](std::size_t i) {
      return copy_item{src[i].data(), dst[i].data(), src[i].size_bytes()};
    };
    if (total == 0) {
      state->finish();
      return transfer(std::move(state));
    }
    if constexpr (traits::kind == copy_kind::host_to_host) {
      if (p.path == transfer_path::batched) {
        start_host_batch(state, src.size(), item, opts);
        return transfer(std::move(state));
      }
    } else if constexpr (batch_backend<Backend> && !traits::needs_staging) {
      if (p.path == transfer_path::batched) {
        start_device_batch(state, p, src.size(), item, opts);
        return transfer(std::move(state));
      }
    } else if constexpr (batch_backend<Backend>) {
      if (p.path == transfer_path::packed) {
        start_packed(state, traits::kind, p, src.size(), item, opts);
        return transfer(std::move(state));
      }
    }
    if (traits::kind != copy_kind::host_to_host && p.path == transfer_path::direct) {
      st.path = transfer_path::direct;
      start_on_stream(state, p.streams, [&](typename Backend::stream& stream) {
        for (std::size_t i = 0; i < src.size(); ++i) {
          const copy_item it = item(i);
          if (it.bytes) core_->backend.copy_async(it.dst, it.src, it.bytes, traits::kind, stream);
        }
      }, nullptr, traits::kind, opts);
      return transfer(std::move(state));
    }
    return copy_pairs(std::move(state), dst, src, opts);
  }

  // One pair after another, each as copy() would do it. The state exists from the start so
  // that the reported time covers the whole batch; a stop from on_progress ends the batch as
  // a cancelled transfer, as with copy().
  template <class DstSpan, class SrcSpan>
  transfer copy_pairs(std::shared_ptr<detail::transfer_state> state, std::span<const DstSpan> dst,
                      std::span<const SrcSpan> src, const transfer_options& opts) {
    transfer_options each;
    each.chunk_bytes = opts.chunk_bytes;
    each.workers = opts.workers;
    each.streams = opts.streams;
    each.ring_depth = opts.ring_depth;
    transfer_stats largest_pair;
    std::size_t largest = 0;
    std::uint64_t done = 0;
    const std::uint64_t total = state->total;
    state->on_progress = {};  // called here, per pair
    for (std::size_t i = 0; i < src.size(); ++i) {
      const auto st = copy(dst[i], src[i], each).wait();
      if (src[i].size_bytes() >= largest) {
        largest = src[i].size_bytes();
        largest_pair = st;
      }
      done += src[i].size_bytes();
      if (opts.on_progress && !opts.on_progress(done, total)) break;
    }
    state->stats = largest_pair;
    state->stats.chunks = src.size();
    state->add_progress(done);
    state->finish();
    return transfer(std::move(state));
  }

  template <class ItemAt>
  void start_host_batch(const std::shared_ptr<detail::transfer_state>& state, std::size_t n,
                        const ItemAt& item, const transfer_options& opts) {
    state->stats.path = transfer_path::batched;
    auto items = std::make_shared<std::vector<copy_item>>(n);
    for (std::size_t i = 0; i < n; ++i) (*items)[i] = item(i);
    auto& pool = core_->ctx->compute();
    state->stats.workers = pool.size();
    auto pace = std::make_shared<detail::pacing>();
    core_->pace(*pace, copy_kind::host_to_host, opts);
    const priority lane = opts.priority;
    pool.submit([state, items, pace, ctx = core_->ctx, lane] {
      try {
        auto cpu = pace->hold(pace->host, state->total);
        pace->report(state->stats);
        auto& pool = ctx->compute();
        detail::parallel_for(pool, items->size(), pool.size() + 1, [&](std::size_t i) {
          const copy_item& it = (*items)[i];
          std::memcpy(it.dst, it.src, it.bytes);
        }, lane);
        state->add_progress(state->total);
      } catch (...) {
        state->fail(std::current_exception());
      }
      state->finish();
    }, lane);
  }

  // Pieces of at most this size keep a batch with a few large buffers spread over the GPU.
  static constexpr std::size_t batch_piece_bytes = std::size_t{1} << 20;

  template <class ItemAt>
  void start_device_batch(const std::shared_ptr<detail::transfer_state>& state,
                          const transfer_plan& p, std::size_t n, const ItemAt& item,
                          const transfer_options& opts) {
    state->stats.path = transfer_path::batched;
    std::vector<copy_item> pieces;
    pieces.reserve(n);
    for (std::size_t i = 0; i < n; ++i) detail::append_pieces(pieces, item(i), batch_piece_bytes);
    // The item array is read by whoever executes the batch (a GPU reads it over the link), so
    // it lives in the pipeline's pinned memory until the transfer is over.
    auto items = std::make_shared<buffer<caching_pool<Allocator>, copy_item>>(pieces.size(),
                                                                              core_->item_pool);
    std::copy(pieces.begin(), pieces.end(), items->data());
    start_on_stream(state, p.streams, [&](typename Backend::stream& stream) {
      core_->backend.copy_batch_async(items->data(), items->size(), stream);
    }, items, state->stats.kind, opts);
  }

  template <class ItemAt>
  void start_packed(const std::shared_ptr<detail::transfer_state>& state, copy_kind kind,
                    const transfer_plan& p, std::size_t n, const ItemAt& item,
                    const transfer_options& opts) {
    auto job = std::make_shared<detail::packed_job<Backend, Allocator>>();
    core_->pace(job->pace, kind, opts);
    const std::size_t slot = slot_bytes(state->total, p);
    std::vector<copy_item> pieces;
    pieces.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      detail::append_pieces(pieces, item(i), detail::slot_packing::max_piece(slot));
    }
    job->packing = detail::pack_into_slots(std::move(pieces), slot);
    job->state = state;
    job->chunks = job->packing.groups();
    job->core = core_;
    job->kind = kind;
    job->streams = p.streams;
    job->slots = core_->ring.acquire(std::min<std::size_t>(p.ring_depth, job->chunks), slot);
    auto& st = state->stats;
    st.path = transfer_path::packed;
    st.chunks = job->chunks;
    st.chunk_bytes = slot;
    st.workers = static_cast<unsigned>(
        std::min<std::size_t>({p.workers, job->chunks, job->slots.size()}));
    st.streams = p.streams;
    st.ring_slots = static_cast<unsigned>(job->slots.size());
    detail::start_workers(job, st.workers, core_->ctx, opts.priority);
  }

  // File <-> memory. `kind` is host_to_device for reads (file to memory) and device_to_host
  // for writes, whatever the memory is.
  template <memory_space Space>
  transfer start_file(copy_kind kind, std::byte* mem, std::size_t bytes, const io::file& f,
                      std::uint64_t offset, int device, const transfer_options& opts) {
    constexpr bool on_device =
        has_property<Space, property::device_accessible> &&
        !has_property<Space, property::host_accessible>;
    if constexpr (on_device) {
      LRIS_EXPECTS(device == core_->backend.device(),
                   "lris::{}: the memory is on device {} but the pipeline drives device {}",
                   kind == copy_kind::host_to_device ? "read" : "write", device,
                   core_->backend.device());
    }
    auto state = std::make_shared<detail::transfer_state>(bytes, opts.on_progress);
    auto& st = state->stats;
    st.kind = on_device ? kind : copy_kind::host_to_host;
    st.policy = Transfer::name;
    st.backend = on_device ? Backend::name : host_backend::name;
    if (bytes == 0) {
      state->finish();
      return transfer(std::move(state));
    }
    auto& io = core_->io();  // made here: an io_uring refused by force throws before anything runs
    if constexpr (!on_device) {
      st.path = transfer_path::direct;
      st.workers = 1;
      const io::file* file = &f;
      auto pace = std::make_shared<detail::pacing>();
      core_->pace(*pace, copy_kind::host_to_host, opts);
      pace->storage = core_->storage_resource(f.fd());
      const std::size_t piece =
          pace->on(pace->storage)
              ? exec::file_piece_bytes(core_->broker->capacity(pace->storage))
              : bytes;
      // Blocking io: on the context's io threads, in the lane of its priority.
      core_->ctx->io().submit([state, core = core_, &io, file, mem, bytes, offset,
                               kind, call = opts.io, pace, piece] {
        auto stop = [&] { return state->should_stop(); };
        try {
          io::io_stats r;
          pace->run(pace->storage, bytes, piece, [&](std::size_t off, std::size_t n) {
            r.add_part(kind == copy_kind::host_to_device
                           ? io.read(*file, offset + off, {mem + off, n}, stop, call)
                           : io.write(const_cast<io::file&>(*file), offset + off, {mem + off, n},
                                      stop, call));
          });
          pace->report(state->stats);
          state->stats.io = r.summary();
          state->stats.io_direct_bytes = r.direct_bytes;
          state->stats.io_buffered_bytes = r.buffered_bytes;
          state->stats.io_fixed_buffer_ops = r.fixed_buffer_ops;
          state->add_progress(r.bytes);
        } catch (const cancelled&) {
          // Counted as a cancelled transfer by the state: fewer bytes than asked.
        } catch (...) {
          state->fail(std::current_exception());
        }
        state->finish();
      }, opts.priority);
      return transfer(std::move(state));
    } else {
      const transfer_plan p = complete(
          transfer_.plan({.kind = kind, .bytes = bytes, .needs_staging = true,
                          .backend = core_->key, .profile = profile()}),
          opts);
      auto job = std::make_shared<detail::file_job<Backend, Allocator>>();
      core_->pace(job->pace, kind, opts);
      job->pace.storage = core_->storage_resource(f.fd());
      // Cold or resident, decided once: each chunk asking the page cache again would map and
      // unmap its range, which costs every thread of the process a TLB flush.
      io::direct_mode mode = opts.io.direct.value_or(io.options().direct);
      std::string mode_reason;
      if (mode == io::direct_mode::automatic && kind == copy_kind::host_to_device) {
        auto choice = io::io_engine::choose_by_residency(
            io::io_engine::resident_fraction(f, offset, bytes), "the range");
        mode = choice.cold ? io::direct_mode::always : io::direct_mode::never;
        mode_reason = std::move(choice.reason);
      }
      // Buffered io is a copy by the kernel: many workers, usual chunks; direct io is paced by
      // the disk (exec::direct_io_chunks). Chunks are whole O_DIRECT blocks, so that each
      // chunk's middle can go direct.
      const bool direct_io = mode != io::direct_mode::never && f.direct();
      const std::size_t align = std::max<std::size_t>(4096, f.direct_alignment());
      std::size_t want = slot_bytes(bytes, p);
      unsigned workers = p.workers;
      if (direct_io && opts.chunk_bytes == 0 && opts.workers == 0) {
        const auto d =
            exec::direct_io_chunks(io.queue_depth(opts.io), io.options().block_bytes, p.workers);
        want = d.chunk_bytes;
        workers = d.workers;
      }
      const std::size_t chunk = exec::whole_units(want, align, core_->ring.max_bytes());
      job->state = state;
      job->file = &f;
      job->device = mem;
      job->offset = offset;
      job->end = offset + bytes;
      job->base = offset / chunk * chunk;
      job->chunk = chunk;
      job->chunks = static_cast<std::size_t>((job->end - job->base + chunk - 1) / chunk);
      job->io = opts.io;
      job->io.direct = mode;
      job->mode_reason = std::move(mode_reason);
      job->core = core_;
      job->kind = kind;
      job->streams = p.streams;
      job->slots = core_->ring.acquire(
          std::min<std::size_t>({p.ring_depth, std::size_t{2} * workers, job->chunks}), chunk);
      st.path = transfer_path::staged;
      st.chunks = job->chunks;
      st.chunk_bytes = chunk;
      st.workers = static_cast<unsigned>(
          std::min<std::size_t>({workers, job->chunks, job->slots.size()}));
      st.streams = p.streams;
      st.ring_slots = static_cast<unsigned>(job->slots.size());
      detail::start_workers(job, st.workers, core_->ctx, opts.priority, /*blocking_io=*/true);
      return transfer(std::move(state));
    }
  }

  // The context's calibrated profile for policies that plan by one (transfer_policy_uses_profile).
  const transfer_profile* profile() const {
    if constexpr (requires { Transfer::uses_profile; }) {
      if constexpr (Transfer::uses_profile) return &core_->profile();
    }
    return nullptr;
  }

  // Zero fields of a plan take the options, then the defaults.
  transfer_plan complete(transfer_plan p, const transfer_options& o) const {
    if (o.chunk_bytes) p.chunk_bytes = o.chunk_bytes;
    if (o.workers) p.workers = o.workers;
    if (o.streams) p.streams = o.streams;
    if (o.ring_depth) p.ring_depth = o.ring_depth;
    if (!p.chunk_bytes) p.chunk_bytes = std::size_t{4} << 20;
    if (!p.workers) p.workers = exec::default_workers(core_->ctx->compute().size());
    if (!p.streams) p.streams = 2;
    if (!p.ring_depth) p.ring_depth = 2 * p.workers;
    return p;
  }

  template <class DstSpace, class SrcSpace>
  void check_arguments(const void* d, std::size_t dbytes, int ddev, const void* s,
                       std::size_t sbytes, int sdev) const {
    LRIS_EXPECTS(dbytes == sbytes,
                 "lris::copy: the destination has {} bytes but the source has {} bytes", dbytes,
                 sbytes);
    LRIS_EXPECTS(sbytes == 0 || (d != nullptr && s != nullptr),
                 "lris::copy: null pointer (destination {}, source {}) for {} bytes", d, s,
                 sbytes);
    constexpr bool dst_dev = has_property<DstSpace, property::device_accessible> &&
                             !has_property<DstSpace, property::host_accessible>;
    constexpr bool src_dev = has_property<SrcSpace, property::device_accessible> &&
                             !has_property<SrcSpace, property::host_accessible>;
    if constexpr (dst_dev) {
      LRIS_EXPECTS(ddev == core_->backend.device(),
                   "lris::copy: the destination is on device {} but the pipeline drives device {}",
                   ddev, core_->backend.device());
    }
    if constexpr (src_dev) {
      LRIS_EXPECTS(sdev == core_->backend.device(),
                   "lris::copy: the source is on device {} but the pipeline drives device {}",
                   sdev, core_->backend.device());
    }
    // Overlap is only meaningful within one address space: both host or both on one device.
    if constexpr (dst_dev == src_dev) {
      const auto db = reinterpret_cast<std::uintptr_t>(d);
      const auto sb = reinterpret_cast<std::uintptr_t>(s);
      LRIS_EXPECTS(sbytes == 0 || db + dbytes <= sb || sb + sbytes <= db,
                   "lris::copy: the destination [{}, +{}) overlaps the source [{}, +{})", d,
                   dbytes, s, sbytes);
    }
  }

  void start_parallel_host(const std::shared_ptr<detail::transfer_state>& state, std::byte* d,
                           const std::byte* s, std::size_t bytes, const transfer_plan& p,
                           const transfer_options& opts) {
    const std::size_t chunk = exec::host_split_chunk(bytes, p.workers, p.chunk_bytes);
    auto job = std::make_shared<detail::host_copy_job>();
    fill_job(*job, state, d, s, bytes, chunk);
    if (job->chunks == 1) {  // nothing to split: copy here, as the direct path does
      state->stats.path = transfer_path::direct;
      copy_here(*state, d, s, bytes, opts);
      return;
    }
    core_->pace(job->pace, copy_kind::host_to_host, opts);
    state->stats.workers = static_cast<unsigned>(std::min<std::size_t>(p.workers, job->chunks));
    detail::start_workers(job, p.workers, core_->ctx, opts.priority);
  }

  void start_staged(const std::shared_ptr<detail::transfer_state>& state, copy_kind kind,
                    std::byte* d, const std::byte* s, std::size_t bytes, const transfer_plan& p,
                    const transfer_options& opts) {
    auto job = std::make_shared<detail::staged_job<Backend, Allocator>>();
    core_->pace(job->pace, kind, opts);
    const std::size_t chunk = std::min(slot_bytes(bytes, p), bytes);
    fill_job(*job, state, d, s, bytes, chunk);
    job->core = core_;
    job->kind = kind;
    job->streams = p.streams;
    job->slots = core_->ring.acquire(std::min<std::size_t>(p.ring_depth, job->chunks), chunk);
    const unsigned workers =
        static_cast<unsigned>(std::min<std::size_t>({p.workers, job->chunks, job->slots.size()}));
    auto& st = state->stats;
    st.workers = workers;
    st.streams = p.streams;
    st.ring_slots = static_cast<unsigned>(job->slots.size());
    detail::start_workers(job, workers, core_->ctx, opts.priority);
  }

  std::size_t slot_bytes(std::size_t bytes, const transfer_plan& p) const {
    return exec::staging_chunk(bytes, p.workers, p.chunk_bytes, core_->ring.max_bytes());
  }

  // Host memory to host memory on this thread, holding "host" tokens.
  void copy_here(detail::transfer_state& state, std::byte* d, const std::byte* s,
                 std::size_t bytes, const transfer_options& opts) {
    detail::pacing pace;
    core_->pace(pace, copy_kind::host_to_host, opts);
    pace.run(pace.host, bytes, bytes, [&](std::size_t off, std::size_t n) {
      std::memcpy(d + off, s + off, n);
    });
    pace.report(state.stats);
    state.add_progress(bytes);
    state.finish();
  }

  void start_direct(const std::shared_ptr<detail::transfer_state>& state, copy_kind kind,
                    std::byte* d, const std::byte* s, std::size_t bytes, const transfer_plan& p,
                    const transfer_options& opts) {
    if (core_->broker && kind != copy_kind::device_to_device) {
      // Coordinated: in pieces, each after its link tokens are granted; those whose tokens
      // are free now from here, the rest from a pool thread.
      auto job = std::make_shared<detail::paced_copy_job<Backend, Allocator>>();
      core_->pace(job->pace, kind, opts);
      job->state = state;
      job->core = core_;
      job->dst = d;
      job->src = s;
      job->bytes = bytes;
      job->kind = kind;
      job->streams = p.streams;
      job->piece = job->pace.within_budget(
          exec::paced_piece_bytes(core_->broker->capacity(job->pace.link)));
      state->stats.streams = 1;
      state->stats.chunk_bytes = job->piece;
      state->stats.chunks = (bytes + job->piece - 1) / job->piece;
      bool all = false;
      try {
        all = job->lead();
      } catch (...) {
        state->fail(std::current_exception());
      }
      if (all) {
        // Every piece is queued: the transfer completes with the last, as a single copy does.
        try {
          auto done = core_->events->take();
          core_->backend.record(*done, job->stream());
          state->stats.path = job->path();
          job->pace.report(state->stats);
          complete_with(*state, std::move(done));
          return;
        } catch (...) {
          state->fail(std::current_exception());
        }
      }
      // A pool thread goes on with the rest, unless a thread that waits for the transfer
      // takes it first (the job does not keep the state's hold on it alive).
      state->help = [weak = std::weak_ptr(job)] {
        if (auto j = weak.lock()) j->run();
      };
      // It waits for the device: a blocking task, on the io threads.
      job->ctx = core_->ctx;
      job->ctx->io().submit([job] { job->run(); }, opts.priority);
      return;
    }
    start_on_stream(state, p.streams, [&](typename Backend::stream& stream) {
      core_->backend.copy_async(d, s, bytes, kind, stream);
    });
  }

  // Queues device work on one stream and makes the transfer complete with it. `keep` stays
  // alive until the transfer is over (memory the device work reads). Work of `kind` over a
  // link takes that link's tokens for all its bytes first (it cannot be split), which may
  // wait here.
  template <class Enqueue, class Keep = std::nullptr_t>
  void start_on_stream(const std::shared_ptr<detail::transfer_state>& state, unsigned streams,
                       const Enqueue& enqueue, Keep keep = nullptr,
                       copy_kind kind = copy_kind::device_to_device,
                       const transfer_options& opts = {}) {
    auto& stream = core_->next_stream(streams);
    state->stats.streams = 1;
    detail::pacing pace;
    core_->pace(pace, kind, opts);
    auto link = pace.reserve(pace.link, state->total);
    pace.report(state->stats);
    // The event is shared by the two functions below; the core keeps the backend alive.
    auto done = core_->events->take();
    try {
      enqueue(stream);
      pace.release_after(pace.link, std::move(link), core_->backend, *core_->events, stream);
      core_->backend.record(*done, stream);
    } catch (...) {
      core_->backend.synchronize(stream);  // what was queued may be running: let it land first
      throw;
    }
    complete_with(*state, std::move(done), std::move(keep));
  }

  // Makes the transfer complete with `done`, an event recorded after its device work; `keep`
  // stays alive until then. Either both functions are set or (it throws) neither.
  template <class Event, class Keep = std::nullptr_t>
  void complete_with(detail::transfer_state& state, Event done, Keep keep = nullptr) {
    std::function<void()> wait = [core = core_, done, keep] { core->backend.synchronize(*done); };
    auto state_event = done;
    std::function<bool()> ready = [core = core_, done = std::move(done), keep = std::move(keep)] {
      return core->backend.query(*done);
    };
    state.device_wait = std::move(wait);
    state.device_ready = std::move(ready);
    state.watch = [ctx = core_->ctx](std::function<bool()> done, std::function<void()> then) {
      ctx->when_ready(std::move(done), std::move(then));
    };
    state.stream_wait = [core = core_, ev = state_event](const std::type_info& type, int device,
                                                         void* stream) {
      if (type != typeid(Backend) || device != core->backend.device()) return false;
      core->backend.wait(*static_cast<typename Backend::stream*>(stream), *ev);
      return true;
    };
  }

  static void fill_job(detail::chunked_job& job, const std::shared_ptr<detail::transfer_state>& st,
                       std::byte* d, const std::byte* s, std::size_t bytes, std::size_t chunk) {
    job.state = st;
    job.dst = d;
    job.src = s;
    job.bytes = bytes;
    job.chunk = chunk;
    job.chunks = (bytes + chunk - 1) / chunk;
    st->stats.chunks = job.chunks;
    st->stats.chunk_bytes = chunk;
  }

  Transfer transfer_;
  std::shared_ptr<detail::pipeline_core<Backend, Allocator>> core_;
};

}  // namespace lris
