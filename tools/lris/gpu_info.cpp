#include "gpu_info.hpp"

#include <iterator>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <lris/config.hpp>
#include <lris/error.hpp>
#include <lris/fanout/nccl.hpp>
#include <lris/gpu/device_info.hpp>
#include <lris/sched/nvml_pcie.hpp>
#include <lris/system/format_bytes.hpp>
#if LRIS_HAS_CUDA()
#include <lris/cuda/device_info.hpp>
#endif
#if LRIS_HAS_HIP()
#include <lris/hip/device_info.hpp>
#endif

namespace lris::tool {

namespace {

using json = nlohmann::ordered_json;

/// What one runtime says, gathered once for both the text and the JSON form.
struct runtime_report {
  std::string key;    // "cuda", "hip"
  std::string label;  // "CUDA", "HIP"
  gpu::runtime_info runtime;
  std::vector<gpu::device_info> devices;
  /// Why devices is empty when the runtime looked ready (list_devices threw); else empty.
  std::string listing_error;
  std::string runtime_version;
  std::string driver_version;

  [[nodiscard]] bool listed() const noexcept { return runtime.usable() && listing_error.empty(); }
  [[nodiscard]] std::string_view state() const noexcept {
    return listing_error.empty() ? gpu::to_string(runtime.state) : "error";
  }
  [[nodiscard]] const std::string& reason() const noexcept {
    return listing_error.empty() ? runtime.reason : listing_error;
  }
};

/// Asks one runtime (its runtime_status, list_devices and format_runtime_version).
template <class Status, class List, class Version>
runtime_report probe(std::string key, std::string label, Status status, List list,
                     Version version) {
  runtime_report report;
  report.key = std::move(key);
  report.label = std::move(label);
  report.runtime = status();
  report.runtime_version = version(report.runtime.runtime_version);
  report.driver_version = version(report.runtime.driver_version);
  if (!report.runtime.usable()) return report;
  // `lris info` is a probe: a device failing mid-listing is a finding to print, not a crash.
  try {
    report.devices = list();
  } catch (const lris::device_error& e) {
    report.listing_error = e.what();
  }
  return report;
}

std::vector<runtime_report> probe_all() {
  std::vector<runtime_report> reports;
#if LRIS_HAS_CUDA()
  reports.push_back(probe("cuda", "CUDA", cuda::runtime_status, cuda::list_devices,
                          cuda::format_runtime_version));
#endif
#if LRIS_HAS_HIP()
  reports.push_back(probe("hip", "HIP", hip::runtime_status, hip::list_devices,
                          hip::format_runtime_version));
#endif
  return reports;
}

std::string link_text(const pcie_link& link) {
  const std::string generation =
      link.generation > 0 ? fmt::format("Gen{}", link.generation) : std::string("Gen?");
  const std::string width = link.width > 0 ? fmt::format("x{}", link.width) : std::string("x?");
  return generation + " " + width;
}

bool link_known(const pcie_link& link) { return link.generation > 0 || link.width > 0; }

// How GPUs a and b of a report reach each other, in words (NVML; NVIDIA GPUs only).
std::string pair_text(const sched::nvml_pcie& nvml, const gpu::device_info& a,
                      const gpu::device_info& b) {
  const auto l = nvml.link(a.pci_bus_id, b.pci_bus_id);
  if (!l) {
    return nvml.available() ? std::string("unknown (NVML does not know the pair)")
                            : fmt::format("unknown (NVML: {})", nvml.why());
  }
  return l->nvlink ? fmt::format("NVLink (PCIe path: {})", sched::describe_pcie_level(l->pcie_level))
                   : fmt::format("PCIe through {}", sched::describe_pcie_level(l->pcie_level));
}

json link_json(const pcie_link& link) {
  return {{"generation", link.generation > 0 ? json(link.generation) : json(nullptr)},
          {"width", link.width > 0 ? json(link.width) : json(nullptr)}};
}

}  // namespace

std::string gpu_text() {
  // Same layout as lris::to_text(host_info): labels padded to 14 columns.
  static constexpr int label_width = 14;
  std::string out;
  auto line = [&out](std::string_view label, const std::string& value) {
    fmt::format_to(std::back_inserter(out), "{:<{}}{}\n", label, label_width, value);
  };
  const auto reports = probe_all();
  if (reports.empty()) {
    line("gpus", "none listed: this lris was built without a GPU backend");
    line("  reason", "configure with -DLRIS_ENABLE_CUDA=ON (CUDA toolkit) or -DLRIS_ENABLE_HIP=ON "
                     "(hipcc)");
    return out;
  }
  for (const runtime_report& report : reports) {
    const std::string versions =
        fmt::format("runtime {}, driver {}", report.runtime_version, report.driver_version);
    if (!report.listed()) {
      line("gpus", fmt::format("none listed ({}: {})", report.key, report.state()));
      line("  reason", report.listing_error.empty()
                           ? fmt::format("{} [{}]", report.runtime.reason,
                                         report.runtime.error_name)
                           : report.listing_error);
      line(fmt::format("  {}", report.key), versions);
      continue;
    }
    line("gpus", fmt::format("{} {} {} ({})", report.devices.size(), report.label,
                             report.devices.size() == 1 ? "device" : "devices", versions));
    for (const gpu::device_info& device : report.devices) {
      line(fmt::format("  gpu {}", device.ordinal),
           fmt::format("{}, {} (compute {}.{}), {} {}", device.name, device.arch,
                       device.compute_capability_major, device.compute_capability_minor,
                       device.multiprocessor_count, report.key == "cuda" ? "SMs" : "CUs"));
      line("    memory", fmt::format("{} total, {} free", format_bytes(device.total_memory_bytes),
                                     format_bytes(device.free_memory_bytes)));
      if (link_known(device.current_link) || link_known(device.max_link)) {
        line("    pcie", fmt::format("{}, {} (max {})", device.pci_bus_id,
                                     link_text(device.current_link), link_text(device.max_link)));
      } else {
        line("    pcie",
             fmt::format("{}, link unknown (not in /sys/bus/pci/devices)", device.pci_bus_id));
      }
      line("    numa", device.numa_node >= 0 ? fmt::format("node {}", device.numa_node)
                                             : std::string("none reported by the kernel"));
    }
    // What a load onto several of them can use: the links between them, and NCCL.
    if (report.key == "cuda" && report.devices.size() > 1) {
      const sched::nvml_pcie nvml;
      for (std::size_t a = 0; a < report.devices.size(); ++a) {
        for (std::size_t b = a + 1; b < report.devices.size(); ++b) {
          line(fmt::format("  gpus {}-{}", a, b),
               pair_text(nvml, report.devices[a], report.devices[b]));
        }
      }
    }
    const fanout::nccl_library nccl(report.key);
    line(report.key == "hip" ? "  rccl" : "  nccl",
         nccl.available() ? nccl.describe() : fmt::format("not loaded: {}", nccl.why()));
  }
  return out;
}

std::string gpu_json(const std::string& host_json) {
  auto j = json::parse(host_json);
  j["gpu_backends"] = json::array();
  json gpus = json::array();
  for (const runtime_report& report : probe_all()) {
    const gpu::runtime_info& runtime = report.runtime;
    j["gpu_backends"].push_back(report.key);
    j[report.key] = {{"usable", report.listed()},
                     {"state", report.state()},
                     {"error_name", runtime.error_name},
                     {"error_code", runtime.error_code},
                     {"reason", report.reason()},
                     {"device_count", runtime.device_count},
                     {"runtime_version", report.runtime_version},
                     {"driver_version", runtime.driver_version > 0 ? json(report.driver_version)
                                                                   : json(nullptr)}};
    for (const gpu::device_info& device : report.devices) {
      gpus.push_back(
          {{"backend", report.key},
           {"ordinal", device.ordinal},
           {"name", device.name},
           {"arch", device.arch},
           {"compute_capability",
            fmt::format("{}.{}", device.compute_capability_major, device.compute_capability_minor)},
           {"multiprocessor_count", device.multiprocessor_count},
           {"total_memory_bytes", device.total_memory_bytes},
           {"free_memory_bytes", device.free_memory_bytes},
           {"pci_bus_id", device.pci_bus_id},
           {"pcie",
            {{"current", link_json(device.current_link)}, {"max", link_json(device.max_link)}}},
           {"numa_node", device.numa_node >= 0 ? json(device.numa_node) : json(nullptr)}});
    }
    if (report.listed()) {
      const fanout::nccl_library nccl(report.key);
      j[report.key]["nccl"] = {{"available", nccl.available()},
                               {"library", nccl.describe()},
                               {"why", nccl.why()}};
      if (report.key == "cuda") {
        const sched::nvml_pcie nvml;
        json links = json::array();
        for (std::size_t a = 0; a < report.devices.size(); ++a) {
          for (std::size_t b = a + 1; b < report.devices.size(); ++b) {
            links.push_back({{"a", report.devices[a].ordinal},
                             {"b", report.devices[b].ordinal},
                             {"link", pair_text(nvml, report.devices[a], report.devices[b])}});
          }
        }
        j[report.key]["links"] = std::move(links);
      }
    }
  }
  j["gpus"] = std::move(gpus);
  return j.dump(2);
}

}  // namespace lris::tool
