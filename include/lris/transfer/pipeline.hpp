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
#include <lris/exec/executor.hpp>
#include <lris/exec/file_io.hpp>
#include <lris/exec/plan.hpp>
#include <lris/transfer/plans.hpp>
#include <lris/transfer/traits.hpp>
#include <lris/transfer/transfer.hpp>

namespace lris {

/// @brief Settings of a pipeline that outlive single transfers.
struct pipeline_config {
  /// Upper bound of pinned staging memory, shared by concurrent transfers. The context keeps
  /// the staging ring (and the io engine of file transfers through it), and every pipeline of
  /// the context with the same backend, device, staging allocator, bound and io settings
  /// shares them (exec::staging_of): the bound is theirs together, and a pipeline made later
  /// finds the ring's memory pinned already.
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
    auto staged = exec::staging_of(ctx, backend, alloc,
                                   {config.max_staging_bytes, std::move(config.io)});
    exec_ = std::make_shared<exec::executor<Backend, Allocator>>(
        std::move(backend), std::move(alloc), std::move(staged), std::move(ctx),
        std::move(tokens));
  }

  [[nodiscard]] const Transfer& policy() const noexcept { return transfer_; }
  [[nodiscard]] const Backend& backend() const noexcept { return exec_->backend; }
  /// @brief The io engine of this pipeline's file transfers (its staging's), made on first use.
  [[nodiscard]] io::io_engine& io() { return exec_->io(); }
  /// @brief The broker its transfers take tokens from; null when they are not coordinated.
  [[nodiscard]] const std::shared_ptr<sched::bandwidth_broker>& broker() const noexcept {
    return exec_->broker;
  }
  /// @brief The context whose threads run its transfers.
  [[nodiscard]] const context_ptr& context() const noexcept {
    return exec_->ctx;
  }
  /// @brief The executor that runs its plans: it owns the backend, streams and events that
  /// the pipeline's transfers share, and stages through the context's ring (executor::staged).
  [[nodiscard]] const std::shared_ptr<exec::executor<Backend, Allocator>>& executor() const noexcept {
    return exec_;
  }
  /// @brief The most bytes one staging slot may hold (pipeline_config::max_staging_bytes).
  [[nodiscard]] std::size_t max_slot_bytes() const noexcept { return exec_->staged->ring.max_bytes(); }

  /// @brief Starts running `p`, a plan made by the caller (e.g. a checkpoint loader).
  /// @throws lris::invalid_argument when the plan cannot run (exec::validate says why).
  transfer run(exec::plan p) {
    const copy_kind kind = p.direction();
    const bool device = p.uses_device();
    return launch(std::move(p), nullptr, kind, device);
  }

  /// @brief Pins `slots` staging slots of `chunk_bytes` now, so that the first staged transfer
  /// with that chunk size does not pay for page-locking (which can cost more than the copy).
  /// Returns how many slots the ring holds for that size (fewer when its bound is reached).
  std::size_t reserve_staging(std::size_t chunk_bytes, unsigned slots) {
    auto got = exec_->staged->ring.acquire(std::max(1u, slots), chunk_bytes);
    const std::size_t n = got.size();
    exec_->staged->ring.release(got);
    return n;
  }

  /// @brief What the policy is asked for a transfer of `bytes` in `items` buffers from `Src`
  /// to `Dst` (the ends' addresses left for the caller to fill in).
  template <memory_space Dst, memory_space Src>
  [[nodiscard]] transfer_request request(std::size_t bytes, std::size_t items = 1,
                                         const transfer_options& opts = {}) const {
    using traits = transfer_traits<Dst, Src>;
    return {.kind = traits::kind, .bytes = bytes, .items = items,
            .needs_staging = traits::needs_staging, .backend = exec_->key,
            .profile = profile(), .dst = plans::place_of<Dst>(nullptr, exec_->backend.device()),
            .src = plans::place_of<Src>(nullptr, exec_->backend.device()),
            .pairs = {},
            .given = {opts.chunk_bytes, opts.workers, opts.streams, opts.ring_depth},
            .max_slot_bytes = exec_->staged->ring.max_bytes(),
            .threads = static_cast<unsigned>(exec_->ctx->compute().size()),
            .one_operation_batches = batch_backend<Backend>};
  }
  /// @brief Sizes for plans that no policy makes (file transfers, checkpoint loads): the
  /// calibrated profile's, with the call's over them (lris::complete).
  [[nodiscard]] transfer_sizes sizes(const transfer_options& opts = {}) const {
    const transfer_profile& p = exec_->profile();
    return complete(request<host_space, host_space>(0, 1, opts),
                    {p.chunk_bytes, p.workers, p.streams, p.ring_depth});
  }

  /// @brief The cold-read method for reads of `f`: `given` (a call's transfer_options::
  /// cold_reads), else the calibrated profile of the storage device that holds `f`.
  [[nodiscard]] const disk_profile& cold_reads(const io::file& f,
                                               const std::optional<disk_profile>& given = {}) {
    return exec_->cold_reads(f.fd(), given);
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
    transfer_request r = request<DstSpace, SrcSpace>(bytes, 1, opts);
    r.dst = plans::place_of<DstSpace>(dst.data(), dst.device());
    r.src = plans::place_of<SrcSpace>(src.data(), src.device());
    return start<DstSpace, SrcSpace>(transfer_.plan(r), opts);
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
  /// The policy plans the batch as a whole (transfer_request::pairs), with a maker of
  /// lris::plans:
  ///  - `batched`: one operation. Pinned and device memory on a batch_backend: one kernel on a
  ///    GPU, which reads pinned memory over the link itself. Host to host: one parallel loop.
  ///  - `packed`: pageable buffers and a device: the buffers are packed into pinned staging
  ///    slots by the copy workers, and each slot is one batched operation (or one DMA).
  ///  - `direct`: one asynchronous copy per pair, all on one stream.
  ///  - `staged`, `parallel`: each pair cut into chunks as copy() would cut it, all in one plan.
  /// Options apply to the whole batch; a batch of one operation, or of one per pair, reports
  /// its pairs as its chunks.
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
    // The pairs, checked as they are written, into storage that earlier batches wrote.
    std::vector<copy_item> pairs = exec_->spare_items();
    pairs.reserve(src.size());
    std::uint64_t total = 0;
    for (std::size_t i = 0; i < src.size(); ++i) {
      LRIS_EXPECTS(dst[i].size_bytes() == src[i].size_bytes(),
                   "lris::copy_batch: pair {}: the destination has {} bytes but the source has {}",
                   i, dst[i].size_bytes(), src[i].size_bytes());
      LRIS_EXPECTS(src[i].size_bytes() == 0 || (dst[i].data() != nullptr && src[i].data() != nullptr),
                   "lris::copy_batch: pair {}: null pointer (destination {}, source {})", i,
                   static_cast<const void*>(dst[i].data()), static_cast<const void*>(src[i].data()));
      check_device<DstSpace>(dst[i].device(), "copy_batch", "destination");
      check_device<SrcSpace>(src[i].device(), "copy_batch", "source");
      pairs.push_back({src[i].data(), dst[i].data(), src[i].size_bytes()});
      total += src[i].size_bytes();
    }
    if (src.size() == 1) {
      exec_->recycle(exec::plan_storage{{}, std::move(pairs)});
      return copy(dst[0], src[0], opts);
    }
    transfer_request r = request<DstSpace, SrcSpace>(total, src.size(), opts);
    r.pairs = pairs;
    exec::plan_storage spare = exec_->spare();
    r.spare = &spare;
    exec::plan pl = transfer_.plan(r);
    exec_->recycle(std::move(spare));  // what the maker did not take
    exec_->recycle(exec::plan_storage{{}, std::move(pairs)});
    // A batch of one operation, or of one per pair, reports its pairs as its chunks.
    const bool by_pair = pl.shape == transfer_path::batched || pl.shape == transfer_path::direct;
    return start<DstSpace, SrcSpace>(std::move(pl), opts, by_pair ? src.size() : 0);
  }

  // Runs a plan of a transfer from `Src` to `Dst` with the call's options.
  template <memory_space Dst, memory_space Src>
  transfer start(exec::plan pl, const transfer_options& opts, std::size_t chunks = 0) {
    using traits = transfer_traits<Dst, Src>;
    return launch(std::move(pl), &opts, traits::kind, traits::kind != copy_kind::host_to_host,
                  chunks);
  }

  // Runs `pl`, with the call's options where there is a call, reported as a transfer of
  // `kind` on this backend (on the host's when `device` is false) in `chunks` chunks (a
  // batch's pairs; 0: the plan's).
  transfer launch(exec::plan pl, const transfer_options* opts, copy_kind kind, bool device,
                  std::size_t chunks = 0) {
    if (opts != nullptr) {
      pl.prio = opts->priority;
      pl.budget_bytes = opts->budget_bytes;
      pl.on_progress = opts->on_progress;
    }
    transfer_stats st;
    st.kind = kind;
    st.policy = Transfer::name;
    st.backend = device ? Backend::name : host_backend::name;
    st.chunks = chunks;
    return transfer(exec_->run(std::move(pl), std::move(st)));
  }

  // File <-> memory. `kind` is host_to_device for reads (file to memory) and device_to_host
  // for writes, whatever the memory is.
  template <memory_space Space>
  transfer start_file(copy_kind kind, std::byte* mem, std::size_t bytes, const io::file& f,
                      std::uint64_t offset, int device, const transfer_options& opts) {
    constexpr bool on_device = !has_property<Space, property::host_accessible>;
    const bool reading = kind == copy_kind::host_to_device;
    if constexpr (on_device) {
      LRIS_EXPECTS(device == exec_->backend.device(),
                   "lris::{}: the memory is on device {} but the pipeline drives device {}",
                   reading ? "read" : "write", device, exec_->backend.device());
    }
    const auto at = plans::place_of<Space>(mem, device);
    exec::plan pl;
    if (bytes > 0) {
      auto& io = exec_->io();  // made here: an io_uring refused by force throws before anything runs
      if constexpr (!on_device) {
        // Under a disk's budget in pieces, each holding its tokens while it runs.
        const std::size_t disk = exec_->storage_resource(f.fd());
        const std::size_t piece = exec_->broker && disk != exec::pacing::none
                                      ? exec::file_piece_bytes(exec_->broker->capacity(disk))
                                      : bytes;
        pl = plans::file_host(f, offset, at, bytes, reading, piece, opts.io);
      } else {
        const transfer_sizes p = sizes(opts);
        const exec::file_range range{&f, offset, bytes};
        const auto choice = exec::file_io_for(
            io, {&range, 1}, opts.io, reading, "the range",
            exec::staging_chunk(bytes, p.workers, p.chunk_bytes, exec_->staged->ring.max_bytes()),
            p.workers, opts.chunk_bytes != 0 || opts.workers != 0,
            &exec_->cold_reads(f.fd(), opts.cold_reads));
        pl = plans::file_device(p, f, offset, at, bytes, reading, choice, opts.io,
                                exec_->staged->ring.max_bytes());
      }
    }
    return launch(std::move(pl), &opts, on_device ? kind : copy_kind::host_to_host, on_device);
  }

  // The context's calibrated profile for policies that plan by one (transfer_policy_uses_profile).
  const transfer_profile* profile() const {
    if constexpr (requires { Transfer::uses_profile; }) {
      if constexpr (Transfer::uses_profile) return &exec_->profile();
    }
    return nullptr;
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
    constexpr bool dst_dev = !has_property<DstSpace, property::host_accessible>;
    constexpr bool src_dev = !has_property<SrcSpace, property::host_accessible>;
    check_device<DstSpace>(ddev, "copy", "destination");
    check_device<SrcSpace>(sdev, "copy", "source");
    // Overlap is only meaningful within one address space: both host or both on one device.
    if constexpr (dst_dev == src_dev) {
      const auto db = reinterpret_cast<std::uintptr_t>(d);
      const auto sb = reinterpret_cast<std::uintptr_t>(s);
      LRIS_EXPECTS(sbytes == 0 || db + dbytes <= sb || sb + sbytes <= db,
                   "lris::copy: the destination [{}, +{}) overlaps the source [{}, +{})", d,
                   dbytes, s, sbytes);
    }
  }

  // Device memory must be on the pipeline's device.
  template <class Space>
  void check_device(int device, std::string_view call, std::string_view end) const {
    if constexpr (!has_property<Space, property::host_accessible>) {
      LRIS_EXPECTS(device == exec_->backend.device(),
                   "lris::{}: the {} is on device {} but the pipeline drives device {}", call,
                   end, device, exec_->backend.device());
    }
  }

  Transfer transfer_;
  std::shared_ptr<exec::executor<Backend, Allocator>> exec_;
};

}  // namespace lris
