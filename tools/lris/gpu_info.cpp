#include "gpu_info.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <lris/config.hpp>

#if LRIS_HAS_CUDA()
#include <iterator>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <lris/cuda/device_info.hpp>
#include <lris/error.hpp>
#include <lris/system/format_bytes.hpp>
#endif

namespace lris::tool {

#if LRIS_HAS_CUDA()
namespace {

using json = nlohmann::ordered_json;

/// What the CUDA runtime says, gathered once for both the text and the JSON form.
struct cuda_report {
  cuda::runtime_info runtime;
  std::vector<cuda::device_info> devices;
  /// Why devices is empty when the runtime looked ready (list_devices threw); else empty.
  std::string listing_error;

  [[nodiscard]] bool listed() const noexcept { return runtime.usable() && listing_error.empty(); }
  [[nodiscard]] std::string_view state() const noexcept {
    return listing_error.empty() ? cuda::to_string(runtime.state) : "error";
  }
  [[nodiscard]] const std::string& reason() const noexcept {
    return listing_error.empty() ? runtime.reason : listing_error;
  }
};

cuda_report probe_cuda() {
  cuda_report report;
  report.runtime = cuda::runtime_status();
  if (!report.runtime.usable()) return report;
  // `lris info` is a probe: a device failing mid-listing is a finding to print, not a crash.
  try {
    report.devices = cuda::list_devices();
  } catch (const lris::cuda_error& e) {
    report.listing_error = e.what();
  }
  return report;
}

std::string link_text(const pcie_link& link) {
  const std::string generation =
      link.generation > 0 ? fmt::format("Gen{}", link.generation) : std::string("Gen?");
  const std::string width = link.width > 0 ? fmt::format("x{}", link.width) : std::string("x?");
  return generation + " " + width;
}

bool link_known(const pcie_link& link) { return link.generation > 0 || link.width > 0; }

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

  const cuda_report report = probe_cuda();
  const cuda::runtime_info& runtime = report.runtime;
  const std::string versions =
      fmt::format("runtime {}, driver {}", cuda::format_runtime_version(runtime.runtime_version),
                  cuda::format_runtime_version(runtime.driver_version));
  if (!report.listed()) {
    line("gpus", fmt::format("none listed (cuda: {})", report.state()));
    line("  reason", report.listing_error.empty()
                         ? fmt::format("{} [{}]", runtime.reason, runtime.error_name)
                         : report.listing_error);
    line("  cuda", versions);
    return out;
  }

  line("gpus", fmt::format("{} CUDA {} ({})", report.devices.size(),
                           report.devices.size() == 1 ? "device" : "devices", versions));
  for (const cuda::device_info& device : report.devices) {
    line(fmt::format("  gpu {}", device.ordinal),
         fmt::format("{}, compute {}.{}, {} SMs", device.name, device.compute_capability_major,
                     device.compute_capability_minor, device.multiprocessor_count));
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
  return out;
}

std::string gpu_json(const std::string& host_json) {
  auto j = json::parse(host_json);
  const cuda_report report = probe_cuda();
  const cuda::runtime_info& runtime = report.runtime;

  j["gpu_backends"] = json::array({"cuda"});
  j["cuda"] = {{"usable", report.listed()},
               {"state", report.state()},
               {"error_name", runtime.error_name},
               {"error_code", runtime.error_code},
               {"reason", report.reason()},
               {"device_count", runtime.device_count},
               {"runtime_version", cuda::format_runtime_version(runtime.runtime_version)},
               {"driver_version", runtime.driver_version > 0
                                      ? json(cuda::format_runtime_version(runtime.driver_version))
                                      : json(nullptr)}};

  json gpus = json::array();
  for (const cuda::device_info& device : report.devices) {
    gpus.push_back(
        {{"backend", "cuda"},
         {"ordinal", device.ordinal},
         {"name", device.name},
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
  j["gpus"] = std::move(gpus);
  return j.dump(2);
}

#else

std::string gpu_text() {
  return "gpus          none listed: this lris was built without a GPU backend\n"
         "  reason      configure with -DLRIS_ENABLE_CUDA=ON where the CUDA toolkit is installed\n";
}

std::string gpu_json(const std::string& host_json) {
  auto j = nlohmann::ordered_json::parse(host_json);
  j["gpu_backends"] = nlohmann::ordered_json::array();
  j["gpus"] = nlohmann::ordered_json::array();
  return j.dump(2);
}

#endif

}  // namespace lris::tool
