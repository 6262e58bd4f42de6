#pragma once
/// @file
/// @brief static_priority: every unit has a fixed priority; the lowest leaves first. Built from
/// a declared order (first in the order, highest priority), it keeps a fixed part of the order
/// resident and streams the rest through what is left of the budget: for a cycle, the most a
/// budget can hit (the Belady bound, (budget - staging) / model bytes of every pass).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include <lris/cache/eviction_policy.hpp>
#include <lris/error.hpp>

namespace lris::cache {

class static_priority {
 public:
  static constexpr std::string_view name = "static_priority";

  /// @brief Units ranked by id: unit 0 the highest priority.
  static_priority() = default;
  /// @brief `priority[u]` for each unit; higher stays longer. Units past its end rank lowest.
  explicit static_priority(std::vector<double> priority) : priority_(std::move(priority)) {}

  /// @brief Priorities from a declared order: its first unit the highest; units not in it
  /// below all that are (a unit listed twice keeps its first place).
  /// @throws lris::invalid_argument when the order names a unit not below `units`.
  [[nodiscard]] static static_priority from_order(std::span<const unit_id> order,
                                                  std::size_t units) {
    std::vector<double> p(units, 0.0);
    std::vector<bool> seen(units, false);
    for (std::size_t i = 0; i < order.size(); ++i) {
      const unit_id u = order[i];
      if (u >= units) {
        throw invalid_argument(fmt::format("static_priority: the order names unit {} at "
                                           "position {}, but there are {} units", u, i, units));
      }
      if (seen[u]) continue;
      seen[u] = true;
      p[u] = static_cast<double>(order.size() - i);
    }
    return static_priority(std::move(p));
  }

  void reset(std::size_t) noexcept {}
  void on_access(unit_id, std::uint64_t) noexcept {}
  void on_insert(unit_id, std::uint64_t) noexcept {}
  void on_evict(unit_id) noexcept {}
  /// @brief The candidate of lowest priority (the highest id among equals: by default the
  /// last registered leaves first).
  [[nodiscard]] unit_id victim(std::span<const unit_id> candidates, std::uint64_t) const {
    unit_id best = candidates.front();
    for (const unit_id u : candidates) {
      const double pu = priority(u), pb = priority(best);
      if (pu < pb || (pu == pb && u > best)) best = u;
    }
    return best;
  }
  [[nodiscard]] double priority(unit_id u) const noexcept {
    if (priority_.empty()) return -static_cast<double>(u);
    return u < priority_.size() ? priority_[u] : -1.0;
  }

 private:
  std::vector<double> priority_;
};

static_assert(eviction_policy<static_priority>);

}  // namespace lris::cache
