#pragma once
/// @file
/// @brief Loading safetensors checkpoints into any memory of a pipeline's backend, at the
/// speed of the disk or the page cache.
///
/// The files are read in order, in chunks that fill the pipeline's pinned staging slots (so
/// host memory stays bounded by pipeline_config::max_staging_bytes); neighbouring tensors share
/// chunks. Data not in the page cache is read with O_DIRECT. From a slot, each tensor's bytes
/// go to the device by DMA (converted by a kernel when asked) or to host memory by the CPU; a
/// chunk of host tensors laid out as in the file is read straight into them.
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
#include <system_error>
#include <numeric>
#include <optional>
#include <utility>
#include <chrono>
#include <cstdlib>
#include <type_traits>
#include <vector>

#include <fmt/format.h>

#include <lris/concepts/memory_property.hpp>
#include <lris/concepts/convert_backend.hpp>
#include <lris/error.hpp>
#include <lris/exec/cpu_budget.hpp>
#include <lris/exec/sizing.hpp>
#include <lris/exec/file_io.hpp>
#include <lris/exec/plan.hpp>
#include <lris/formats/checkpoint.hpp>
#include <lris/element/checksum.hpp>
#include <lris/element/convert.hpp>
#include <lris/formats/detail/load_plan.hpp>
#include <lris/formats/detail/load_select.hpp>
#include <lris/formats/load_options.hpp>
#include <lris/formats/loaded_tensor.hpp>
#include <lris/memory/device_allocator.hpp>
#include <lris/memory/huge_page_allocator.hpp>
#include <lris/memory/page_populator.hpp>
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

// A chunk of the load as steps of a plan: the file's bytes into the slot (or straight into
// host memory), then each tensor's part of them to its memory, converted and hashed as asked.
inline void add_chunk(exec::plan& plan, const load_chunk& c, const std::vector<load_target>& targets,
                      std::vector<std::vector<std::uint64_t>>& hashes) {
  const auto file = static_cast<std::uint32_t>(c.shard);
  if (c.straight_to_host) {
    // One read of the whole chunk: its tensors lie in memory as in the file.
    const load_move& m = c.moves.front();
    const load_target& tg = targets[m.target];
    exec::step s{exec::place::in_file(file, c.reads.front().file_offset),
                 exec::place::host(tg.dst + m.target_offset),
                 static_cast<std::size_t>(c.reads.front().bytes)};
    // A verified tensor has chunks of its own, cut at hash blocks from its first byte.
    if (tg.verify) s.check = hashes[m.target].data() + m.target_offset / default_checksum_block;
    plan.add(s);
    plan.cut();
    return;
  }
  for (const load_read& r : c.reads) {
    plan.add({exec::place::in_file(file, r.file_offset), exec::place::in_slot(r.slot_offset),
              static_cast<std::size_t>(r.bytes)});
  }
  for (const load_gather& g : c.gathers) {
    plan.add({exec::place::in_slot(g.from), exec::place::in_slot(g.to),
              static_cast<std::size_t>(g.bytes)});
  }
  for (const load_move& m : c.moves) {
    const load_target& tg = targets[m.target];
    // Elements from the first of the move; chunks of converted tensors hold whole elements.
    const std::uint64_t first = m.target_offset * 8 / bits_of(tg.from);
    std::byte* dst = tg.dst + (tg.converts() ? first * bits_of(tg.to) / 8 : m.target_offset);
    exec::step s{exec::place::in_slot(m.slot_offset),
                 tg.device ? exec::place::on_device(dst, tg.device_index) : exec::place::host(dst),
                 static_cast<std::size_t>(m.bytes)};
    if (tg.converts()) {
      s.convert = true;
      s.from_type = tg.from;
      s.to_type = tg.to;
    }
    if (tg.verify) s.check = hashes[m.target].data() + m.target_offset / default_checksum_block;
    plan.add(s);
  }
  plan.cut();
}

// How a checkpoint's files are read: the pipeline's sizes for the call, the io engine's
// choice for the files' data (direct or buffered, decided once for all of them, as
// pipeline::read decides it), and the files' O_DIRECT offset and memory alignments.
struct checkpoint_reads {
  transfer_sizes sizes;
  exec::file_io_choice io;
  std::size_t align = 4096;
  std::size_t memory_align = 1;
};
template <class Pipeline>
checkpoint_reads reads_of(Pipeline& p, const checkpoint& ck, const transfer_options& t) {
  checkpoint_reads r;
  r.sizes = p.sizes(t);
  std::vector<exec::file_range> ranges;
  for (const auto& sh : ck.shards()) {
    ranges.push_back({&sh.file, sh.header.data_offset, sh.header.file_bytes - sh.header.data_offset});
    r.align = std::max(r.align, sh.file.direct_alignment());
    r.memory_align = std::max(r.memory_align, sh.file.direct_memory_alignment());
  }
  const disk_profile* disk =
      ck.shards().empty() ? nullptr : &p.cold_reads(ck.shards().front().file, t.cold_reads);
  r.io = exec::file_io_for(p.io(), ranges, t.io, true, "the files", r.sizes.chunk_bytes,
                           r.sizes.workers, t.chunk_bytes != 0 || t.workers != 0, disk);
  return r;
}

// The memory space a destination callback returns.
template <class Fn>
using destination_space =
    typename std::invoke_result_t<Fn&, const tensor_request&>::space_type;

// load_into() for tensors already selected (load() selects once, to size its block first).
template <class Pipeline, class DestFn>
loaded_checkpoint load_selected(Pipeline& p, const checkpoint& ck,
                                const std::vector<selected_tensor>& selected, DestFn&& dest,
                                const load_options& o,
                                const std::shared_ptr<void>& lease = nullptr) {
  using Backend = typename Pipeline::backend_type;
  using Space = destination_space<DestFn>;
  constexpr bool on_device = has_property<Space, property::device_accessible> &&
                             !has_property<Space, property::host_accessible>;
  if constexpr (!std::is_same_v<Space, host_space>) {
    static_assert(std::is_same_v<typename Space::backend_type, Backend>,
                  "safetensors::load_into: the destination memory is of another backend than "
                  "the pipeline's");
  }
  const auto start = std::chrono::steady_clock::now();
  auto& engine = p.io();

  loaded_checkpoint out;
  out.metadata = ck.metadata();
  std::vector<load_target> targets;
  std::vector<std::vector<std::uint64_t>> hashes;  // per verified target, per block
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
    tg.device_index = on_device ? span.device() : 0;
    tg.verify = s.verify;
    targets.push_back(tg);
    hashes.emplace_back(s.verify ? std::max<std::size_t>(1, (tg.bytes() + default_checksum_block - 1) / default_checksum_block) : 0);
    verified.push_back(s.verify ? &s : nullptr);
    file_bytes += tg.bytes();
    loaded_tensor t;
    t.name = std::string(s.request.name);
    t.type = s.request.type;
    t.shape = s.request.shape;
    t.slice = s.request.slice;
    t.data = span.data();
    t.bytes = s.request.bytes;
    t.lease = lease;
    t.location = {on_device, on_device ? Backend::name : std::string_view("host"),
                  on_device ? p.backend().device() : 0};
    out.report.converted += tg.converts() ? 1 : 0;
    out.report.memory_bytes += t.bytes;
    out.tensors.push_back(std::move(t));
  }
  out.report.tensors = out.tensors.size();
  out.report.file_bytes = file_bytes;
  out.report.path = on_device ? "file -> pinned slots -> device (DMA)"
                              : "file -> host memory (straight where laid out as in the file, "
                                "else through pinned slots)";
  if (o.on_placed) o.on_placed(std::as_const(out.tensors));

  // Direct or buffered, decided once for the whole checkpoint, as pipeline::read decides it.
  const checkpoint_reads reads = reads_of(p, ck, o.transfer);
  const transfer_sizes& tp = reads.sizes;
  const exec::file_io_choice& io = reads.io;
  const std::size_t align = reads.align, memory_align = reads.memory_align;
  // Host memory filled from the disk (cold, or O_DIRECT as asked): the disk paces the reads,
  // and the destinations' pages are faulted in (allocated and zeroed by the kernel, where they
  // are fresh) ahead of them, in the order the reads reach them, on threads of their own, not
  // on the read path. Stopped and joined before this returns or throws.
  std::optional<page_populator> populate;
  if constexpr (std::is_same_v<Space, host_space>) {
    // usable_cpus() reads the cgroup's files: only for loads that start the populator.
    if ((io.cold || io.direct) && file_bytes > 0 && o.populate_threads.value_or(1) > 0) {
      const unsigned threads = o.populate_threads ? std::min(*o.populate_threads, usable_cpus())
                                                  : std::clamp(usable_cpus() / 8, 1u, 4u);
      try {
        populate.emplace(destinations_in_file_order(targets, out.tensors), threads);
      } catch (const std::system_error&) {
        // No thread to be had: the reads fault the pages in themselves, as without it.
      }
    }
  }
  // Whole hash blocks and O_DIRECT blocks; no larger than the data (small checkpoints get
  // small slots) or a staging slot.
  const std::size_t unit = std::lcm(align, default_checksum_block);
  std::size_t chunk = std::min<std::uint64_t>(io.chunk_bytes, (file_bytes + unit - 1) / unit * unit);
  chunk = exec::whole_units(chunk, unit, p.max_slot_bytes() - align);

  exec::plan plan;
  plan.shape = transfer_path::staged;
  for (const auto& sh : ck.shards()) plan.files.push_back(&sh.file);
  plan.io = o.transfer.io;
  plan.io.direct = io.mode;
  plan.io_reason = io.reason;
  plan.buffered_every = io.buffered_every;
  plan.slot_bytes = chunk + align;
  plan.streams = std::max(1u, tp.streams);
  plan.prio = o.transfer.priority;
  plan.budget_bytes = o.transfer.budget_bytes;
  plan.on_progress = o.on_progress;
  bool slots = false;
  for (const load_chunk& c : plan_chunks(targets, chunk, align, default_checksum_block,
                                         memory_align)) {
    add_chunk(plan, c, targets, hashes);
    slots = slots || !c.straight_to_host;
  }
  if (!slots) plan.slot_bytes = 0;  // every chunk reads straight into its tensors
  plan.workers = std::max(1u, io.workers);
  plan.ring_depth = static_cast<unsigned>(std::min<std::size_t>(
      {std::max(1u, tp.ring_depth), std::size_t{2} * plan.workers, plan.chunks()}));
  out.report.chunks = plan.chunks();
  out.report.chunk_bytes = chunk;
  const std::size_t plan_slot_bytes = plan.slot_bytes;
  if (plan.chunks() > 0) {
    transfer_stats st;
    try {
      st = p.run(std::move(plan)).wait();  // rethrows the first error
    } catch (const cancelled& e) {  // by the progress callback: which load, said here
      throw cancelled(fmt::format("load {}: {}", ck.path().string(), e.what()));
    }
    out.report.staging_bytes = st.ring_slots * plan_slot_bytes;
    out.report.workers = st.workers;
    out.report.token_waits = st.token_waits;
    out.report.throttle = st.throttle;
    out.report.io = st.io;
    out.report.io_direct_bytes = st.io_direct_bytes;
    out.report.io_buffered_bytes = st.io_buffered_bytes;
  }
  if (populate) {
    out.report.populate_threads = populate->threads();
    out.report.populated_bytes = populate->populated();
  }
  // Each checked tensor's hash: its blocks' hashes combined (an empty one has no chunk).
  for (std::size_t i = 0; i < targets.size(); ++i) {
    if (verified[i] == nullptr) continue;
    const auto& h = hashes[i];
    const std::uint64_t got = targets[i].bytes() == 0 ? block_hash(nullptr, 0)
                                                           : combine_block_hashes(h.data(), h.size());
    const std::uint64_t want = verified[i]->expected_checksum;
    if (got != want) checksum_mismatch(ck, *verified[i]->request.source, want, got);
    ++out.report.verified;
  }
  out.report.files_verified = check_sha256(engine, ck, o);
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
/// device memory of the pipeline's backend, every tensor 256-byte aligned in it; or one block
/// of pageable host memory (on huge pages where the machine has them) laid out as the files
/// are, so that reads go straight into the tensors with no copy: a tensor lies at the same
/// offset modulo 4096 (or the files' O_DIRECT alignment, when larger) as in its file, hence at
/// least aligned to its element size, as the safetensors format stores it; a tensor converted,
/// sliced, or at a file offset that is no multiple of its element size is 256-byte aligned.
/// Each tensor leases the block (loaded_tensor::lease); it is freed when the last of them is
/// gone.
template <loading_pipeline Pipeline>
loaded_checkpoint load(Pipeline& p, const checkpoint& ck, const load_options& o = {},
                       load_target_memory where = load_target_memory::device) {
  using Backend = typename Pipeline::backend_type;
  constexpr std::size_t alignment = 256;
  const bool host = where == load_target_memory::host;
  const auto selected = detail::select_tensors(ck, o);
  std::size_t modulus = 4096;
  for (const auto& sh : ck.shards()) modulus = std::max(modulus, sh.file.direct_alignment());
  std::vector<detail::layout_item> items;
  items.reserve(selected.size());
  for (const auto& s : selected) {
    const dtype type = s.request.source->info->type;
    const std::size_t element = std::max<std::size_t>(1, bits_of(type) / 8);
    items.push_back({s.request.source->shard, s.file_offset, s.request.bytes,
                     host && s.rows == 1 && s.request.type == type &&
                         s.file_offset % element == 0});
  }
  // Device memory: one tensor after another in checkpoint order, each 256-byte aligned (in
  // file order, later loads on an H200 read up to 3% slower in one measurement).
  detail::block_layout layout;
  if (host) {
    layout = detail::host_layout(items, modulus, alignment);
  } else {
    for (const auto& it : items) {
      layout.offsets.push_back(layout.bytes);
      layout.bytes += (it.bytes + alignment - 1) / alignment * alignment;
    }
  }
  const std::uint64_t total = layout.bytes;
  std::shared_ptr<void> block;
  if (total > 0 && !host) {
    device_allocator<Backend> alloc(p.backend());
    void* mem = alloc.allocate(static_cast<std::size_t>(total), alignment);
    block = std::shared_ptr<void>(mem, [alloc, total](void* q) mutable {
      alloc.deallocate(q, static_cast<std::size_t>(total), alignment);
    });
  } else if (total > 0) {
    // Huge pages where the machine has them: first touches of gigabytes of base pages would
    // cost more than the reads.
    huge_page_allocator alloc;
    void* mem = alloc.allocate(static_cast<std::size_t>(total), modulus);
    block = std::shared_ptr<void>(mem, [alloc, total, modulus](void* q) mutable {
      alloc.deallocate(q, static_cast<std::size_t>(total), modulus);
    });
  }
  auto* base = static_cast<std::byte*>(block.get());
  std::size_t next = 0;  // load_selected asks for the tensors in the order of `selected`
  auto place = [&](const tensor_request&) { return base + layout.offsets[next++]; };
  loaded_checkpoint out =
      !host ? detail::load_selected(p, ck, selected, [&](const tensor_request& r) {
                return memory_span<device_space<Backend>, std::byte>(place(r), r.bytes,
                                                                     p.backend().device());
              }, o, block)
            : detail::load_selected(p, ck, selected, [&](const tensor_request& r) {
                return memory_span<host_space, std::byte>(place(r), r.bytes);
              }, o, block);
  return out;
}

}  // namespace lris::safetensors
