#include "load_fan_out.hpp"

#include <chrono>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <lris/fanout/fan_out_load.hpp>
#include <lris/lris.hpp>
#include <lris/system/format_bytes.hpp>
#if LRIS_HAS_CUDA()
#include <lris/cuda.hpp>
#endif
#if LRIS_HAS_HIP()
#include <lris/hip.hpp>
#endif

#include "measure.hpp"

namespace lris::tool {

fanout::sharding tp_plan_of(const std::string& tp_plan, unsigned tp) {
  if (tp_plan.empty()) return tp > 1 ? fanout::sharding::llama() : fanout::sharding{};
  if (tp_plan == "llama") return fanout::sharding::llama();
  return fanout::sharding::from_file(tp_plan);
}

namespace {

template <class Backend>
int run(const fan_out_cli& c, const std::vector<int>& devices) {
  std::optional<safetensors::checkpoint> ck;
  std::optional<pool::host_pool> hp;
  if (c.pool.empty()) {
    ck.emplace(c.path);
  } else {
    hp.emplace(pool::host_pool::attach(c.pool));
  }
  const std::string source = ck ? ck->path().string() : fmt::format("pool {}", c.pool);
  std::vector<pipeline<auto_select, Backend>> p;
  double device_start = 0;
  for (const int d : devices) {
    // Each device's runtime starts before the clock, as in a process that has used it.
    const auto t0 = std::chrono::steady_clock::now();
    p.emplace_back(auto_select{}, Backend(d));
    buffer<device_allocator<Backend>> probe(256, device_allocator<Backend>(p.back().backend()));
    device_start += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  fanout::fan_out_options o;
  o.tp = c.tp;
  o.plan = tp_plan_of(c.tp_plan, c.tp);
  o.load.select = c.select;
  o.load.transfer = c.transfer;
  o.verify = c.verify;
  if (c.route == "dma") {
    o.path = fanout::fan_path::dma;
  } else if (c.route == "peer") {
    o.path = fanout::fan_path::peer;
  } else if (c.route == "nccl") {
    o.path = fanout::fan_path::nccl;
  } else if (c.route != "automatic") {
    throw invalid_argument(fmt::format("--route \"{}\": automatic, dma, peer or nccl", c.route));
  }
  o.nccl_library = c.nccl;
  std::string cold_note;
  if (c.cold) {
    for (const auto& s : ck->shards()) cold_note = make_cold(s.file.path().string());
  }
  progress_bar bar(fmt::format("loading {} onto {} devices", source, devices.size()));
  if (!c.json && ck) {
    o.load.on_progress = [&](std::uint64_t done, std::uint64_t total) {
      bar.update(total ? static_cast<double>(done) / static_cast<double>(total) : 1.0);
      return true;
    };
  }
  const auto start = std::chrono::steady_clock::now();
  const auto loaded = ck ? fanout::load(std::span(p), *ck, o) : fanout::load(std::span(p), *hp, o);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  bar.done();
  const auto& rep = loaded.report;
  // The load's own clock stops before verify; the whole call is what a user waits for.
  const double load_seconds = c.verify ? rep.seconds : seconds;
  const double gbps = load_seconds > 0 ? static_cast<double>(rep.storage_bytes) / load_seconds / 1e9 : 0;
  if (c.json) {
    nlohmann::json devs = nlohmann::json::array();
    for (const auto& d : rep.devices) {
      nlohmann::json j{{"device", d.device}, {"rank", d.rank},   {"bytes", d.bytes},
                       {"tensors", d.tensors}, {"split", d.split}, {"route", d.path}};
      if (c.verify) {
        j["verified"] = d.verified;
        j["digest"] = fmt::format("{:016x}", d.digest);
      }
      devs.push_back(std::move(j));
    }
    nlohmann::json out{{"path", source},
                       {"tp", rep.tp},
                       {"tensors", rep.tensors},
                       {"file_bytes", rep.file_bytes},
                       {"storage_bytes", rep.storage_bytes},
                       {"seconds", load_seconds},
                       {"gbps", gbps},
                       {"device_start_seconds", device_start},
                       {"chunks", rep.chunks},
                       {"chunk_bytes", rep.chunk_bytes},
                       {"staging_bytes", rep.staging_bytes},
                       {"route", fanout::to_string(rep.path)},
                       {"route_reason", rep.route_reason},
                       {"nccl", rep.nccl},
                       {"nccl_init_seconds", rep.nccl_init_seconds},
                       {"scratch_bytes", rep.scratch_bytes},
                       {"io", rep.io},
                       {"cold", c.cold},
                       {"devices", devs}};
    if (c.cold) out["cold_note"] = cold_note;
    fmt::print("{}\n", out.dump(2));
    return 0;
  }
  if (ck) {
    fmt::print("loaded {} tensors onto {} devices in {:.3f} s: {} read from storage once, "
               "{:.2f} GB/s\n", rep.tensors, rep.devices.size(), load_seconds,
               format_bytes(rep.storage_bytes), gbps);
  } else {
    fmt::print("loaded {} tensors from pool {} onto {} devices in {:.3f} s, no file read\n",
               rep.tensors, c.pool, rep.devices.size(), load_seconds);
  }
  if (rep.tp > 1) fmt::print("  tensor-parallel ranks: {}\n", rep.tp);
  fmt::print("  route: {}: {}\n", fanout::to_string(rep.path), rep.route_reason);
  if (!rep.nccl.empty()) {
    fmt::print("  nccl: {}, communicators made in {:.3f} s beside the first reads\n", rep.nccl,
               rep.nccl_init_seconds);
  }
  for (const auto& d : rep.devices) {
    fmt::print("  {}: rank {}, {} ({} tensors, {} of them sliced), {}\n", d.device, d.rank,
               format_bytes(d.bytes), d.tensors, d.split, d.path);
  }
  fmt::print("  io: {}\n", rep.io.empty() ? "-" : rep.io);
  fmt::print("  staging: {} in {} chunks of {}{}\n", format_bytes(rep.staging_bytes), rep.chunks,
             format_bytes(rep.chunk_bytes),
             rep.scratch_bytes > 0
                 ? fmt::format("; {} of device memory per device for the {} route",
                               format_bytes(rep.scratch_bytes), fanout::to_string(rep.path))
                 : std::string());
  fmt::print("  device start-up before the load (not in the figures): {:.3f} s\n", device_start);
  if (c.cold) fmt::print("  cold: {}\n", cold_note);
  if (c.verify) {
    fmt::print("  verified: every byte on every device matches the {}; devices of one rank have "
               "the same checksums\n", ck ? "file" : "pool");
  }
  return 0;
}

}  // namespace

int load_fan_out(const fan_out_cli& c) {
  std::string kind;
  std::vector<int> devices;
  std::stringstream list(c.devices);
  for (std::string item; std::getline(list, item, ',');) {
    const auto d = parse_device(item);
    if (item.find(':') == std::string::npos) {
      throw invalid_argument(fmt::format("--devices \"{}\": \"{}\" names no device number "
                                         "(host:0, cuda:1, ...)", c.devices, item));
    }
    if (!kind.empty() && d.kind != kind) {
      throw invalid_argument(fmt::format("--devices \"{}\": devices of one kind only ({} and {})",
                                         c.devices, kind, d.kind));
    }
    kind = d.kind;
    devices.push_back(d.index);
  }
  if (devices.empty()) throw invalid_argument("--devices: no device named");
  if (kind == "host") return run<host_backend>(c, devices);
#if LRIS_HAS_CUDA()
  if (kind == "cuda") return run<cuda_backend>(c, devices);
#endif
#if LRIS_HAS_HIP()
  if (kind == "hip") return run<hip_backend>(c, devices);
#endif
  throw invalid_argument(fmt::format("--devices \"{}\": \"{}\" is not a device kind of this "
                                     "build (host{}{})", c.devices, kind,
                                     LRIS_HAS_CUDA() ? ", cuda" : "", LRIS_HAS_HIP() ? ", hip" : ""));
}

}  // namespace lris::tool
