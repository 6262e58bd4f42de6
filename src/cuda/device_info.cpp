// list_devices and runtime_status over the CUDA runtime, plus the sysfs reads that the runtime
// cannot answer (PCIe link generation and width, NUMA node). "No driver" and "no device" are
// ordinary states of a machine, not errors: `lris info` and the GPU tests must report them and
// go on, because CI machines and many containers have the toolkit but no GPU.

#include <lris/cuda/device_info.hpp>
#include <lris/system/detail/text_files.hpp>

#include <algorithm>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <cuda_runtime.h>
#include <fmt/format.h>

#include <lris/error.hpp>

namespace lris::cuda {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view pci_devices_dir = "/sys/bus/pci/devices";

using detail::parse_number;
using detail::read_file;
using detail::trim;

int read_link_width(const fs::path& path) {
  const auto text = read_file(path);
  if (!text) return 0;
  std::string_view value = trim(*text);
  if (!value.empty() && value.front() == 'x') value.remove_prefix(1);
  const auto width = parse_number<int>(value);
  // PCIe defines x1 to x32; anything else is a link that is down or a register read as garbage.
  return width && *width >= 1 && *width <= 32 ? *width : 0;
}

int read_link_generation(const fs::path& path) {
  const auto text = read_file(path);
  return text ? pcie_generation_from_speed(*text) : 0;
}

/// Throws cuda_error naming the call and device when `status` is not cudaSuccess.
void check(cudaError_t status, std::string_view call, int device) {
  if (status == cudaSuccess) return;
  // Clear the runtime's last-error slot so that a caller who catches this starts clean.
  (void)cudaGetLastError();
  throw cuda_error(fmt::format("{} for device {} failed: {} ({})", call, device,
                               cudaGetErrorName(status), cudaGetErrorString(status)),
                   static_cast<int>(status));
}

/// Puts the thread's current device back, so that listing devices has no visible side effect.
class current_device_guard {
 public:
  explicit current_device_guard(int device) noexcept : device_(device) {}
  current_device_guard(const current_device_guard&) = delete;
  current_device_guard& operator=(const current_device_guard&) = delete;
  ~current_device_guard() {
    if (cudaSetDevice(device_) != cudaSuccess) (void)cudaGetLastError();
  }

 private:
  int device_;
};

}  // namespace

std::string_view to_string(runtime_state state) noexcept {
  switch (state) {
    case runtime_state::ready: return "ready";
    case runtime_state::no_driver: return "no_driver";
    case runtime_state::driver_too_old: return "driver_too_old";
    case runtime_state::no_device: return "no_device";
    case runtime_state::error: return "error";
  }
  return "error";
}

std::string format_cuda_version(int version) {
  if (version <= 0) return "none";
  return fmt::format("{}.{}", version / 1000, version % 1000 / 10);
}

runtime_info runtime_status() {
  runtime_info info;
  if (cudaRuntimeGetVersion(&info.runtime_version) != cudaSuccess) info.runtime_version = 0;
  // Succeeds with 0 when no driver is installed, which tells "no driver" from "old driver".
  if (cudaDriverGetVersion(&info.driver_version) != cudaSuccess) info.driver_version = 0;

  int count = 0;
  cudaError_t status = cudaGetDeviceCount(&count);
  (void)cudaGetLastError();
  if (status == cudaSuccess && count > 0) {
    info.state = runtime_state::ready;
    info.device_count = count;
    return info;
  }
  if (status == cudaSuccess) status = cudaErrorNoDevice;
  info.error_code = static_cast<int>(status);
  info.error_name = cudaGetErrorName(status);

  switch (status) {
    case cudaErrorNoDevice: {
      info.state = runtime_state::no_device;
      info.reason = fmt::format("no device: the CUDA {} driver sees no GPU",
                                format_cuda_version(info.driver_version));
      // The usual cause in a container that does have a GPU; worth saying.
      if (const char* visible = std::getenv("CUDA_VISIBLE_DEVICES"); visible != nullptr) {
        info.reason += fmt::format(" (CUDA_VISIBLE_DEVICES=\"{}\")", visible);
      }
      break;
    }
    case cudaErrorInsufficientDriver:
      if (info.driver_version == 0) {
        info.state = runtime_state::no_driver;
        info.reason = "no CUDA driver: libcuda.so.1 could not be loaded";
      } else {
        info.state = runtime_state::driver_too_old;
        info.reason = fmt::format("driver too old: it supports CUDA {}, this program needs {}",
                                  format_cuda_version(info.driver_version),
                                  format_cuda_version(info.runtime_version));
      }
      break;
    case cudaErrorStubLibrary:
      // The toolkit's stubs/libcuda.so is on the library path instead of a real driver.
      info.state = runtime_state::no_driver;
      info.reason = "no CUDA driver: the libcuda.so found is the toolkit's link stub";
      break;
    default:
      info.state = runtime_state::error;
      info.reason = fmt::format("cudaGetDeviceCount failed: {}", cudaGetErrorString(status));
      break;
  }
  return info;
}

std::vector<device_info> list_devices() {
  const runtime_info status = runtime_status();
  switch (status.state) {
    case runtime_state::ready: break;
    case runtime_state::no_driver:
    case runtime_state::driver_too_old:
    case runtime_state::no_device: return {};
    case runtime_state::error:
      throw cuda_error(
          fmt::format("cudaGetDeviceCount failed: {} ({})", status.error_name, status.reason),
          status.error_code);
  }

  int previous = 0;
  check(cudaGetDevice(&previous), "cudaGetDevice", previous);
  const current_device_guard restore(previous);

  std::vector<device_info> devices;
  devices.reserve(static_cast<std::size_t>(status.device_count));
  for (int ordinal = 0; ordinal < status.device_count; ++ordinal) {
    device_info device;
    device.ordinal = ordinal;
    device.driver_version = status.driver_version;
    device.runtime_version = status.runtime_version;

    cudaDeviceProp properties{};
    check(cudaGetDeviceProperties(&properties, ordinal), "cudaGetDeviceProperties", ordinal);
    device.name = properties.name;
    device.compute_capability_major = properties.major;
    device.compute_capability_minor = properties.minor;
    device.multiprocessor_count = properties.multiProcessorCount;

    // The runtime's own spelling keeps the PCI function, which cudaDeviceProp lacks.
    char bus_id[64] = {};
    check(cudaDeviceGetPCIBusId(bus_id, sizeof bus_id, ordinal), "cudaDeviceGetPCIBusId", ordinal);
    device.pci_bus_id = normalize_pci_bus_id(bus_id);
    if (device.pci_bus_id.empty()) {
      device.pci_bus_id = fmt::format("{:04x}:{:02x}:{:02x}.0", properties.pciDomainID,
                                      properties.pciBusID, properties.pciDeviceID);
    }

    // cudaMemGetInfo works on the current device only; under MIG its total is the instance's.
    check(cudaSetDevice(ordinal), "cudaSetDevice", ordinal);
    std::size_t free_bytes = 0;
    std::size_t total_bytes = 0;
    check(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo", ordinal);
    device.free_memory_bytes = free_bytes;
    device.total_memory_bytes = total_bytes;

    const pci_sysfs_info sysfs = read_pci_sysfs(fs::path(pci_devices_dir) / device.pci_bus_id);
    device.current_link = sysfs.current_link;
    device.max_link = sysfs.max_link;
    device.numa_node = sysfs.numa_node;

    devices.push_back(std::move(device));
  }
  return devices;
}

pci_sysfs_info read_pci_sysfs(const std::filesystem::path& device_dir) {
  pci_sysfs_info info;
  info.current_link.generation = read_link_generation(device_dir / "current_link_speed");
  info.current_link.width = read_link_width(device_dir / "current_link_width");
  info.max_link.generation = read_link_generation(device_dir / "max_link_speed");
  info.max_link.width = read_link_width(device_dir / "max_link_width");
  if (const auto text = read_file(device_dir / "numa_node")) {
    const auto node = parse_number<int>(trim(*text));
    if (node && *node >= 0) info.numa_node = *node;
  }
  return info;
}

int pcie_generation_from_speed(std::string_view speed) noexcept {
  // Kernels write "2.5 GT/s", "8 GT/s" (before 5.x) or "8.0 GT/s PCIe"; compare in tenths of
  // GT/s so that no floating-point parse is needed.
  speed = trim(speed);
  std::size_t pos = 0;
  unsigned tenths = 0;
  while (pos < speed.size() && speed[pos] >= '0' && speed[pos] <= '9') {
    tenths = tenths * 10 + static_cast<unsigned>(speed[pos] - '0');
    if (tenths > 100000) return 0;
    ++pos;
  }
  if (pos == 0) return 0;
  tenths *= 10;
  if (pos < speed.size() && speed[pos] == '.') {
    ++pos;
    const std::size_t first_fraction = pos;
    while (pos < speed.size() && speed[pos] >= '0' && speed[pos] <= '9') {
      const unsigned digit = static_cast<unsigned>(speed[pos] - '0');
      if (pos == first_fraction) {
        tenths += digit;
      } else if (digit != 0) {
        return 0;  // 2.55 GT/s is no PCIe rate
      }
      ++pos;
    }
    if (pos == first_fraction) return 0;
  }
  std::string_view unit = speed.substr(pos);
  unit = unit.substr(std::min(unit.find_first_not_of(' '), unit.size()));
  if (unit.substr(0, 4) != "GT/s") return 0;
  unit.remove_prefix(4);
  if (!unit.empty() && unit.front() != ' ') return 0;

  switch (tenths) {
    case 25: return 1;
    case 50: return 2;
    case 80: return 3;
    case 160: return 4;
    case 320: return 5;
    case 640: return 6;
    case 1280: return 7;
    default: return 0;
  }
}

std::string normalize_pci_bus_id(std::string_view bus_id) {
  bus_id = trim(bus_id);
  const auto first_colon = bus_id.find(':');
  const auto second_colon = bus_id.find(':', first_colon == bus_id.npos ? 0 : first_colon + 1);
  const auto dot = bus_id.find('.', second_colon == bus_id.npos ? 0 : second_colon + 1);
  if (first_colon == bus_id.npos || second_colon == bus_id.npos || dot == bus_id.npos) return {};

  const auto domain = parse_number<std::uint32_t>(bus_id.substr(0, first_colon), 16);
  const auto bus =
      parse_number<unsigned>(bus_id.substr(first_colon + 1, second_colon - first_colon - 1), 16);
  const auto slot =
      parse_number<unsigned>(bus_id.substr(second_colon + 1, dot - second_colon - 1), 16);
  const auto function = parse_number<unsigned>(bus_id.substr(dot + 1), 16);
  if (!domain || !bus || !slot || !function || *bus > 0xff || *slot > 0x1f || *function > 7) {
    return {};
  }
  // The kernel's own format (drivers/pci/probe.c): "%04x:%02x:%02x.%d".
  return fmt::format("{:04x}:{:02x}:{:02x}.{}", *domain, *bus, *slot, *function);
}

}  // namespace lris::cuda
