#pragma once
/// @file
/// @brief next_use: evicts the unit whose next use in a declared order comes last (units the
/// order does not name, or a finished sequence no longer needs, first): the oracle's choice,
/// made from the order a model's passes follow. On that order it hits what cache::belady hits,
/// one unit more per pass of a cycle than static_priority, by changing which units it keeps.

#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include <lris/cache/eviction_policy.hpp>
#include <lris/error.hpp>

namespace lris::cache {

class next_use {
 public:
  static constexpr std::string_view name = "next_use";

  /// @brief Without an order every unit is as far as any other: the highest id leaves first.
  next_use() = default;

  /// @brief The policy of `order` (a cycle when `cyclic`), over units 0..units-1. A unit listed
  /// twice counts at its first place.
  /// @throws lris::invalid_argument when the order names a unit not below `units`.
  [[nodiscard]] static next_use from_order(std::span<const unit_id> order, bool cyclic,
                                           std::size_t units) {
    next_use p;
    p.cyclic_ = cyclic;
    p.length_ = order.size();
    p.place_.assign(units, unplaced);
    for (std::size_t i = 0; i < order.size(); ++i) {
      if (order[i] >= units) {
        throw invalid_argument(fmt::format("next_use: the order names unit {} at position {}, "
                                           "but there are {} units", order[i], i, units));
      }
      if (p.place_[order[i]] == unplaced) p.place_[order[i]] = i;
    }
    return p;
  }

  void reset(std::size_t units) {
    if (place_.size() < units) place_.resize(units, unplaced);
    now_ = unplaced;
  }
  /// @brief The order's position moves to `u`'s place (units it does not name leave it).
  void on_access(unit_id u, std::uint64_t) noexcept {
    if (u < place_.size() && place_[u] != unplaced) now_ = place_[u];
  }
  void on_insert(unit_id, std::uint64_t) noexcept {}
  void on_evict(unit_id) noexcept {}
  /// @brief The candidate needed last (never: first; the highest id among equals).
  [[nodiscard]] unit_id victim(std::span<const unit_id> candidates, std::uint64_t) const {
    unit_id best = candidates.front();
    for (const unit_id u : candidates) {
      const std::uint64_t du = distance(u), db = distance(best);
      if (du > db || (du == db && u > best)) best = u;
    }
    return best;
  }
  /// @brief Accesses until `u` is used next, counted in the order from its present position
  /// (the unit used now: a whole cycle); the largest value for never.
  [[nodiscard]] std::uint64_t distance(unit_id u) const noexcept {
    if (u >= place_.size() || place_[u] == unplaced) return never;
    const std::size_t p = place_[u];
    if (now_ == unplaced) return p + 1;  // before the first access
    if (p > now_) return p - now_;
    return cyclic_ ? p + length_ - now_ : never;
  }

 private:
  static constexpr std::size_t unplaced = std::numeric_limits<std::size_t>::max();
  static constexpr std::uint64_t never = std::numeric_limits<std::uint64_t>::max();
  std::vector<std::size_t> place_;  // per unit: its first place in the order
  std::size_t length_ = 0;
  std::size_t now_ = unplaced;      // the place of the last access
  bool cyclic_ = false;
};

static_assert(eviction_policy<next_use>);

}  // namespace lris::cache
