#pragma once
/// @file
/// @brief Reading small text files of /proc and /sys without ever throwing: their content is
/// outside our control, and a container may lack them altogether.

#include <charconv>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

namespace lris::detail {

/// @brief `text` without leading and trailing white space.
[[nodiscard]] inline std::string_view trim(std::string_view text) noexcept {
  const auto first = text.find_first_not_of(" \t\n\r");
  if (first == std::string_view::npos) return {};
  const auto last = text.find_last_not_of(" \t\n\r");
  return text.substr(first, last - first + 1);
}

/// @brief The whole file, or nullopt when it cannot be read.
[[nodiscard]] inline std::optional<std::string> read_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return std::nullopt;
  return text;
}

/// @brief The number `text` holds (white space around it allowed), or nullopt: from_chars, so
/// malformed input never throws.
template <typename T>
[[nodiscard]] std::optional<T> parse_number(std::string_view text, int base = 10) noexcept {
  text = trim(text);
  T value{};
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, base);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  return value;
}

/// @brief The number a file holds, or nullopt.
template <typename T>
[[nodiscard]] std::optional<T> read_number(const std::filesystem::path& path) {
  const auto text = read_file(path);
  if (!text) return std::nullopt;
  return parse_number<T>(*text);
}

}  // namespace lris::detail
