#pragma once
/// @file
/// @brief What a GPU runtime reports about itself and its devices: the types shared by
/// lris::cuda and lris::hip (runtime_status and list_devices live in each).

#include <cstdint>
#include <string>
#include <string_view>

#include <lris/system/pci_link.hpp>

namespace lris::gpu {

/// @brief Whether a GPU runtime (CUDA, HIP) can be used here, and if not, which part is missing.
enum class runtime_state {
  ready,           ///< A driver and at least one device.
  no_driver,       ///< No driver (libcuda.so.1, the amdgpu kernel driver) could be used.
  driver_too_old,  ///< A driver older than the runtime linked in.
  no_device,       ///< A driver, but no device visible (none installed, CUDA_VISIBLE_DEVICES, HIP_VISIBLE_DEVICES).
  error,           ///< Anything else, e.g. a device in a bad state or a fabric manager not up.
};

/// @brief The enumerator's name, e.g. "no_driver".
[[nodiscard]] constexpr std::string_view to_string(runtime_state state) noexcept {
  switch (state) {
    case runtime_state::ready: return "ready";
    case runtime_state::no_driver: return "no_driver";
    case runtime_state::driver_too_old: return "driver_too_old";
    case runtime_state::no_device: return "no_device";
    case runtime_state::error: return "error";
  }
  return "error";
}

/// @brief What runtime_status found out.
struct runtime_info {
  /// @brief Which case applies; only `ready` means devices can be used.
  runtime_state state = runtime_state::error;
  /// @brief Devices the runtime reports; 0 unless `state` is ready.
  int device_count = 0;
  /// @brief The driver's version in the runtime's encoding (CUDA: 1000 * major + 10 * minor,
  /// 13000 is 13.0); 0 when no driver is installed. format_runtime_version prints it.
  int driver_version = 0;
  /// @brief The runtime version this program links, same encoding.
  int runtime_version = 0;
  /// @brief The runtime's error code of the call that failed; 0 when ready.
  int error_code = 0;
  /// @brief The runtime's name of that error, e.g. "cudaErrorNoDevice"; empty when ready.
  std::string error_name;
  /// @brief One line for people saying why the runtime is unusable; empty when ready.
  std::string reason;

  /// @brief True when `state` is ready.
  [[nodiscard]] bool usable() const noexcept { return state == runtime_state::ready; }
};

/// @brief One GPU.
struct device_info {
  /// @brief The device ordinal (what cudaSetDevice / hipSetDevice take).
  int ordinal = 0;
  /// @brief The marketing name, e.g. "NVIDIA H200", "AMD Instinct MI300X".
  std::string name;
  /// @brief The instruction set the kernels are built for: "sm_90", "gfx90a".
  std::string arch;
  /// @brief Compute capability major version (9 for sm_90; HIP reports its own pair).
  int compute_capability_major = 0;
  /// @brief Compute capability minor version (0 for sm_90).
  int compute_capability_minor = 0;
  /// @brief Device memory in bytes this process can address (a MIG instance's share under MIG).
  std::uint64_t total_memory_bytes = 0;
  /// @brief Device memory not allocated by anyone at the time of the call.
  std::uint64_t free_memory_bytes = 0;
  /// @brief Streaming multiprocessors (NVIDIA) or compute units (AMD).
  int multiprocessor_count = 0;
  /// @brief PCI address as the kernel names it under /sys/bus/pci/devices, e.g.
  /// "0000:1b:00.0" (lower-case hex).
  std::string pci_bus_id;
  /// @brief The link as trained now (GPUs drop to a lower generation when idle).
  pcie_link current_link;
  /// @brief The most the device and its slot support.
  pcie_link max_link;
  /// @brief The NUMA node the device is attached to; -1 when the kernel reports none.
  int numa_node = -1;
  /// @brief As runtime_info::driver_version.
  int driver_version = 0;
  /// @brief As runtime_info::runtime_version.
  int runtime_version = 0;
};

}  // namespace lris::gpu
