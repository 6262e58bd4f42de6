#pragma once
/// @file
/// @brief lru: evicts the unit used longest ago. Good for access without a known order (several
/// models, requests); for a cyclic order larger than the budget it hits nothing, since it
/// evicts exactly the unit needed soonest (static_priority is the policy for a cycle).

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include <lris/cache/eviction_policy.hpp>

namespace lris::cache {

class lru {
 public:
  static constexpr std::string_view name = "lru";

  void reset(std::size_t units) { last_.assign(units, 0); }
  void on_access(unit_id u, std::uint64_t tick) { last_[u] = tick + 1; }
  void on_insert(unit_id u, std::uint64_t tick) { last_[u] = tick + 1; }
  void on_evict(unit_id) noexcept {}
  /// @brief The candidate used longest ago (the lowest id among equals).
  [[nodiscard]] unit_id victim(std::span<const unit_id> candidates, std::uint64_t) const {
    unit_id best = candidates.front();
    for (const unit_id u : candidates) {
      if (older(u, best)) best = u;
    }
    return best;
  }
  /// @brief `a` was used before `b` (or never, or as long ago with a lower id).
  [[nodiscard]] bool older(unit_id a, unit_id b) const noexcept {
    return last_[a] < last_[b] || (last_[a] == last_[b] && a < b);
  }

 private:
  std::vector<std::uint64_t> last_;  // tick of the last use + 1; 0: never used
};

static_assert(eviction_policy<lru>);

}  // namespace lris::cache
