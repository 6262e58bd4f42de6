#pragma once
/// @file
/// @brief fanout::load from a host pool: the tensors one process filled into shared memory
/// delivered to N devices, each tensor-parallel rank getting only its slices; no file read.
///
///   lris::pool::host_pool pool = lris::pool::host_pool::attach("llama");
///   auto loaded = lris::fanout::load(std::span(gpus), pool, options);

#include <cstddef>
#include <cstdint>
#include <chrono>
#include <exception>
#include <span>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <lris/error.hpp>
#include <lris/fanout/fan_out_load.hpp>
#include <lris/fanout/fan_out_verify.hpp>
#include <lris/formats/detail/load_select.hpp>
#include <lris/pool/host_pool.hpp>
#include <lris/pool/load_pool.hpp>

namespace lris::fanout {

/// @brief Copies the ready tensors of `pool` (o.load.names, or all) onto every pipeline's
/// device at once, device d getting rank d % o.tp's parts by o.plan: pool::load on each device,
/// the copies of all devices in flight together. report.storage_bytes is 0.
/// With o.verify, every device's bytes are compared with the pool's, and the checksums of
/// devices of one rank with each other.
/// @throws what fanout::load(pipelines, checkpoint) throws for the devices and options, and
/// lris::invalid_argument for o.load.select (a pool is asked by names); what pool::load throws
/// for the tensors; lris::rank_timeout / lris::rank_error naming the device whose copy did not
/// finish in time or failed; lris::integrity_error (verify) naming the tensor and the device.
template <safetensors::loading_pipeline Pipeline>
fan_out_result load(std::span<Pipeline> pipelines, pool::host_pool& pool,
                    const fan_out_options& o = {}) {
  const auto start = std::chrono::steady_clock::now();
  const std::string what = fmt::format("from pool \"{}\"", pool.name());
  const std::vector<std::string> names = detail::device_names(pipelines, o, what);
  LRIS_EXPECTS(o.load.select.empty(), "fan-out load {}: select \"{}\": a pool's tensors are asked "
                                      "for by name (load.names)", what, o.load.select);
  const std::size_t n = pipelines.size();
  std::vector<pool::started_load> started;
  started.reserve(n);
  fan_out_result out;
  try {
    for (std::size_t d = 0; d < n; ++d) {
      const auto rank = static_cast<unsigned>(d % o.tp);
      started.push_back(pool::start_load(
          pool, pipelines[d], safetensors::load_target_memory::device, o.load.names,
          [&o, rank](const safetensors::tensor_info& t) { return o.plan.slice(t, rank, o.tp); }));
    }
    for (std::size_t d = 0; d < n; ++d) {
      if (started[d].copying.valid() && !detail::wait_for(started[d].copying, o.timeout)) {
        throw rank_timeout(fmt::format("fan-out load {}: device {} ({}, rank {} of {}) did not "
                                       "take its tensors within {} ms", what, d, names[d],
                                       d % o.tp, o.tp, o.timeout.count()),
                           static_cast<int>(d), names[d]);
      }
      try {
        out.devices.push_back(started[d].wait());
      } catch (const std::exception& e) {
        throw rank_error(fmt::format("fan-out load {}: device {} ({}, rank {} of {}): {}", what, d,
                                     names[d], d % o.tp, o.tp, e.what()),
                         static_cast<int>(d), names[d]);
      }
    }
  } catch (...) {
    // What is in flight finishes on its own, its memory (the tensors' block) kept until then.
    for (auto& s : started) {
      if (!s.copying.valid() || s.copying.poll()) continue;
      s.copying.on_complete([keep = s.loaded.tensors](std::exception_ptr) {});
      s.copying.detach();
    }
    throw;
  }
  auto& rep = out.report;
  rep.tp = o.tp;
  rep.path = fan_path::dma;
  rep.tensors = out.devices.front().tensors.size();
  for (std::size_t d = 0; d < n; ++d) {
    const auto& dev = out.devices[d];
    device_report dr;
    dr.device = names[d];
    dr.rank = static_cast<unsigned>(d % o.tp);
    dr.path = fmt::format("host pool \"{}\" -> {} (DMA where the pool is registered, else "
                          "through pinned slots)", pool.name(), names[d]);
    dr.tensors = dev.tensors.size();
    for (const auto& t : dev.tensors) {
      dr.bytes += t.bytes;
      dr.split += t.slice ? 1 : 0;
    }
    rep.devices.push_back(std::move(dr));
  }
  for (const auto& t : out.devices.front().tensors) {
    const auto held = pool.find(t.name);
    if (held) rep.file_bytes += held->bytes;
  }
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (o.verify) {
    detail::verify_devices(pipelines, out, o.tp, what, [&](std::string_view name) {
      const std::optional<pool::pool_tensor> found = pool.find(name);
      if (!found) {
        throw integrity_error(fmt::format("fan-out load {}: the devices hold tensor \"{}\", "
                                          "which the pool has not (any longer)", what, name));
      }
      const pool::pool_tensor& held = *found;
      return detail::source_bytes{{std::string(held.name), held.type, held.shape, 0, held.bytes},
                                  held.data, "the pool's"};
    });
  }
  return out;
}

}  // namespace lris::fanout
