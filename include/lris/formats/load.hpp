#pragma once
/// @file
/// @brief Loading safetensors checkpoints into any memory of a pipeline's backend, at the
/// speed of the disk or the page cache.
///
/// The files are read in order, in chunks that fill the pipeline's pinned staging slots (so
/// host memory stays bounded by pipeline_config::max_staging_bytes); neighbouring tensors share
/// chunks. Data not in the page cache is read with O_DIRECT. From a slot, each tensor's bytes
/// go to the device by DMA (converted by a kernel when asked) or to host memory by the CPU; a
/// chunk that is one host tensor is read straight into it.
///
///   lris::safetensors::checkpoint ck("model/");              // a file or a sharded directory
///   lris::pipeline<lris::auto_select, lris::cuda_backend> p;
///   auto loaded = lris::safetensors::load(p, ck, {.select = "layers\\.0\\."});
///   // loaded.tensors[i].data: device memory, 256-byte aligned, leased (loaded_tensor.hpp)

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <memory>
#include <string>
#include <mutex>
#include <numeric>
#include <utility>
#include <chrono>
#include <cstdlib>
#include <type_traits>
#include <vector>

#include <fmt/format.h>

#include <lris/concepts/memory_property.hpp>
#include <lris/concepts/convert_backend.hpp>
#include <lris/error.hpp>
#include <lris/exec/sizing.hpp>
#include <lris/formats/checkpoint.hpp>
#include <lris/element/checksum.hpp>
#include <lris/element/convert.hpp>
#include <lris/formats/detail/load_plan.hpp>
#include <lris/formats/detail/load_select.hpp>
#include <lris/formats/load_options.hpp>
#include <lris/formats/loaded_tensor.hpp>
#include <lris/memory/device_allocator.hpp>
#include <lris/memory/huge_page_allocator.hpp>
#include <lris/concepts/memory_space.hpp>
#include <lris/transfer/pipeline.hpp>

namespace lris::safetensors {

/// @brief What the loaders run on: a pipeline (lris::pipeline) of some backend and staging
/// allocator.
template <class P>
concept loading_pipeline = requires {
  typename P::backend_type;
  typename P::allocator_type;
} && backend_policy<typename P::backend_type> && allocator_policy<typename P::allocator_type>;

/// @brief Where load() puts the tensors.
enum class load_target_memory {
  device,  ///< device memory of the pipeline's backend
  host,    ///< pageable host memory
};

namespace detail {

template <backend_policy Backend, allocator_policy Allocator>
struct load_job : lris::detail::ring_job<load_job<Backend, Allocator>, Backend, Allocator,
                                         lris::detail::job_base> {
  const checkpoint* ck = nullptr;
  std::vector<load_target> targets;
  std::vector<load_chunk> plan;
  io::io_overrides io;
  std::vector<std::vector<std::uint64_t>> hashes;  // per verified target, per block
  std::mutex io_mutex;
  io::io_stats io_total;
  std::vector<std::size_t> storage;  // per shard: its disk at the broker

  void process(std::size_t i, lris::detail::staging_slot<Backend>& slot) {
    const load_chunk& c = plan[i];
    const io::file& f = ck->shards()[c.shard].file;
    auto stop = [st = this->state.get()] { return st->should_stop(); };
    auto& engine = this->core->io();
    auto& pace = this->pace;
    const std::size_t disk = storage.empty() ? lris::detail::pacing::none : storage[c.shard];
    this->retire(slot);
    if (c.straight_to_host) {
      const load_move& m = c.moves.front();
      auto tokens = pace.hold(disk, m.bytes);
      note(engine.read(f, c.reads.front().file_offset,
                       {targets[m.target].dst + m.target_offset, m.bytes}, stop, io));
      this->state->add_progress(m.bytes);
      return;
    }
    this->core->register_for_io(slot);
    for (const load_read& r : c.reads) {
      auto tokens = pace.hold(disk, r.bytes);
      note(engine.read(f, r.file_offset, {slot.data + r.slot_offset, r.bytes}, stop, io));
    }
    auto& be = this->core->backend;
    auto& s = this->stream_for(i);
    std::uint64_t host_bytes = 0, device_bytes = 0;
    // The chunk's CPU work and its DMA, each under one set of tokens.
    for (const load_move& m : c.moves) (targets[m.target].device ? device_bytes : host_bytes) += m.bytes;
    auto cpu = pace.hold(pace.host, host_bytes);
    auto link = pace.reserve(pace.link, device_bytes);
    for (const load_move& m : c.moves) {
      const load_target& tg = targets[m.target];
      const std::byte* src = slot.data + m.slot_offset;
      if (tg.verify) {
        auto& h = hashes[m.target];
        for (std::uint64_t off = 0; off < m.bytes; off += default_checksum_block) {
          const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(default_checksum_block, m.bytes - off));
          h[(m.target_offset + off) / default_checksum_block] = block_hash(src + off, n);
        }
      }
      // Elements from the first of the move; chunks of converted tensors hold whole elements.
      const std::uint64_t count = m.bytes * 8 / bits_of(tg.from);
      const std::uint64_t first = m.target_offset * 8 / bits_of(tg.from);
      std::byte* dst = tg.dst + (tg.converts() ? first * bits_of(tg.to) / 8 : m.target_offset);
      if (!tg.device) {
        if (tg.converts()) {
          convert(src, tg.from, dst, tg.to, static_cast<std::size_t>(count));
        } else {
          std::memcpy(dst, src, static_cast<std::size_t>(m.bytes));
        }
      } else if (!tg.converts()) {
        be.copy_async(dst, src, static_cast<std::size_t>(m.bytes), copy_kind::host_to_device, s);
      } else {
        // The raw bytes to device scratch by DMA, converted there; without room for scratch,
        // the kernel reads the pinned slot over the link.
        const std::byte* from = src;
        if (std::byte* scratch = this->device_scratch(slot)) {
          from = scratch + m.slot_offset;
          be.copy_async(scratch + m.slot_offset, src, static_cast<std::size_t>(m.bytes),
                        copy_kind::host_to_device, s);
        }
        if constexpr (convert_backend<Backend>) {
          be.convert_async(dst, tg.to, from, tg.from, static_cast<std::size_t>(count), s);
        }
      }
    }
    pace.release_after(pace.link, std::move(link), be, *this->core->events, s);
    if (host_bytes > 0) this->state->add_progress(host_bytes);
    if (device_bytes > 0) this->mark_pending(slot, s, static_cast<std::size_t>(device_bytes));
  }

 private:
  friend struct lris::detail::ring_job<load_job, Backend, Allocator, lris::detail::job_base>;
  void on_finish() noexcept {}
  void note(const io::io_stats& st) {
    std::lock_guard lock(io_mutex);
    io_total.add_part(st);
  }
};

// The memory space a destination callback returns.
template <class Fn>
using destination_space =
    typename std::invoke_result_t<Fn&, const tensor_request&>::space_type;

// load_into() for tensors already selected (load() selects once, to size its block first).
template <class Pipeline, class DestFn>
loaded_checkpoint load_selected(Pipeline& p, const checkpoint& ck,
                                const std::vector<selected_tensor>& selected, DestFn&& dest,
                                const load_options& o) {
  using Backend = typename Pipeline::backend_type;
  using Allocator = typename Pipeline::allocator_type;
  using Space = destination_space<DestFn>;
  constexpr bool on_device = has_property<Space, property::device_accessible> &&
                             !has_property<Space, property::host_accessible>;
  if constexpr (!std::is_same_v<Space, host_space>) {
    static_assert(std::is_same_v<typename Space::backend_type, Backend>,
                  "safetensors::load_into: the destination memory is of another backend than "
                  "the pipeline's");
  }
  const auto start = std::chrono::steady_clock::now();
  const auto& core = p.core();
  auto& engine = core->io();

  loaded_checkpoint out;
  out.metadata = ck.metadata();
  auto job = std::make_shared<load_job<Backend, Allocator>>();
  std::vector<const selected_tensor*> verified;
  std::uint64_t file_bytes = 0;
  for (const auto& s : selected) {
    const memory_span<Space, std::byte> span = dest(std::as_const(s.request));
    if (span.data() == nullptr && s.request.bytes > 0) continue;  // skipped by the caller
    LRIS_EXPECTS(span.size() >= s.request.bytes,
                 "load {}: tensor \"{}\" needs {} bytes; the destination has {}",
                 ck.shards()[s.request.source->shard].file.path().string(), s.request.name,
                 s.request.bytes, span.size());
    LRIS_EXPECTS(!on_device || span.device() == p.backend().device(),
                 "load {}: tensor \"{}\": the destination is on device {} but the pipeline "
                 "drives device {}",
                 ck.shards()[s.request.source->shard].file.path().string(), s.request.name,
                 span.device(), p.backend().device());
    if constexpr (on_device && !convert_backend<Backend>) {
      if (s.request.type != s.request.source->info->type) {
        throw unsupported(fmt::format(
            "load {}: tensor \"{}\": {} cannot convert element types on the device",
            ck.shards()[s.request.source->shard].file.path().string(), s.request.name,
            Backend::name));
      }
    }
    load_target tg;
    tg.shard = s.request.source->shard;
    tg.file_offset = s.file_offset;
    tg.rows = s.rows;
    tg.row_bytes = s.row_bytes;
    tg.row_stride = s.row_stride;
    tg.from = s.request.source->info->type;
    tg.to = s.request.type;
    tg.dst = span.data();
    tg.device = on_device;
    tg.verify = s.verify;
    job->targets.push_back(tg);
    job->hashes.emplace_back(s.verify ? std::max<std::size_t>(1, (tg.bytes() + default_checksum_block - 1) / default_checksum_block) : 0);
    verified.push_back(s.verify ? &s : nullptr);
    file_bytes += tg.bytes();
    loaded_tensor t;
    t.name = std::string(s.request.name);
    t.type = s.request.type;
    t.shape = s.request.shape;
    t.data = span.data();
    t.bytes = s.request.bytes;
    t.location = {on_device, on_device ? Backend::name : std::string_view("host"),
                  on_device ? p.backend().device() : 0};
    out.report.converted += tg.converts() ? 1 : 0;
    out.report.memory_bytes += t.bytes;
    out.tensors.push_back(std::move(t));
  }
  out.report.tensors = out.tensors.size();
  out.report.file_bytes = file_bytes;
  out.report.path = on_device ? "file -> pinned slots -> device (DMA)"
                              : "file -> host memory (through pinned slots where converted)";

  // Direct or buffered, decided once for the whole checkpoint, as pipeline::read does.
  io::direct_mode mode = o.transfer.io.direct.value_or(engine.options().direct);
  std::string mode_reason;
  if (mode == io::direct_mode::automatic) {
    double resident = 0, weight = 0;
    for (const auto& sh : ck.shards()) {
      const std::uint64_t n = sh.header.file_bytes - sh.header.data_offset;
      if (n == 0) continue;
      resident += std::max(0.0, io::io_engine::resident_fraction(sh.file, sh.header.data_offset, n)) * n;
      weight += n;
    }
    auto choice = io::io_engine::choose_by_residency(weight > 0 ? resident / weight : 1.0,
                                                     "the files");
    mode = choice.cold ? io::direct_mode::always : io::direct_mode::never;
    mode_reason = std::move(choice.reason);
  }
  const transfer_plan tp = p.template plan_for<device_space<Backend>, host_space>(
      static_cast<std::size_t>(std::max<std::uint64_t>(file_bytes, 1)), o.transfer);
  std::size_t align = 4096;
  for (const auto& sh : ck.shards()) align = std::max(align, sh.file.direct_alignment());
  std::size_t chunk = o.transfer.chunk_bytes > 0 ? o.transfer.chunk_bytes : tp.chunk_bytes;
  unsigned workers = tp.workers;
  if (mode != io::direct_mode::never && o.transfer.chunk_bytes == 0 && o.transfer.workers == 0) {
    const auto d = exec::direct_io_chunks(engine.queue_depth(o.transfer.io),
                                          engine.options().block_bytes, tp.workers);
    chunk = d.chunk_bytes;
    workers = d.workers;
  }
  // Whole hash blocks and O_DIRECT blocks; no larger than the data (small checkpoints get
  // small slots) or the staging ring.
  const std::size_t unit = std::lcm(align, default_checksum_block);
  chunk = std::min<std::uint64_t>(chunk, (file_bytes + unit - 1) / unit * unit);
  chunk = exec::whole_units(chunk, unit, core->ring.max_bytes() - align);

  job->ck = &ck;
  job->io = o.transfer.io;
  job->io.direct = mode;
  job->plan = plan_chunks(job->targets, chunk, align, default_checksum_block);
  out.report.chunks = job->plan.size();
  out.report.chunk_bytes = chunk;
  if (!job->plan.empty()) {
    job->state = std::make_shared<lris::detail::transfer_state>(file_bytes, o.on_progress);
    job->chunks = job->plan.size();
    job->core = core;
    job->kind = copy_kind::host_to_device;
    core->pace(job->pace, copy_kind::host_to_device, o.transfer);
    if (core->broker) {
      for (const auto& shard : ck.shards()) job->storage.push_back(core->storage_resource(shard.file.fd()));
    }
    job->streams = std::max(1u, tp.streams);
    job->slots = core->ring.acquire(
        std::min<std::size_t>({std::max(1u, tp.ring_depth), std::size_t{2} * workers, job->chunks}),
        chunk + align);
    out.report.staging_bytes = job->slots.size() * (chunk + align);
    out.report.workers = static_cast<unsigned>(
        std::min<std::size_t>({workers, job->chunks, job->slots.size()}));
    lris::detail::start_workers(job, out.report.workers, core->ctx, o.transfer.priority,
                                /*blocking_io=*/true);
    const transfer_stats st = transfer(job->state).wait();  // rethrows the first error
    out.report.token_waits = st.token_waits;
    out.report.throttle = st.throttle;
  }
  // Each checked tensor's hash: its blocks' hashes combined (an empty one has no chunk).
  for (std::size_t i = 0; i < job->targets.size(); ++i) {
    if (verified[i] == nullptr) continue;
    const auto& h = job->hashes[i];
    const std::uint64_t got = job->targets[i].bytes() == 0 ? block_hash(nullptr, 0)
                                                           : combine_block_hashes(h.data(), h.size());
    const std::uint64_t want = verified[i]->expected_checksum;
    if (got != want) checksum_mismatch(ck, *verified[i]->request.source, want, got);
    ++out.report.verified;
  }
  out.report.files_verified = check_sha256(engine, ck, o);
  if (!mode_reason.empty()) job->io_total.mode_reason = mode_reason;
  out.report.io = job->io_total.mode.empty() ? std::string() : job->io_total.summary();
  out.report.io_direct_bytes = job->io_total.direct_bytes;
  out.report.io_buffered_bytes = job->io_total.buffered_bytes;
  out.report.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

}  // namespace detail

/// @brief Loads the tensors `o` selects from `ck` into memory the caller supplies: `dest` is
/// called once per tensor, in checkpoint order, before anything is read, and returns a
/// memory_span<Space, std::byte> of at least request.bytes (host, pinned or device memory of
/// the pipeline's backend; the same Space for every tensor), or a null span to skip the
/// tensor. Blocks until every byte has landed. The returned tensors have no lease: the memory
/// stays the caller's.
/// @throws lris::invalid_argument naming the tensor for a span too small; lris::cancelled when
/// o.on_progress cancelled; lris::integrity_error for a checksum or SHA-256 mismatch;
/// lris::io_error naming the file and offset for a failed read.
template <loading_pipeline Pipeline, class DestFn>
loaded_checkpoint load_into(Pipeline& p, const checkpoint& ck, DestFn&& dest,
                            const load_options& o = {}) {
  return detail::load_selected(p, ck, detail::select_tensors(ck, o), std::forward<DestFn>(dest), o);
}

/// @brief Loads the tensors `o` selects from `ck` into memory LRIS allocates: one block of
/// device memory of the pipeline's backend (or of pageable host memory, on huge pages where
/// the machine has them), every tensor 256-byte
/// aligned in it. Each tensor leases the block (loaded_tensor::lease); it is freed when the
/// last of them is gone.
template <loading_pipeline Pipeline>
loaded_checkpoint load(Pipeline& p, const checkpoint& ck, const load_options& o = {},
                       load_target_memory where = load_target_memory::device) {
  using Backend = typename Pipeline::backend_type;
  constexpr std::size_t alignment = 256;
  const auto selected = detail::select_tensors(ck, o);
  std::uint64_t total = 0;
  for (const auto& s : selected) total += (s.request.bytes + alignment - 1) / alignment * alignment;
  std::shared_ptr<void> block;
  if (total > 0 && where == load_target_memory::device) {
    device_allocator<Backend> alloc(p.backend());
    void* mem = alloc.allocate(static_cast<std::size_t>(total), alignment);
    block = std::shared_ptr<void>(mem, [alloc, total](void* q) mutable {
      alloc.deallocate(q, static_cast<std::size_t>(total), alignment);
    });
  } else if (total > 0) {
    // Huge pages where the machine has them: first touches of gigabytes of base pages would
    // cost more than the reads.
    huge_page_allocator alloc;
    void* mem = alloc.allocate(static_cast<std::size_t>(total), alignment);
    block = std::shared_ptr<void>(mem, [alloc, total](void* q) mutable {
      alloc.deallocate(q, static_cast<std::size_t>(total), alignment);
    });
  }
  auto* base = static_cast<std::byte*>(block.get());
  std::uint64_t at = 0;
  auto place = [&](const tensor_request& r) {
    std::byte* d = base + at;
    at += (r.bytes + alignment - 1) / alignment * alignment;
    return d;
  };
  loaded_checkpoint out =
      where == load_target_memory::device
          ? detail::load_selected(p, ck, selected, [&](const tensor_request& r) {
              return memory_span<device_space<Backend>, std::byte>(place(r), r.bytes,
                                                                   p.backend().device());
            }, o)
          : detail::load_selected(p, ck, selected, [&](const tensor_request& r) {
              return memory_span<host_space, std::byte>(place(r), r.bytes);
            }, o);
  for (auto& t : out.tensors) t.lease = block;
  return out;
}

}  // namespace lris::safetensors
