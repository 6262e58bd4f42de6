#pragma once
/// @file
/// @brief lris::priority: how urgent a piece of work is, for the thread lanes that run it and
/// the bandwidth tokens it takes.

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace lris {

enum class priority : std::uint8_t {
  critical,    ///< latency first: the next layer's weights
  normal,      ///< ordinary transfers
  background,  ///< prefetch and bulk copies
};

inline constexpr std::size_t priority_count = 3;

/// @brief "critical", "normal" or "background".
[[nodiscard]] constexpr std::string_view to_string(priority p) noexcept {
  switch (p) {
    case priority::critical: return "critical";
    case priority::normal: return "normal";
    case priority::background: return "background";
  }
  return "?";
}

}  // namespace lris
