#pragma once
// A field of the /proc/self/smaps entry that holds an address: what the kernel says backs it.

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>

namespace lris::test {

// `field` ("Anonymous", "AnonHugePages", ...) of the /proc/self/smaps entry that contains
// `p`, in kB; -1 when not found.
inline long smaps_kb(const void* p, std::string_view field) {
  std::ifstream in("/proc/self/smaps");
  std::string line;
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  const std::string key = std::string(field) + ":";
  bool inside = false;
  while (std::getline(in, line)) {
    std::uintptr_t lo = 0, hi = 0;
    char dash = 0;
    std::istringstream head(line);
    if (head >> std::hex >> lo >> dash >> hi && dash == '-') {
      inside = lo <= a && a < hi;
      continue;
    }
    if (inside && line.rfind(key, 0) == 0) return std::stol(line.substr(key.size()));
  }
  return -1;
}

}  // namespace lris::test
