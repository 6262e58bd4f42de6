#pragma once
/// @file
/// @brief fanout::load: a safetensors checkpoint read once from storage and delivered to N
/// devices, each getting the whole of every replicated tensor and only its slice of each
/// tensor split among tensor-parallel ranks.
///
///   std::vector<lris::pipeline<lris::auto_select, lris::cuda_backend>> gpus;
///   for (int d = 0; d < 2; ++d) gpus.emplace_back(lris::auto_select{}, lris::cuda_backend(d));
///   lris::fanout::fan_out_options o;
///   o.tp = 2;
///   o.plan = lris::fanout::sharding::llama();
///   auto loaded = lris::fanout::load(std::span(gpus), ck, o);
///   // loaded.devices[d].tensors: device d's tensors (its slices), leased like safetensors::load's
///
/// How the bytes go (the plan: fanout/fan_out_plan.hpp; who moves them, and owns the slots and
/// the devices' rooms for chunks: fanout/detail/chunk_mover.hpp): chunks of the files are read in file order by
/// the first pipeline's io engine into pinned staging slots of its ring (at most two per
/// device, within pipeline_config::max_staging_bytes); from each slot, every device's pipeline
/// copies its parts by DMA: byte ranges as copies, and the pieces of rows of a tensor split
/// along another dimension than 0 as one batched operation on the device (it reads just those
/// bytes over the link). Reads of later chunks go on while devices take the earlier ones.
/// On the peer and nccl routes each chunk crosses into one device only (chunk c into device
/// c mod N), and its slot is free as soon as it is there: the copies of up to half the slots'
/// chunks into their devices run at once, each over its own device's link, while the chunk
/// before them is broadcast (nccl) or taken by peer copies.

#include <algorithm>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include <lris/error.hpp>
#include <lris/exec/file_io.hpp>
#include <lris/exec/sizing.hpp>
#include <lris/fanout/fan_out_plan.hpp>
#include <lris/fanout/fan_out_report.hpp>
#include <lris/fanout/fan_out_verify.hpp>
#include <lris/fanout/detail/chunk_mover.hpp>
#include <lris/fanout/detail/pick_route.hpp>
#include <lris/fanout/nccl.hpp>
#include <lris/fanout/route.hpp>
#include <lris/fanout/sharding.hpp>
#include <lris/formats/checkpoint.hpp>
#include <lris/formats/detail/load_select.hpp>
#include <lris/formats/load.hpp>
#include <lris/formats/load_options.hpp>
#include <lris/formats/loaded_tensor.hpp>
#include <lris/formats/verify.hpp>
#include <lris/memory/device_allocator.hpp>
#include <lris/transfer/transfer.hpp>

namespace lris::fanout {

/// @brief What a fan-out loads and how.
struct fan_out_options {
  /// Which tensors (names, select), the chunk size, io settings and priority (transfer), and
  /// progress (on_progress: bytes delivered to all devices, of all they receive). Conversion,
  /// slices and checksums of single loads are not taken here: the plan slices.
  safetensors::load_options load;
  /// Tensor-parallel ranks: device d holds rank d % tp (several groups of tp devices each get
  /// the same slices). The number of devices must be a multiple of it.
  unsigned tp = 1;
  /// Which tensors are split among the ranks, and how; tensors it does not name are replicated.
  sharding plan;
  /// After the load, compare every device's bytes with the file (read again) and the
  /// checksums of each tensor across the devices that hold the same part of it (fanout::verify,
  /// which may also be called later).
  bool verify = false;
  /// How long one device may take for one chunk's copies before the load gives up with
  /// lris::rank_timeout naming it. Zero: no limit. When the load fails (that way or another),
  /// copies that have not ended within a second are left to finish on their own: the error
  /// comes back while they may still hold their staging slots and device memory (kept until
  /// they end, never freed under them), so a load right after it may wait for the slots.
  std::chrono::milliseconds timeout = std::chrono::minutes(5);
  /// The route: fan_path::automatic chooses it from the links between the devices
  /// (choose_route: peer where every pair has NVLink, else dma; NVML tells NVIDIA GPUs'
  /// links; NCCL only when asked for); fan_path::peer needs every pair of devices
  /// to reach each other's memory, fan_path::nccl a GPU backend and NCCL (RCCL). One device
  /// with fan_path::automatic is a plain load (safetensors::load); the other routes take the
  /// chunked route even then.
  fan_path path = fan_path::automatic;
  /// The collective library the nccl route loads: empty for libnccl.so.2 (librccl.so.1 on
  /// HIP) where the dynamic loader finds it; else a file name or path (the libnccl.so.2 of a
  /// PyTorch wheel, say).
  std::string nccl_library;
};

namespace detail {

// The devices' names ("cuda:1"), after the checks every fan-out makes (`what` names the
// source in messages).
template <class Pipeline>
std::vector<std::string> device_names(std::span<Pipeline> pipelines, const fan_out_options& o,
                                      const std::string& what) {
  using Backend = typename Pipeline::backend_type;
  const std::size_t n = pipelines.size();
  LRIS_EXPECTS(n > 0, "fan-out load {}: no device to load onto", what);
  LRIS_EXPECTS(o.tp >= 1 && n % o.tp == 0,
               "fan-out load {}: {} devices are not a multiple of {} tensor-parallel ranks", what,
               n, o.tp);
  LRIS_EXPECTS(!o.load.convert_to && !o.load.slice && o.load.expected_checksums.empty() &&
                   o.load.expected_sha256.empty() && !o.load.on_placed,
               "fan-out load {}: convert_to, slice, expected_checksums, expected_sha256 and "
               "on_placed are options of a load onto one device (a fan-out slices by its plan, "
               "and checks with verify)", what);
  std::vector<std::string> names(n);
  for (std::size_t d = 0; d < n; ++d) {
    names[d] = fmt::format("{}:{}", Backend::name, pipelines[d].backend().device());
    for (std::size_t e = 0; e < d; ++e) {
      LRIS_EXPECTS(names[e] != names[d], "fan-out load {}: device {} is named twice", what,
                   names[d]);
    }
  }
  return names;
}

}  // namespace detail

/// @brief Loads the tensors `o` selects from `ck` onto every pipeline's device, reading each
/// byte from storage once. Device d (pipelines[d]) is tensor-parallel rank d % o.tp and gets
/// the parts o.plan gives that rank; its tensors lie in one block of its memory, each 256-byte
/// aligned, leased as safetensors::load's are. Blocks until every device has its bytes.
/// @throws lris::invalid_argument for no pipelines, a device named twice, devices not a
/// multiple of tp, or options a fan-out does not take (naming them); what o.plan throws for a
/// tensor it cannot split; lris::rank_error naming the device whose copies failed, and why;
/// lris::rank_timeout naming the device that did not finish a chunk within o.timeout;
/// lris::cancelled when on_progress cancelled; lris::integrity_error (verify) naming the
/// tensor, the device and the first byte that differs; lris::io_error for a failed read.
template <safetensors::loading_pipeline Pipeline>
fan_out_result load(std::span<Pipeline> pipelines, const safetensors::checkpoint& ck,
                    const fan_out_options& o = {}) {
  using Backend = typename Pipeline::backend_type;
  const auto start = std::chrono::steady_clock::now();
  const std::size_t n = pipelines.size();
  const std::string file = ck.path().string();
  const std::vector<std::string> names = detail::device_names(pipelines, o, file);

  // One device, no route asked for: nothing to fan out, and a plain load is the fastest way
  // onto it (the chunked route below costs plans and waits per chunk).
  if (n == 1 && o.path == fan_path::automatic) {
    safetensors::load_options lo;
    lo.names = o.load.names;
    lo.select = o.load.select;
    lo.transfer = o.load.transfer;
    lo.on_progress = o.load.on_progress;
    fan_out_result out;
    out.devices.push_back(safetensors::load(pipelines.front(), ck, lo));
    auto& one = out.devices.front();
    auto& rep = out.report;
    rep.seconds = one.report.seconds;
    rep.tensors = one.report.tensors;
    rep.file_bytes = one.report.file_bytes;
    rep.storage_bytes = one.report.io_direct_bytes + one.report.io_buffered_bytes;
    rep.chunks = one.report.chunks;
    rep.chunk_bytes = one.report.chunk_bytes;
    rep.staging_bytes = one.report.staging_bytes;
    rep.io = one.report.io;
    rep.path = fan_path::dma;
    device_report dr;
    dr.device = names.front();
    dr.bytes = one.report.memory_bytes;
    dr.tensors = one.tensors.size();
    dr.path = fmt::format("file -> pinned slots -> {} (DMA; one device: a plain load)", dr.device);
    if (o.verify) dr.verified = safetensors::verify(pipelines.front(), ck, one);
    one.report.verified = dr.verified;
    rep.devices.push_back(std::move(dr));
    return out;
  }

  // Each device's tensors: the same in the same order, sliced for its rank.
  std::vector<std::vector<safetensors::detail::selected_tensor>> sel(n);
  for (std::size_t d = 0; d < n; ++d) {
    safetensors::load_options od;
    od.names = o.load.names;
    od.select = o.load.select;
    const auto rank = static_cast<unsigned>(d % o.tp);
    od.slice = [&o, rank](const safetensors::tensor_info& t) { return o.plan.slice(t, rank, o.tp); };
    sel[d] = safetensors::detail::select_tensors(ck, od);
  }
  const std::size_t count = sel[0].size();

  // One block per device, every tensor 256-byte aligned in it.
  constexpr std::size_t alignment = 256;
  std::vector<std::shared_ptr<void>> blocks(n);
  std::vector<std::vector<std::uint64_t>> offsets(n);
  for (std::size_t d = 0; d < n; ++d) {
    std::uint64_t total = 0;
    for (const auto& s : sel[d]) {
      offsets[d].push_back(total);
      total += (s.request.bytes + alignment - 1) / alignment * alignment;
    }
    if (total == 0) continue;
    device_allocator<Backend> alloc(pipelines[d].backend());
    void* mem = nullptr;
    try {
      mem = alloc.allocate(static_cast<std::size_t>(total), alignment);
    } catch (const out_of_memory& e) {
      throw out_of_memory(fmt::format("fan-out load {}: device {} ({}, rank {} of {}) has no "
                                      "room for its {} bytes of tensors: {}", file, d, names[d],
                                      d % o.tp, o.tp, total, e.what()),
                          e.requested());
    }
    blocks[d] = std::shared_ptr<void>(mem, [alloc, total](void* q) mutable {
      alloc.deallocate(q, static_cast<std::size_t>(total), alignment);
    });
  }

  std::vector<fan_tensor> tensors;
  tensors.reserve(count);
  std::uint64_t file_bytes = 0;
  for (std::size_t i = 0; i < count; ++i) {
    const auto& ref = *sel[0][i].request.source;
    fan_tensor t{ref.shard, ck.file_offset(ref), ref.info->bytes(), {}};
    for (std::size_t d = 0; d < n; ++d) {
      const auto& s = sel[d][i];
      t.parts.push_back({s.file_offset - t.file_offset, s.rows, s.row_bytes, s.row_stride,
                         static_cast<std::byte*>(blocks[d].get()) + offsets[d][i]});
    }
    file_bytes += t.bytes;
    tensors.push_back(std::move(t));
  }

  // Chunks: what the io engine would read at once for a plain load (its chunk on each of its
  // workers), within the staging bound shared by at most two slots per device.
  Pipeline& reader = pipelines.front();
  const safetensors::detail::checkpoint_reads reads =
      safetensors::detail::reads_of(reader, ck, o.load.transfer);
  const transfer_sizes& sizes = reads.sizes;
  const exec::file_io_choice& io = reads.io;
  const std::size_t align = reads.align;
  // A chunk is what the io engine reads at once for a plain load (its chunk on each of its
  // workers); at most two slots per device, within the pipeline's staging bound, whatever the
  // shard sizes. (On the H200, warm, one device: chunks of 64 MiB in 2 slots ran 0.76 as fast
  // as a plain load; the io engine's 4 MiB chunks in as many slots as a plain load's, 0.66:
  // each chunk costs plans and waits. A load onto one device is a plain load: see above.)
  const unsigned workers = std::max(1u, io.workers);
  const std::size_t depth_wanted = std::clamp<std::size_t>(sizes.ring_depth, 2, 2 * n);
  const std::size_t bound = reader.max_slot_bytes();
  std::size_t chunk = std::min<std::uint64_t>(
      std::uint64_t{io.chunk_bytes} * workers,
      (std::max<std::uint64_t>(file_bytes, 1) + align - 1) / align * align);
  chunk = exec::whole_units(chunk, align, std::max(align, bound / depth_wanted - align));
  const fan_plan plan = plan_fan_out(std::move(tensors), n, chunk, align);

  fan_out_result out;
  auto& rep = out.report;
  // The route: asked for, or chosen from the links between the devices.
  detail::picked_route picked =
      detail::pick_route(pipelines, names, o.path, o.nccl_library, file);
  const fan_path route = picked.path;
  rep.route_reason = std::move(picked.reason);
  if (picked.nccl) rep.nccl = picked.nccl->describe();
  const bool peer = route == fan_path::peer;
  const bool collective = route == fan_path::nccl;

  rep.tensors = count;
  rep.file_bytes = file_bytes;
  rep.storage_bytes = plan.storage_bytes();
  rep.chunks = plan.chunks.size();
  rep.chunk_bytes = chunk;
  rep.tp = o.tp;
  rep.io = io.reason;
  rep.path = route;

  // The bytes: read once, each chunk to every device (detail/chunk_mover.hpp).
  std::vector<char> batched(n, 0);  // per device: small pieces went as one batched operation
  {
    detail::chunk_mover<Pipeline> mover({.pipelines = pipelines,
                                         .ck = &ck,
                                         .plan = &plan,
                                         .names = &names,
                                         .file = file,
                                         .load = &o.load,
                                         .tp = o.tp,
                                         .timeout = o.timeout,
                                         .route = route,
                                         .nccl = picked.nccl,
                                         .io = io,
                                         .workers = workers,
                                         .align = align,
                                         .depth = depth_wanted,
                                         .blocks = blocks});
    rep.staging_bytes = mover.staging_bytes();
    rep.scratch_bytes = mover.scratch_bytes();
    mover.run();
    rep.nccl_init_seconds = mover.nccl_init_seconds();
    for (std::size_t d = 0; d < n; ++d) batched[d] = mover.batched(d) ? 1 : 0;
  }

  // The tensors each device holds.
  out.devices.resize(n);
  for (std::size_t d = 0; d < n; ++d) {
    auto& dev = out.devices[d];
    dev.metadata = ck.metadata();
    device_report dr;
    dr.device = names[d];
    dr.rank = static_cast<unsigned>(d % o.tp);
    const char* rows = batched[d] ? "; pieces of 256 KiB or less (small tensors, rows of split "
                                    "ones) as batched copies"
                                  : "";
    dr.path = peer ? fmt::format("file -> pinned slots -> one chunk in {} into {} by DMA, the "
                                 "others by peer copies from the device that took them{}",
                                 n, names[d], rows)
              : collective
                  ? fmt::format("file -> pinned slots -> one chunk in {} into {} by DMA, the "
                                "others broadcast to it by {}; its parts copied on the "
                                "device{}", n, names[d], rep.nccl, rows)
                  : fmt::format("file -> pinned slots -> {} (DMA{})", names[d], rows);
    for (std::size_t i = 0; i < count; ++i) {
      const auto& s = sel[d][i];
      safetensors::loaded_tensor t;
      t.name = std::string(s.request.name);
      t.type = s.request.type;
      t.shape = s.request.shape;
      t.slice = s.request.slice;
      t.data = static_cast<std::byte*>(blocks[d].get()) + offsets[d][i];
      t.bytes = s.request.bytes;
      t.location = {true, Backend::name, pipelines[d].backend().device()};
      t.lease = blocks[d];
      dr.bytes += t.bytes;
      dr.split += s.request.slice ? 1 : 0;
      dev.tensors.push_back(std::move(t));
    }
    dr.tensors = count;
    dev.report.tensors = count;
    dev.report.memory_bytes = dr.bytes;
    dev.report.file_bytes = dr.bytes;
    dev.report.path = dr.path;
    dev.report.chunks = plan.chunks.size();
    dev.report.chunk_bytes = chunk;
    rep.devices.push_back(std::move(dr));
  }

  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (o.verify) verify(pipelines, ck, out);
  for (auto& dev : out.devices) dev.report.seconds = rep.seconds;
  return out;
}

}  // namespace lris::fanout
