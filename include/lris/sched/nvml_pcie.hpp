#pragma once
/// @file
/// @brief PCIe throughput of NVIDIA GPUs as the driver measures it (NVML), for the bandwidth
/// monitor, and how two GPUs are connected, for the fan-out's route. The NVML library is loaded at run time when the NVIDIA driver is installed; it is
/// never required, and LRIS does not link it.

#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace lris::sched {

/// @brief One PCIe reading of one GPU, in GB/s over the driver's sampling interval (about
/// 20 ms).
struct pcie_throughput {
  double to_device_gbps = 0;    ///< received by the GPU (host -> device)
  double from_device_gbps = 0;  ///< sent by the GPU (device -> host)
};

/// @brief How two GPUs reach each other, as NVML tells it.
struct gpu_pair_link {
  /// @brief NVML reports peer-to-peer over NVLink as possible (NVML_P2P_CAPS_INDEX_NVLINK).
  bool nvlink = false;
  /// @brief Their closest common ancestor in the PCIe tree (nvmlGpuTopologyLevel_t): 0 the
  /// same board, 10 one PCIe switch, 20 several switches, 30 one host bridge, 40 one NUMA
  /// node, 50 across NUMA nodes (the CPUs' interconnect); -1 unknown.
  int pcie_level = -1;
};

/// @brief "the same board", "one PCIe switch", "several PCIe switches", "one host bridge", "one
/// NUMA node's host bridges", "the CPUs' interconnect" or "an unknown path".
[[nodiscard]] const char* describe_pcie_level(int level) noexcept;

class nvml_pcie {
 public:
  /// @brief Loads NVML (libnvidia-ml.so.1) and initializes it; when it cannot, available() is
  /// false and why() says what failed.
  nvml_pcie();
  ~nvml_pcie();
  nvml_pcie(const nvml_pcie&) = delete;
  nvml_pcie& operator=(const nvml_pcie&) = delete;

  [[nodiscard]] bool available() const noexcept { return impl_ != nullptr; }
  /// @brief Why NVML is not available ("libnvidia-ml.so.1: cannot open shared object file",
  /// "nvmlInit_v2 returned 9"); empty when it is.
  [[nodiscard]] const std::string& why() const noexcept { return why_; }
  /// @brief The throughput of GPU `index` (NVML's numbering); std::nullopt when NVML is not
  /// available or the query fails.
  [[nodiscard]] std::optional<pcie_throughput> read(unsigned index) const;
  /// @brief One direction of the GPU at PCI address `pci_bus_id` ("0000:1b:00.0", as the
  /// runtime names it: no numbering to map), in GB/s: received by the GPU (`to_device`) or
  /// sent. std::nullopt when NVML is not available, knows no such GPU, or the query fails.
  /// Takes about 20 ms: the driver counts bytes over that interval.
  [[nodiscard]] std::optional<double> read_gbps(const std::string& pci_bus_id, bool to_device) const;
  /// @brief How the GPUs at PCI addresses `a` and `b` are connected; std::nullopt when NVML is
  /// not available or knows either GPU by no such address.
  [[nodiscard]] std::optional<gpu_pair_link> link(const std::string& a, const std::string& b) const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
  std::string why_;
};

/// @brief NVML loaded on first use, so that a process that never samples a GPU's link never
/// loads it (lris::context holds one; the monitor's samplers share it).
class lazy_nvml_pcie {
 public:
  [[nodiscard]] const nvml_pcie& get() {
    std::call_once(once_, [this] { nvml_ = std::make_unique<nvml_pcie>(); });
    return *nvml_;
  }

 private:
  std::once_flag once_;
  std::unique_ptr<nvml_pcie> nvml_;
};

}  // namespace lris::sched
