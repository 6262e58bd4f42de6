#include <lris/sched/nvml_pcie.hpp>

#include <dlfcn.h>

#include <fmt/format.h>

namespace lris::sched {

// The few NVML entry points used, declared as the NVML C API defines them (nvml.h is not a
// build dependency: the library is found at run time or not at all).
namespace {
using nvml_return = int;  // nvmlReturn_t; 0 is NVML_SUCCESS
using nvml_device = void*;
constexpr unsigned pcie_tx_bytes = 0;  // NVML_PCIE_UTIL_TX_BYTES: sent by the GPU
constexpr unsigned pcie_rx_bytes = 1;  // NVML_PCIE_UTIL_RX_BYTES: received by the GPU
constexpr int p2p_caps_nvlink = 2;     // NVML_P2P_CAPS_INDEX_NVLINK
constexpr int p2p_status_ok = 0;       // NVML_P2P_STATUS_OK
}  // namespace

const char* describe_pcie_level(int level) noexcept {
  switch (level) {
    case 0: return "the same board";
    case 10: return "one PCIe switch";
    case 20: return "several PCIe switches";
    case 30: return "one host bridge";
    case 40: return "one NUMA node's host bridges";
    case 50: return "the CPUs' interconnect";
    default: return "an unknown path";
  }
}

struct nvml_pcie::impl {
  void* library = nullptr;
  nvml_return (*shutdown)() = nullptr;
  nvml_return (*handle_by_index)(unsigned, nvml_device*) = nullptr;
  nvml_return (*handle_by_bus_id)(const char*, nvml_device*) = nullptr;  // may be missing
  nvml_return (*pcie_throughput)(nvml_device, unsigned, unsigned*) = nullptr;
  nvml_return (*p2p_status)(nvml_device, nvml_device, int, int*) = nullptr;    // may be missing
  nvml_return (*common_ancestor)(nvml_device, nvml_device, int*) = nullptr;  // may be missing
  ~impl() {
    if (shutdown != nullptr) shutdown();
    if (library != nullptr) dlclose(library);
  }
};

nvml_pcie::nvml_pcie() {
  auto p = std::make_unique<impl>();
  p->library = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (p->library == nullptr) {
    const char* e = dlerror();
    why_ = e != nullptr ? e : "libnvidia-ml.so.1 could not be loaded";
    return;
  }
  auto init = reinterpret_cast<nvml_return (*)()>(dlsym(p->library, "nvmlInit_v2"));
  auto shutdown = reinterpret_cast<nvml_return (*)()>(dlsym(p->library, "nvmlShutdown"));
  p->handle_by_index = reinterpret_cast<nvml_return (*)(unsigned, nvml_device*)>(
      dlsym(p->library, "nvmlDeviceGetHandleByIndex_v2"));
  p->pcie_throughput = reinterpret_cast<nvml_return (*)(nvml_device, unsigned, unsigned*)>(
      dlsym(p->library, "nvmlDeviceGetPcieThroughput"));
  p->handle_by_bus_id = reinterpret_cast<nvml_return (*)(const char*, nvml_device*)>(
      dlsym(p->library, "nvmlDeviceGetHandleByPciBusId_v2"));
  p->p2p_status = reinterpret_cast<nvml_return (*)(nvml_device, nvml_device, int, int*)>(
      dlsym(p->library, "nvmlDeviceGetP2PStatus"));
  p->common_ancestor = reinterpret_cast<nvml_return (*)(nvml_device, nvml_device, int*)>(
      dlsym(p->library, "nvmlDeviceGetTopologyCommonAncestor"));
  if (init == nullptr || shutdown == nullptr || p->handle_by_index == nullptr ||
      p->pcie_throughput == nullptr) {
    why_ = "libnvidia-ml.so.1 lacks nvmlInit_v2, nvmlDeviceGetHandleByIndex_v2 or "
           "nvmlDeviceGetPcieThroughput";
    return;
  }
  if (const nvml_return r = init(); r != 0) {
    why_ = fmt::format("nvmlInit_v2 returned {}", r);
    return;
  }
  p->shutdown = shutdown;
  impl_ = std::move(p);
}

nvml_pcie::~nvml_pcie() = default;

std::optional<pcie_throughput> nvml_pcie::read(unsigned index) const {
  if (!impl_) return std::nullopt;
  nvml_device dev = nullptr;
  if (impl_->handle_by_index(index, &dev) != 0) return std::nullopt;
  unsigned rx = 0, tx = 0;  // KB/s
  if (impl_->pcie_throughput(dev, pcie_rx_bytes, &rx) != 0 ||
      impl_->pcie_throughput(dev, pcie_tx_bytes, &tx) != 0) {
    return std::nullopt;
  }
  return pcie_throughput{rx * 1e3 / 1e9, tx * 1e3 / 1e9};
}

std::optional<double> nvml_pcie::read_gbps(const std::string& pci_bus_id, bool to_device) const {
  if (!impl_ || impl_->handle_by_bus_id == nullptr) return std::nullopt;
  nvml_device dev = nullptr;
  if (impl_->handle_by_bus_id(pci_bus_id.c_str(), &dev) != 0) return std::nullopt;
  unsigned kbps = 0;
  if (impl_->pcie_throughput(dev, to_device ? pcie_rx_bytes : pcie_tx_bytes, &kbps) != 0) {
    return std::nullopt;
  }
  return kbps * 1e3 / 1e9;
}

std::optional<gpu_pair_link> nvml_pcie::link(const std::string& a, const std::string& b) const {
  if (!impl_ || impl_->handle_by_bus_id == nullptr) return std::nullopt;
  nvml_device da = nullptr, db = nullptr;
  if (impl_->handle_by_bus_id(a.c_str(), &da) != 0 || impl_->handle_by_bus_id(b.c_str(), &db) != 0) {
    return std::nullopt;
  }
  gpu_pair_link out;
  int status = -1;
  out.nvlink = impl_->p2p_status != nullptr &&
               impl_->p2p_status(da, db, p2p_caps_nvlink, &status) == 0 && status == p2p_status_ok;
  int level = -1;
  if (impl_->common_ancestor != nullptr && impl_->common_ancestor(da, db, &level) == 0) {
    out.pcie_level = level;
  }
  return out;
}

}  // namespace lris::sched
