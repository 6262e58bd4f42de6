#include "load_pool.hpp"

#include <chrono>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <lris/lris.hpp>
#include <lris/system/format_bytes.hpp>
#if LRIS_HAS_CUDA()
#include <lris/cuda.hpp>
#endif
#if LRIS_HAS_HIP()
#include <lris/hip.hpp>
#endif

#include "load_fan_out.hpp"
#include "measure.hpp"

namespace lris::tool {

namespace {

// Copies every ready tensor of `hp` into one block of `Backend`'s memory (device memory, or
// host memory for the host backend) as one batch, and reports.
template <class Backend>
int run(const pool_load_cli& c, pool::host_pool& hp, Backend be, bool device) {
  // Pinned for DMA in this process before the clock starts, as a device starts before it.
  std::optional<pool::pool_registration<Backend>> reg;
  if (device) {
    reg.emplace(hp, be, pool::pool_registration<Backend>::default_segment_bytes,
                probe_host().memlock.pinnable_bytes);
  }
  auto& p = default_pipeline<Backend>(device ? be.device() : 0);
  std::function<std::optional<safetensors::tensor_slice>(const safetensors::tensor_info&)> slice;
  if (c.tp > 1) {
    slice = [plan = tp_plan_of(c.tp_plan, c.tp), &c](const safetensors::tensor_info& t) {
      return plan.slice(t, c.rank, c.tp);
    };
  }
  const auto loaded = pool::load(hp, p, safetensors::load_target_memory::device, {}, slice);
  const auto& rep = loaded.report;
  std::size_t verified = 0;
  if (c.verify) {  // every tensor's bytes where they landed against its published checksum
    std::vector<std::byte> host;
    for (const auto& t : loaded.tensors) {
      const std::byte* landed = t.data;
      if (device) {
        host.resize(t.bytes);
        if (!host.empty()) {
          copy(as_host(host.data(), host.size()),
               memory_span<device_space<Backend>, const std::byte>(t.data, t.bytes, be.device()))
              .wait();
        }
        landed = host.data();
      }
      const pool::pool_tensor held = *hp.find(t.name);
      if (t.shape == held.shape && block_checksum(landed, t.bytes) != held.checksum) {
        throw integrity_error(fmt::format("load --pool {}: tensor \"{}\" landed with another "
                                          "checksum than the pool published", c.pool, t.name));
      }
      if (t.shape != held.shape) {  // a slice: its rows against the pool's bytes
        const safetensors::tensor_info info{std::string(held.name), held.type, held.shape, 0,
                                            held.bytes};
        const auto g = safetensors::detail::geometry_of(info, *slice(info), "load --pool");
        for (std::uint64_t r = 0; r < g.rows; ++r) {
          if (std::memcmp(landed + r * g.row_bytes, held.data + g.offset + r * g.row_stride,
                          g.row_bytes) != 0) {
            throw integrity_error(fmt::format("load --pool {}: tensor \"{}\": row {} of rank "
                                              "{}'s slice differs from the pool's bytes", c.pool,
                                              t.name, r, c.rank));
          }
        }
      }
      ++verified;
    }
  }
  const double gbps = rep.seconds > 0 ? static_cast<double>(rep.memory_bytes) / rep.seconds / 1e9 : 0;
  const pool::pin_report pin = reg ? reg->report() : pool::pin_report{};
  if (c.json) {
    nlohmann::json out{{"pool", c.pool},          {"device", c.device},
                       {"tensors", rep.tensors},  {"bytes", rep.memory_bytes},
                       {"seconds", rep.seconds},  {"gbps", gbps},
                       {"path", rep.path},        {"pinned", pin.pinned},
                       {"pin_segments", pin.segments}, {"pin_seconds", pin.seconds},
                       {"pin_why", pin.why},      {"verified", verified}};
    fmt::print("{}\n", out.dump(2));
    return 0;
  }
  fmt::print("loaded {} tensors ({}) from pool {} into {} in {:.3f} s: {:.2f} GB/s, no file "
             "read\n", rep.tensors, format_bytes(rep.memory_bytes), c.pool, c.device, rep.seconds,
             gbps);
  if (device) {
    fmt::print("{}", pin.pinned ? fmt::format("the pool's memory pinned in this process first: {} in "
                                        "{} segment{}, {:.3f} s\n", format_bytes(pin.bytes),
                                        pin.segments, pin.segments == 1 ? "" : "s", pin.seconds)
                          : fmt::format("not pinned ({}): staged through pinned buffers\n",
                                        pin.why));
  }
  if (c.verify) fmt::print("verified: every byte of {} tensors against the pool's checksums\n", verified);
  return 0;
}

}  // namespace

int load_from_pool(const pool_load_cli& c) {
  pool::host_pool hp = pool::host_pool::attach(c.pool);
  const auto [kind, index] = parse_device(c.device);
  if (kind == "host") return run(c, hp, host_backend{}, false);
#if LRIS_HAS_CUDA()
  if (kind == "cuda") return run(c, hp, cuda_backend(index), true);
#endif
#if LRIS_HAS_HIP()
  if (kind == "hip") return run(c, hp, hip_backend(index), true);
#endif
  throw invalid_argument(fmt::format(
      "--device \"{}\": not a device of this build (host{}{})", c.device,
      LRIS_HAS_CUDA() ? ", cuda:N" : "", LRIS_HAS_HIP() ? ", hip:N" : ""));
}

}  // namespace lris::tool
