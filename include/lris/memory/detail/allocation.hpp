#pragma once
/// @file
/// @brief Checks and error messages shared by every allocator: alignment validation, size
/// rounding with overflow detection, and out_of_memory messages that name the allocator.

#include <concepts>
#include <cstddef>
#include <limits>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include <lris/error.hpp>

namespace lris::detail {

/// @brief True when `x` is a (non-zero) power of two.
[[nodiscard]] constexpr bool is_power_of_two(std::size_t x) noexcept {
  return x != 0 && (x & (x - 1)) == 0;
}

/// @brief "1.5 GiB"-style rendering of a byte count, for messages only.
[[nodiscard]] inline std::string human_bytes(std::size_t bytes) {
  constexpr std::string_view units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(bytes);
  std::size_t u = 0;
  while (v >= 1024.0 && u + 1 < std::size(units)) {
    v /= 1024.0;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.1f} {}", v, units[u]);
}

/// @brief Throws lris::invalid_argument unless `alignment` is a power of two.
inline void check_alignment(std::string_view who, std::size_t alignment) {
  if (LRIS_UNLIKELY(!is_power_of_two(alignment))) {
    throw invalid_argument(
        fmt::format("{}: alignment {} is not a power of two", who, alignment));
  }
}

/// @brief Throws lris::out_of_memory naming the allocator, the request and why it failed.
[[noreturn]] inline void throw_out_of_memory(std::string_view who, std::size_t bytes,
                                             std::size_t alignment, std::string_view reason) {
  throw out_of_memory(fmt::format("{}: cannot allocate {} bytes ({}, alignment {}){}{}", who,
                                  bytes, human_bytes(bytes), alignment,
                                  reason.empty() ? "" : ": ", reason),
                      bytes);
}

/// @brief `bytes` rounded up to a multiple of `granule` (a power of two). A result that would
/// wrap past SIZE_MAX is an out_of_memory for `who`, not a small allocation.
[[nodiscard]] inline std::size_t round_up(std::string_view who, std::size_t bytes,
                                          std::size_t granule, std::size_t alignment) {
  if (LRIS_UNLIKELY(bytes > std::numeric_limits<std::size_t>::max() - (granule - 1))) {
    throw_out_of_memory(who, bytes, alignment, "the size overflows when rounded");
  }
  return (bytes + granule - 1) & ~(granule - 1);
}

/// @brief `a + b`, or out_of_memory for `who` when the sum overflows.
[[nodiscard]] inline std::size_t checked_add(std::string_view who, std::size_t bytes,
                                             std::size_t extra, std::size_t alignment) {
  if (LRIS_UNLIKELY(bytes > std::numeric_limits<std::size_t>::max() - extra)) {
    throw_out_of_memory(who, bytes, alignment, "the size overflows with alignment padding");
  }
  return bytes + extra;
}

/// @brief `A::name` where the allocator publishes one, else "allocator": for messages.
template <class A>
[[nodiscard]] constexpr std::string_view allocator_name() noexcept {
  if constexpr (requires { { A::name } -> std::convertible_to<std::string_view>; }) {
    return A::name;
  } else {
    return "allocator";
  }
}

/// @brief Zero-byte requests get one byte so that each returns a distinct, freeable pointer;
/// allocate and deallocate both apply it so that the sizes they pass on agree.
[[nodiscard]] constexpr std::size_t at_least_one(std::size_t bytes) noexcept {
  return bytes == 0 ? 1 : bytes;
}

}  // namespace lris::detail
