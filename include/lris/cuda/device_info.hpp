#pragma once
/// @file
/// @brief list_devices and runtime_status: the CUDA GPUs this process can use, with the facts
/// that decide how fast bytes reach them (memory, PCIe link, NUMA node).
///
/// Part of `lris::cuda`. This header does not include cuda_runtime.h, so a program can list
/// GPUs without the CUDA headers on its include path; only the library's source does.

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace lris::cuda {

/// @brief Whether the CUDA runtime can be used here, and if not, which part is missing.
enum class runtime_state {
  ready,           ///< A driver and at least one device.
  no_driver,       ///< No CUDA driver (libcuda.so.1) could be loaded.
  driver_too_old,  ///< A driver that supports an older CUDA than the runtime linked in.
  no_device,       ///< A driver, but no device visible (none installed, CUDA_VISIBLE_DEVICES).
  error,           ///< Anything else, e.g. a device in a bad state or a fabric manager not up.
};

/// @brief The enumerator's name, e.g. "no_driver".
[[nodiscard]] std::string_view to_string(runtime_state state) noexcept;

/// @brief What runtime_status found out.
struct runtime_info {
  /// @brief Which case applies; only `ready` means devices can be used.
  runtime_state state = runtime_state::error;
  /// @brief Devices cudaGetDeviceCount reports; 0 unless `state` is ready.
  int device_count = 0;
  /// @brief The newest CUDA version the driver supports, as 1000 * major + 10 * minor
  /// (13000 is 13.0); 0 when no driver is installed.
  int driver_version = 0;
  /// @brief The CUDA runtime version this program links, same encoding.
  int runtime_version = 0;
  /// @brief The cudaError_t of the call that failed; 0 (cudaSuccess) when ready.
  int error_code = 0;
  /// @brief cudaGetErrorName of that error, e.g. "cudaErrorNoDevice"; empty when ready.
  std::string error_name;
  /// @brief One line for people saying why the runtime is unusable; empty when ready.
  std::string reason;

  /// @brief True when `state` is ready.
  [[nodiscard]] bool usable() const noexcept { return state == runtime_state::ready; }
};

/// @brief Asks the CUDA runtime whether a driver and devices are there. Never throws for a
/// missing or broken driver (that is what it reports); creates no device context.
[[nodiscard]] runtime_info runtime_status();

/// @brief A PCIe link: its generation and lane count.
struct pcie_link {
  /// @brief 1 (2.5 GT/s) to 6 (64 GT/s), 7 for 128 GT/s; 0 when unknown.
  int generation = 0;
  /// @brief Lanes (x16 is 16); 0 when unknown.
  int width = 0;
};

/// @brief One CUDA device.
struct device_info {
  /// @brief The CUDA device ordinal (what cudaSetDevice takes).
  int ordinal = 0;
  /// @brief The marketing name, e.g. "NVIDIA H200".
  std::string name;
  /// @brief Compute capability major version (9 for sm_90).
  int compute_capability_major = 0;
  /// @brief Compute capability minor version (0 for sm_90).
  int compute_capability_minor = 0;
  /// @brief Device memory in bytes this process can address (a MIG instance's share under MIG).
  std::uint64_t total_memory_bytes = 0;
  /// @brief Device memory not allocated by anyone at the time of the call.
  std::uint64_t free_memory_bytes = 0;
  /// @brief Streaming multiprocessors.
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

/// @brief Every CUDA device this process can see, in ordinal order.
///
/// Empty when runtime_status() reports no driver, a driver too old, or no device. Reading the
/// free memory creates each device's primary context (about a hundred milliseconds and some
/// device memory per GPU, once per process); the calling thread's current device is restored.
/// @throws lris::cuda_error for any other failure, naming the call, the device and the
/// cudaError_t name.
[[nodiscard]] std::vector<device_info> list_devices();

/// @brief What sysfs says about one PCI device.
struct pci_sysfs_info {
  /// @brief From current_link_speed and current_link_width.
  pcie_link current_link;
  /// @brief From max_link_speed and max_link_width.
  pcie_link max_link;
  /// @brief From numa_node; -1 when the file says so or cannot be read.
  int numa_node = -1;
};

/// @brief Reads the link and NUMA files of `device_dir` (e.g. /sys/bus/pci/devices/0000:1b:00.0).
/// Missing or malformed files give the "unknown" values (0, -1); never throws for them.
/// Exposed so that tests can point it at a fake directory.
[[nodiscard]] pci_sysfs_info read_pci_sysfs(const std::filesystem::path& device_dir);

/// @brief The PCIe generation of a link speed as sysfs writes it: "2.5 GT/s" -> 1, "5.0 GT/s"
/// -> 2, "8 GT/s" -> 3, "16.0 GT/s PCIe" -> 4, 32 -> 5, 64 -> 6, 128 -> 7; anything else
/// ("Unknown", "", "7 GT/s") -> 0. Surrounding whitespace is ignored.
[[nodiscard]] int pcie_generation_from_speed(std::string_view speed) noexcept;

/// @brief A PCI address in the kernel's spelling: cudaDeviceGetPCIBusId and nvidia-smi write
/// "0000:1B:00.0" or "00000000:1B:00.0", sysfs "0000:1b:00.0". Returns "" when `bus_id` is not
/// domain:bus:device.function in hex.
[[nodiscard]] std::string normalize_pci_bus_id(std::string_view bus_id);

/// @brief A CUDA version number for people: 13000 -> "13.0", 12040 -> "12.4"; 0 -> "none".
[[nodiscard]] std::string format_cuda_version(int version);

}  // namespace lris::cuda
