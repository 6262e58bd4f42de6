#pragma once
/// @file
/// @brief simulate: a sequence of accesses to units of known sizes run through a policy under a
/// byte budget, without memory or devices: the hit and miss bytes any residency manager with
/// that policy would see (no lookahead, one unit in use at a time). With cache::belady it gives
/// the bound the statistics compare against.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include <fmt/format.h>

#include <lris/cache/eviction_policy.hpp>
#include <lris/error.hpp>

namespace lris::cache {

/// @brief What a simulated run did.
struct simulation {
  std::uint64_t accesses = 0;
  std::uint64_t hit_bytes = 0;      ///< bytes of accesses to resident units
  std::uint64_t miss_bytes = 0;     ///< bytes brought in
  std::uint64_t evictions = 0;
  std::uint64_t evicted_bytes = 0;
  std::uint64_t peak_bytes = 0;     ///< the most bytes resident at once
};

/// @brief Runs `sequence` (unit ids) through `policy` (reset first) with `budget` bytes for
/// resident units of `unit_bytes`. The unit being accessed is never a victim; `pinned` units
/// stay once they are in.
/// @throws lris::invalid_argument naming the access, unit and sizes for an unknown unit, a
/// unit larger than the budget, a unit that cannot fit beside the pinned ones, or a policy
/// that chose a unit not offered.
template <eviction_policy Policy>
simulation simulate(Policy& policy, std::span<const std::uint64_t> unit_bytes,
                    std::span<const unit_id> sequence, std::uint64_t budget,
                    std::span<const unit_id> pinned = {}) {
  const std::size_t units = unit_bytes.size();
  policy.reset(units);
  std::vector<bool> is_pinned(units, false), resident(units, false);
  for (const unit_id u : pinned) {
    if (u >= units) {
      throw invalid_argument(fmt::format("simulate: pinned unit {} is not one of the {} units", u,
                                         units));
    }
    is_pinned[u] = true;
  }
  simulation r;
  std::uint64_t held = 0, pinned_held = 0;
  std::vector<unit_id> candidates;
  for (std::size_t t = 0; t < sequence.size(); ++t) {
    const unit_id u = sequence[t];
    if (u >= units) {
      throw invalid_argument(fmt::format("simulate: access {} names unit {}, but there are {} "
                                         "units", t, u, units));
    }
    const std::uint64_t need = unit_bytes[u];
    ++r.accesses;
    if (resident[u]) {
      r.hit_bytes += need;
      policy.on_access(u, t);
      continue;
    }
    if (need > budget) {
      throw invalid_argument(fmt::format("simulate: unit {} needs {} bytes, more than the budget "
                                         "of {} bytes", u, need, budget));
    }
    while (held + need > budget) {
      candidates.clear();
      for (unit_id v = 0; v < units; ++v) {
        if (resident[v] && !is_pinned[v]) candidates.push_back(v);
      }
      if (candidates.empty()) {
        throw invalid_argument(fmt::format(
            "simulate: unit {} ({} bytes) does not fit: {} of the budget's {} bytes hold pinned "
            "units", u, need, pinned_held, budget));
      }
      const unit_id v = policy.victim(candidates, t);
      if (std::find(candidates.begin(), candidates.end(), v) == candidates.end()) {
        throw invalid_argument(fmt::format("simulate: policy {} chose unit {} to evict, which "
                                           "was not offered", Policy::name, v));
      }
      resident[v] = false;
      held -= unit_bytes[v];
      ++r.evictions;
      r.evicted_bytes += unit_bytes[v];
      policy.on_evict(v);
    }
    resident[u] = true;
    held += need;
    if (is_pinned[u]) pinned_held += need;
    r.peak_bytes = std::max(r.peak_bytes, held);
    r.miss_bytes += need;
    policy.on_insert(u, t);
    policy.on_access(u, t);
  }
  return r;
}

}  // namespace lris::cache
