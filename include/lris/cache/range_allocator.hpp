#pragma once
/// @file
/// @brief range_allocator: offsets within a fixed block of bytes (the residency manager's
/// device arena), first fit, freed ranges merged with their neighbours. It hands out offsets
/// only; the memory is the caller's.

#include <cstdint>
#include <iterator>
#include <map>
#include <optional>

#include <fmt/format.h>

#include <lris/error.hpp>

namespace lris::cache {

class range_allocator {
 public:
  /// @brief `capacity` bytes, every range a multiple of `alignment` (a power of two).
  explicit range_allocator(std::uint64_t capacity, std::uint64_t alignment = 256)
      : alignment_(alignment) {
    if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
      throw invalid_argument(fmt::format("range_allocator: alignment {} is not a power of two",
                                         alignment));
    }
    capacity_ = capacity / alignment * alignment;
    if (capacity_ > 0) free_.emplace(0, capacity_);
  }

  /// @brief `bytes` rounded up to the alignment.
  [[nodiscard]] std::uint64_t rounded(std::uint64_t bytes) const noexcept {
    return (bytes + alignment_ - 1) / alignment_ * alignment_;
  }
  /// @brief The offset of a free range of rounded(bytes), the lowest that fits; none if no
  /// free range is that long.
  [[nodiscard]] std::optional<std::uint64_t> allocate(std::uint64_t bytes) {
    const std::uint64_t n = rounded(bytes);
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      if (it->second < n) continue;
      const std::uint64_t at = it->first, left = it->second - n;
      free_.erase(it);
      if (left > 0) free_.emplace(at + n, left);
      used_ += n;
      return at;
    }
    return std::nullopt;
  }
  /// @brief Takes rounded(bytes) at `offset` (a multiple of the alignment); false when any of
  /// it is not free (nothing changes).
  [[nodiscard]] bool allocate_at(std::uint64_t offset, std::uint64_t bytes) {
    const std::uint64_t n = rounded(bytes);
    if (offset % alignment_ != 0 || offset > capacity_ || n > capacity_ - offset) return false;
    auto it = free_.upper_bound(offset);
    if (it == free_.begin()) return false;
    --it;
    const std::uint64_t at = it->first, len = it->second;
    if (offset + n > at + len) return false;
    free_.erase(it);
    if (offset > at) free_.emplace(at, offset - at);
    if (at + len > offset + n) free_.emplace(offset + n, at + len - offset - n);
    used_ += n;
    return true;
  }
  /// @brief Gives back what allocate(bytes) or allocate_at(offset, bytes) took at `offset`.
  void free(std::uint64_t offset, std::uint64_t bytes) {
    std::uint64_t at = offset, n = rounded(bytes);
    used_ -= n;
    auto next = free_.lower_bound(at);
    if (next != free_.begin()) {
      auto prev = std::prev(next);
      if (prev->first + prev->second == at) {
        at = prev->first;
        n += prev->second;
        free_.erase(prev);
      }
    }
    if (next != free_.end() && at + n == next->first) {
      n += next->second;
      free_.erase(next);
    }
    free_.emplace(at, n);
  }
  [[nodiscard]] std::uint64_t capacity() const noexcept { return capacity_; }
  [[nodiscard]] std::uint64_t used() const noexcept { return used_; }
  [[nodiscard]] std::uint64_t largest_free() const noexcept {
    std::uint64_t best = 0;
    for (const auto& [at, n] : free_) best = n > best ? n : best;
    return best;
  }

 private:
  std::uint64_t capacity_ = 0;
  std::uint64_t alignment_;
  std::uint64_t used_ = 0;
  std::map<std::uint64_t, std::uint64_t> free_;  // offset -> length
};

}  // namespace lris::cache
