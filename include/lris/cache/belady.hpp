#pragma once
/// @file
/// @brief belady: the oracle that knows the whole sequence of accesses and evicts the unit
/// used again farthest in the future (never again first). For units of one size no policy
/// hits more; for units of several sizes it is the standard greedy bound. The residency
/// manager runs it beside the real policy to report how far from the best that policy is.

#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include <lris/cache/eviction_policy.hpp>
#include <lris/error.hpp>

namespace lris::cache {

class belady {
 public:
  static constexpr std::string_view name = "belady";
  static constexpr std::uint64_t never = std::numeric_limits<std::uint64_t>::max();

  /// @brief The oracle of `sequence`: access `tick` of the run is sequence[tick].
  explicit belady(std::span<const unit_id> sequence) : sequence_(sequence.begin(), sequence.end()) {}

  void reset(std::size_t units) {
    next_use_.assign(units, never);
    next_.assign(sequence_.size(), never);
    std::vector<std::uint64_t> seen(units, never);
    for (std::size_t t = sequence_.size(); t-- > 0;) {
      const unit_id u = sequence_[t];
      if (u >= units) {
        throw invalid_argument(fmt::format("belady: access {} names unit {}, but there are {} "
                                           "units", t, u, units));
      }
      next_[t] = seen[u];
      seen[u] = t;
    }
  }
  /// @throws lris::invalid_argument when `u` is not the unit the sequence has at `tick`.
  void on_access(unit_id u, std::uint64_t tick) {
    if (tick >= sequence_.size() || sequence_[tick] != u) {
      throw invalid_argument(fmt::format("belady: access {} is to unit {}, but the sequence it "
                                         "was given has {} there", tick, u,
                                         tick < sequence_.size()
                                             ? fmt::format("unit {}", sequence_[tick])
                                             : std::string("nothing")));
    }
    next_use_[u] = next_[tick];
  }
  void on_insert(unit_id, std::uint64_t) noexcept {}
  void on_evict(unit_id) noexcept {}
  /// @brief The candidate used again last (or never), the highest id among equals.
  [[nodiscard]] unit_id victim(std::span<const unit_id> candidates, std::uint64_t) const {
    unit_id best = candidates.front();
    for (const unit_id u : candidates) {
      if (next_use_[u] > next_use_[best] || (next_use_[u] == next_use_[best] && u > best)) best = u;
    }
    return best;
  }

 private:
  std::vector<unit_id> sequence_;
  std::vector<std::uint64_t> next_;      // per access: the next access to the same unit
  std::vector<std::uint64_t> next_use_;  // per unit: its next access after the last one
};

static_assert(eviction_policy<belady>);

}  // namespace lris::cache
