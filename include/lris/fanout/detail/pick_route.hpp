#pragma once
/// @file
/// @brief fanout::detail::pick_route: the route of a fan-out, asked for or chosen from the
/// links between its devices (links_of: NVML for NVIDIA GPUs), with the reason, and NCCL
/// loaded where the route needs it.

#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include <lris/concepts/pci_backend.hpp>
#include <lris/concepts/peer_backend.hpp>
#include <lris/error.hpp>
#include <lris/fanout/detail/broadcaster.hpp>
#include <lris/fanout/nccl.hpp>
#include <lris/fanout/route.hpp>
#include <lris/sched/nvml_pcie.hpp>

namespace lris::fanout::detail {

// How the pipelines' devices reach each other: NVML's word for GPUs at PCI addresses (NVLink,
// or the PCIe path); one memory for the host backend's devices; unknown otherwise.
template <class Pipeline>
device_links links_of(std::span<Pipeline> pipelines, const std::vector<std::string>& names) {
  using Backend = typename Pipeline::backend_type;
  const std::size_t n = pipelines.size();
  device_links links = device_links::uniform(names, link_kind::unknown);
  if constexpr (Backend::name == std::string_view("host")) {
    for (std::size_t a = 0; a < n; ++a) {
      for (std::size_t b = 0; b < n; ++b) links.set(a, b, link_kind::pcie, "one host memory");
    }
  } else if constexpr (pci_backend<Backend>) {
    const auto& nvml = pipelines.front().context()->nvml()->get();
    std::vector<std::string> bus(n);
    for (std::size_t d = 0; d < n; ++d) bus[d] = pipelines[d].backend().pci_bus_id();
    for (std::size_t a = 0; a < n; ++a) {
      for (std::size_t b = 0; b < n; ++b) {
        if (a == b) continue;
        const auto l = nvml.link(bus[a], bus[b]);
        if (!l) {
          links.set(a, b, link_kind::unknown,
                    nvml.available() ? fmt::format("an unknown link (NVML knows no GPU at {} or {})",
                                                   bus[a], bus[b])
                                     : fmt::format("an unknown link (NVML: {})", nvml.why()));
        } else if (l->nvlink) {
          links.set(a, b, link_kind::nvlink, "NVLink (NVML)");
        } else {
          links.set(a, b, link_kind::pcie,
                    fmt::format("PCIe through {} (NVML)", sched::describe_pcie_level(l->pcie_level)));
        }
      }
    }
  }
  return links;
}

/// @brief The route taken, why, and the NCCL it loaded (nccl route only).
struct picked_route {
  fan_path path = fan_path::dma;
  std::string reason;
  std::shared_ptr<const nccl_library> nccl;
};

/// @brief The route of a fan-out onto `pipelines` (named `names`, loading `file`): `asked`, or
/// for fan_path::automatic the one choose_route picks from the links. The peer route, asked for, needs
/// every pair to reach each other's memory; chosen, it falls back to dma where one cannot.
/// @throws lris::unsupported naming the pair that cannot reach each other (peer), the backend
/// without streams, or why NCCL did not load (nccl).
template <class Pipeline>
picked_route pick_route(std::span<Pipeline> pipelines, const std::vector<std::string>& names,
                        fan_path asked, const std::string& nccl_path,
                        const std::string& file) {
  using Backend = typename Pipeline::backend_type;
  const std::size_t n = pipelines.size();
  picked_route r;
  auto load_nccl = [&] {
    if constexpr (collective_backend<Backend>) {
      if (!r.nccl) r.nccl = std::make_shared<const nccl_library>(Backend::name, nccl_path);
    }
  };
  if (asked == fan_path::automatic) {
    const route_choice choice = choose_route(links_of(pipelines, names));
    r.path = choice.path;
    r.reason = choice.reason;
  } else {
    r.path = asked;
    r.reason = fmt::format("asked for ({})", to_string(asked));
  }
  if (r.path == fan_path::nccl) {
    load_nccl();
    if (!r.nccl) {
      throw unsupported(fmt::format("fan-out load {}: the nccl route needs a GPU backend with "
                                    "streams; {} has none", file, Backend::name));
    }
    if (!r.nccl->available()) {
      throw unsupported(fmt::format("fan-out load {}: the nccl route needs NCCL: {}", file,
                                    r.nccl->why()));
    }
  } else {
    r.nccl.reset();
  }
  if (r.path != fan_path::peer) return r;
  if (n == 1) {
    r.path = fan_path::dma;
    return r;
  }
  // Peer copies need every device to reach every other's memory.
  if constexpr (peer_backend<Backend>) {
    for (std::size_t d = 0; d < n; ++d) {
      Backend b = pipelines[d].backend();
      for (std::size_t e = 0; e < n; ++e) {
        if (e == d || b.enable_peer_access(pipelines[e].backend().device())) continue;
        if (asked == fan_path::peer) {
          throw unsupported(fmt::format("fan-out load {}: the peer route needs {} to reach {}'s "
                                        "memory, and it cannot (fan_path::dma works)", file,
                                        names[d], names[e]));
        }
        r.path = fan_path::dma;
        r.reason += fmt::format("; but {} cannot reach {}'s memory: each device from the "
                                "pinned slots instead", names[d], names[e]);
        return r;
      }
    }
  } else {
    if (asked == fan_path::peer) {
      throw unsupported(fmt::format("fan-out load {}: the peer route needs a backend whose "
                                    "devices copy to each other; {} has none", file,
                                    Backend::name));
    }
    r.path = fan_path::dma;
  }
  return r;
}

}  // namespace lris::fanout::detail
