#pragma once
/// @file
/// @brief format_bytes: a byte count in binary units for people ("1.5 GiB", "512 B").

#include <array>
#include <cstdint>
#include <string>

#include <fmt/format.h>

namespace lris {

/// @brief Formats `bytes` with the largest binary unit (B, KiB, MiB, ... EiB) that keeps the
/// value at least 1, rounded half-up to one decimal; a ".0" is dropped.
///
/// Examples: 512 -> "512 B", 1536 -> "1.5 KiB", 65536 -> "64 KiB", 1610612736 -> "1.5 GiB",
/// 1048575 -> "1 MiB" (1023.99 KiB rounds up into the next unit), UINT64_MAX -> "16 EiB".
/// Exact integer arithmetic, so the result never depends on floating-point rounding.
[[nodiscard]] inline std::string format_bytes(std::uint64_t bytes) {
  static constexpr std::array<const char*, 7> units{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) return fmt::format("{} B", bytes);
  std::size_t unit = 0;
  std::uint64_t divisor = 1;
  while (unit + 1 < units.size() && bytes / divisor >= 1024) {
    divisor *= 1024;
    ++unit;
  }
  std::uint64_t whole = bytes / divisor;
  // remainder < divisor <= 2^60, so remainder * 10 cannot overflow 64 bits.
  const std::uint64_t remainder = bytes % divisor;
  std::uint64_t tenths = (remainder * 10 + divisor / 2) / divisor;
  if (tenths == 10) {
    ++whole;
    tenths = 0;
  }
  // 1023.96 KiB rounds to 1024 KiB, which reads better as 1 MiB.
  if (whole == 1024 && unit + 1 < units.size()) {
    whole = 1;
    ++unit;
  }
  if (tenths == 0) return fmt::format("{} {}", whole, units[unit]);
  return fmt::format("{}.{} {}", whole, tenths, units[unit]);
}

}  // namespace lris
