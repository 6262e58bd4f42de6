#pragma once
// The devices Python users name: "cpu" (or "host"), "cuda", "cuda:1".

#include <string>
#include <utility>

#include <fmt/format.h>

#include <lris/error.hpp>

namespace lris::python {

/// @brief ("cpu" or the kind, device number) from "cpu", "host", "cuda", "cuda:1".
/// @throws lris::invalid_argument when the number is not one.
[[nodiscard]] inline std::pair<std::string, int> parse_device(const std::string& text) {
  const auto colon = text.find(':');
  std::string kind = text.substr(0, colon);
  int index = 0;
  if (colon != std::string::npos) {
    const std::string n = text.substr(colon + 1);
    if (n.empty() || n.size() > 6 || n.find_first_not_of("0123456789") != std::string::npos) {
      throw invalid_argument(fmt::format("device \"{}\": the device number is not a number", text));
    }
    index = std::stoi(n);
  }
  if (kind == "host") kind = "cpu";
  return {kind, index};
}

}  // namespace lris::python
