#pragma once
/// @file
/// @brief fanout::detail::rank_sums: each device's tensors' checksums, in order, checked
/// across the devices of one tensor-parallel rank (which hold the same parts), for a
/// fan-out's verify.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <lris/element/checksum.hpp>
#include <lris/error.hpp>

namespace lris::fanout::detail {

class rank_sums {
 public:
  /// @brief For `names.size()` devices, device d being rank d % tp, of `tensors` tensors each.
  rank_sums(std::vector<std::string> names, unsigned tp, std::size_t tensors)
      : names_(std::move(names)), tp_(tp), sums_(names_.size(), std::vector<std::uint64_t>(tensors)) {}

  /// @brief The checksum of device d's i-th tensor, `name`: checked against the device of
  /// the same rank before it (d % tp) once both have theirs; give devices of a rank in order.
  /// @throws lris::integrity_error naming `what` (the load), the tensor, both devices and
  /// both checksums when they differ.
  void add(std::size_t d, std::size_t i, const std::byte* data, std::size_t bytes,
           std::string_view name, std::string_view what) {
    sums_[d][i] = block_hash(data, bytes);
    const std::size_t first = d % tp_;
    if (d != first && sums_[d][i] != sums_[first][i]) {
      throw integrity_error(fmt::format(
          "fan-out load {}: tensor \"{}\": device {} ({}) has checksum {:016x}, device {} ({}) "
          "of the same rank {:016x}", what, name, d, names_[d], sums_[d][i], first,
          names_[first], sums_[first][i]));
    }
  }
  /// @brief Device d's checksums combined, in order (0 for none).
  [[nodiscard]] std::uint64_t digest(std::size_t d) const {
    return sums_[d].empty() ? 0 : combine_block_hashes(sums_[d].data(), sums_[d].size());
  }

 private:
  std::vector<std::string> names_;
  unsigned tp_;
  std::vector<std::vector<std::uint64_t>> sums_;
};

/// @brief The offset of the first byte where `a` and `b` differ, or `bytes` when none does.
[[nodiscard]] inline std::size_t first_difference(const std::byte* a, const std::byte* b,
                                                  std::size_t bytes) noexcept {
  if (bytes == 0 || std::memcmp(a, b, bytes) == 0) return bytes;
  return static_cast<std::size_t>(std::mismatch(a, a + bytes, b).first - a);
}

}  // namespace lris::fanout::detail
