// The sysfs reads a GPU runtime cannot answer: PCIe link generation and width, NUMA node.
#include <lris/system/pci_link.hpp>

#include <algorithm>
#include <cstdint>

#include <fmt/format.h>

#include <lris/system/detail/text_files.hpp>

namespace lris {
namespace {

namespace fs = std::filesystem;

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

}  // namespace

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

}  // namespace lris
