#pragma once
/// @file
/// @brief fanout::choose_route: how the bytes of a fan-out reach its devices, chosen from how
/// the devices are linked. Pure: the loader (fanout/fan_out_load.hpp) finds the links (NVML
/// for NVIDIA GPUs, the backend's peer access) and whether NCCL loads, and reports the choice
/// and its reason per device.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace lris::fanout {

/// @brief How the bytes of a chunk reach the devices.
enum class fan_path : unsigned char {
  automatic,  ///< chosen from the links between the devices (choose_route)
  dma,        ///< every device copies its parts from the pinned slot over its own link
  peer,       ///< one device per chunk (in turn) copies the chunk from the slot, and every
              ///< device takes its parts from there by peer copies (NVLink, xGMI)
  nccl,       ///< one device per chunk (in turn) copies the chunk from the slot and NCCL (RCCL
              ///< on AMD) broadcasts it to the others; each takes its parts from its copy.
              ///< Loads on this route take turns (per context): NCCL's communicators of
              ///< two at once on the same GPUs may deadlock each other
};

/// @brief "automatic", "dma", "peer" or "nccl".
[[nodiscard]] constexpr std::string_view to_string(fan_path p) noexcept {
  switch (p) {
    case fan_path::automatic: return "automatic";
    case fan_path::dma: return "dma";
    case fan_path::peer: return "peer";
    case fan_path::nccl: return "nccl";
  }
  return "?";
}

/// @brief How two devices reach each other's memory.
enum class link_kind : unsigned char {
  unknown,  ///< nothing tells (no NVML, a backend without link queries)
  none,     ///< they cannot: copies between them go through host memory
  pcie,     ///< peer copies over PCIe (switches, host bridges or the CPUs' interconnect)
  nvlink,   ///< NVLink (or xGMI): a link of their own, much faster than each one's PCIe; NVML
            ///< tells it for NVIDIA GPUs, nothing yet for AMD ones
};

/// @brief The links among the devices of a fan-out.
struct device_links {
  std::vector<std::string> names;  ///< "cuda:0", ...
  /// kinds[a * n + b]: how device a reaches device b (the diagonal is not read).
  std::vector<link_kind> kinds;
  /// detail[a * n + b]: how the link was learned, in words ("NVLink (NVML)", "PCIe through
  /// one host bridge (NVML)"); may be empty.
  std::vector<std::string> detail;

  /// @brief `n` devices, every pair `kind`.
  static device_links uniform(std::vector<std::string> names, link_kind kind);
  [[nodiscard]] std::size_t size() const noexcept { return names.size(); }
  [[nodiscard]] link_kind at(std::size_t a, std::size_t b) const { return kinds.at(a * size() + b); }
  /// @brief True when every pair of distinct devices is linked by `k` (the diagonal is not
  /// read; true for one device).
  [[nodiscard]] bool every_pair(link_kind k) const;
  void set(std::size_t a, std::size_t b, link_kind k, std::string how = {});
};

/// @brief The route and why.
struct route_choice {
  fan_path path = fan_path::dma;
  std::string reason;
};

/// @brief The route for fan_path::automatic. With one device: dma (a plain load). Where a pair
/// of devices is not linked by NVLink (or the link is unknown): dma, each device over its own
/// link, naming the pair. Where every pair is: peer, the chunk crossing PCIe once, into one
/// device in turn, and the NVLinks carrying each device's parts from there. The nccl route is
/// taken only when asked for: making NCCL's communicators took 0.47-0.49 s for one H100
/// (NCCL 2.28.9), longer than a warm load of 8 GB. Every device receives the same bytes
/// either way; a broadcast spreads the sending over the devices instead of leaving it to the
/// chunk's root, which pays only where one device's NVLink is the limit (not yet measured).
[[nodiscard]] route_choice choose_route(const device_links& links);

}  // namespace lris::fanout
