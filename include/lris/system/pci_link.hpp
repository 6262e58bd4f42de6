#pragma once
/// @file
/// @brief PCIe links and what sysfs says about a PCI device (link, NUMA node): the facts that
/// decide how fast bytes reach a GPU, NIC or NVMe drive, whatever runtime drives it.

#include <filesystem>
#include <string>
#include <string_view>

namespace lris {

/// @brief A PCIe link: its generation and lane count.
struct pcie_link {
  /// @brief 1 (2.5 GT/s) to 6 (64 GT/s), 7 for 128 GT/s; 0 when unknown.
  int generation = 0;
  /// @brief Lanes (x16 is 16); 0 when unknown.
  int width = 0;
};

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

/// @brief A PCI address in the kernel's spelling: GPU runtimes and nvidia-smi write
/// "0000:1B:00.0" or "00000000:1B:00.0", sysfs "0000:1b:00.0". Returns "" when `bus_id` is not
/// domain:bus:device.function in hex.
[[nodiscard]] std::string normalize_pci_bus_id(std::string_view bus_id);

}  // namespace lris
