#pragma once
/// @file
/// @brief score_policy: the caller scores units as it learns about them (e.g. how often a
/// mixture-of-experts router picked each expert); the lowest score leaves first, and among
/// equal scores the unit used longest ago.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include <lris/cache/eviction_policy.hpp>
#include <lris/cache/lru.hpp>
#include <lris/error.hpp>

namespace lris::cache {

class score_policy {
 public:
  static constexpr std::string_view name = "score";

  void reset(std::size_t units) {
    score_.assign(units, 0.0);
    recency_.reset(units);
  }
  /// @brief Sets unit `u`'s score; higher stays longer.
  /// @throws lris::invalid_argument for a unit not registered (after reset()).
  void set_score(unit_id u, double score) {
    if (u >= score_.size()) {
      throw invalid_argument(fmt::format("score_policy: unit {} is not registered ({} units)",
                                         u, score_.size()));
    }
    score_[u] = score;
  }
  [[nodiscard]] double score(unit_id u) const noexcept { return u < score_.size() ? score_[u] : 0; }

  void on_access(unit_id u, std::uint64_t tick) { recency_.on_access(u, tick); }
  void on_insert(unit_id u, std::uint64_t tick) { recency_.on_insert(u, tick); }
  void on_evict(unit_id) noexcept {}
  [[nodiscard]] unit_id victim(std::span<const unit_id> candidates, std::uint64_t) const {
    unit_id best = candidates.front();
    for (const unit_id u : candidates) {
      if (score_[u] < score_[best] || (score_[u] == score_[best] && recency_.older(u, best))) {
        best = u;
      }
    }
    return best;
  }

 private:
  std::vector<double> score_;
  lru recency_;  // among equal scores
};

static_assert(eviction_policy<score_policy>);

}  // namespace lris::cache
