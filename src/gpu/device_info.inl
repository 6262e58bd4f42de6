// runtime_status and list_devices, written once for CUDA and HIP against src/gpu/runtime.hpp.
// "No driver" and "no device" are ordinary states of a machine, not errors: `lris info` and the
// GPU tests must report them and go on, because CI machines and many containers have the
// toolkit but no GPU. Included by exactly one file per runtime.
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include <lris/error.hpp>
#include <lris/system/pci_link.hpp>

#include "gpu/runtime.hpp"

namespace lris::LRIS_GPU_NS {
namespace {

constexpr std::string_view pci_devices_dir = "/sys/bus/pci/devices";

/// Throws the runtime's error type naming the call and device when `status` is an error.
void check(LRIS_GPU(Error_t) status, std::string_view call, int device) {
  if (status == LRIS_GPU(Success)) return;
  // Clear the runtime's last-error slot so that a caller who catches this starts clean.
  (void)LRIS_GPU(GetLastError)();
  throw gpu_rt::error_type(fmt::format("{} for device {} failed: {} ({})", call, device,
                               LRIS_GPU(GetErrorName)(status), LRIS_GPU(GetErrorString)(status)),
                   static_cast<int>(status));
}

/// Puts the thread's current device back, so that listing devices has no visible side effect.
class current_device_guard {
 public:
  explicit current_device_guard(int device) noexcept : device_(device) {}
  current_device_guard(const current_device_guard&) = delete;
  current_device_guard& operator=(const current_device_guard&) = delete;
  ~current_device_guard() {
    if (LRIS_GPU(SetDevice)(device_) != LRIS_GPU(Success)) (void)LRIS_GPU(GetLastError)();
  }

 private:
  int device_;
};

}  // namespace

std::string format_runtime_version(int version) { return gpu_rt::format_version(version); }

runtime_info runtime_status() {
  runtime_info info;
  if (LRIS_GPU(RuntimeGetVersion)(&info.runtime_version) != LRIS_GPU(Success)) {
    info.runtime_version = 0;
  }
  // Succeeds with 0 when no driver is installed, which tells "no driver" from "old driver".
  if (LRIS_GPU(DriverGetVersion)(&info.driver_version) != LRIS_GPU(Success)) {
    info.driver_version = 0;
  }

  int count = 0;
  LRIS_GPU(Error_t) status = LRIS_GPU(GetDeviceCount)(&count);
  (void)LRIS_GPU(GetLastError)();
  if (status == LRIS_GPU(Success) && count > 0) {
    info.state = runtime_state::ready;
    info.device_count = count;
    return info;
  }
  if (status == LRIS_GPU(Success)) status = LRIS_GPU(ErrorNoDevice);
  info.error_code = static_cast<int>(status);
  info.error_name = LRIS_GPU(GetErrorName)(status);

  switch (status) {
    case LRIS_GPU(ErrorNoDevice): {
      info.state = runtime_state::no_device;
      info.reason = fmt::format("no device: the " LRIS_GPU_NAME " {} driver sees no GPU",
                                format_runtime_version(info.driver_version));
      // The usual cause in a container that does have a GPU; worth saying.
      for (const char* variable : gpu_rt::visibility_variables) {
        if (const char* visible = std::getenv(variable); visible != nullptr) {
          info.reason += fmt::format(" ({}=\"{}\")", variable, visible);
        }
      }
      break;
    }
    case LRIS_GPU(ErrorInsufficientDriver):
      if (info.driver_version == 0) {
        info.state = runtime_state::no_driver;
        info.reason = gpu_rt::no_driver_reason;
      } else {
        info.state = runtime_state::driver_too_old;
        info.reason = fmt::format("driver too old: it supports " LRIS_GPU_NAME " {}, this "
                                  "program needs {}",
                                  format_runtime_version(info.driver_version),
                                  format_runtime_version(info.runtime_version));
      }
      break;
#if defined(LRIS_GPU_CUDA)
    case cudaErrorStubLibrary:
      // The toolkit's stubs/libcuda.so is on the library path instead of a real driver.
      info.state = runtime_state::no_driver;
      info.reason = "no CUDA driver: the libcuda.so found is the toolkit's link stub";
      break;
#endif
    default:
      info.state = runtime_state::error;
      info.reason =
          fmt::format(LRIS_GPU_STR(GetDeviceCount) " failed: {}", LRIS_GPU(GetErrorString)(status));
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
      throw gpu_rt::error_type(
          fmt::format(LRIS_GPU_STR(GetDeviceCount) " failed: {} ({})", status.error_name,
                      status.reason),
          status.error_code);
  }

  int previous = 0;
  check(LRIS_GPU(GetDevice)(&previous), LRIS_GPU_STR(GetDevice), previous);
  const current_device_guard restore(previous);

  std::vector<device_info> devices;
  devices.reserve(static_cast<std::size_t>(status.device_count));
  for (int ordinal = 0; ordinal < status.device_count; ++ordinal) {
    device_info device;
    device.ordinal = ordinal;
    device.driver_version = status.driver_version;
    device.runtime_version = status.runtime_version;

    gpu_rt::device_prop properties{};
    check(LRIS_GPU(GetDeviceProperties)(&properties, ordinal), LRIS_GPU_STR(GetDeviceProperties),
          ordinal);
    device.name = properties.name;
    device.arch = gpu_rt::arch_name(properties);
    device.compute_capability_major = properties.major;
    device.compute_capability_minor = properties.minor;
    device.multiprocessor_count = properties.multiProcessorCount;

    // The runtime's own spelling keeps the PCI function, which the properties lack.
    char bus_id[64] = {};
    check(LRIS_GPU(DeviceGetPCIBusId)(bus_id, sizeof bus_id, ordinal),
          LRIS_GPU_STR(DeviceGetPCIBusId), ordinal);
    device.pci_bus_id = normalize_pci_bus_id(bus_id);
    if (device.pci_bus_id.empty()) {
      device.pci_bus_id = fmt::format("{:04x}:{:02x}:{:02x}.0", properties.pciDomainID,
                                      properties.pciBusID, properties.pciDeviceID);
    }

    // MemGetInfo works on the current device only; under MIG its total is the instance's.
    check(LRIS_GPU(SetDevice)(ordinal), LRIS_GPU_STR(SetDevice), ordinal);
    std::size_t free_bytes = 0;
    std::size_t total_bytes = 0;
    check(LRIS_GPU(MemGetInfo)(&free_bytes, &total_bytes), LRIS_GPU_STR(MemGetInfo), ordinal);
    device.free_memory_bytes = free_bytes;
    device.total_memory_bytes = total_bytes;

    const pci_sysfs_info sysfs = read_pci_sysfs(std::filesystem::path(pci_devices_dir) / device.pci_bus_id);
    device.current_link = sysfs.current_link;
    device.max_link = sysfs.max_link;
    device.numa_node = sysfs.numa_node;

    devices.push_back(std::move(device));
  }
  return devices;
}

}  // namespace lris::LRIS_GPU_NS
