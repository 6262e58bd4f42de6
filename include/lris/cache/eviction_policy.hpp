#pragma once
/// @file
/// @brief eviction_policy: which resident unit leaves when a unit must come in and the budget
/// is full. The residency manager (and cache::simulate) tells the policy what happens to the
/// units and asks it for a victim among the units that may leave (resident, not leased, not
/// pinned); the policy only chooses.

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace lris::cache {

/// @brief A unit of residency (a layer, block or expert: a named set of tensors), by its index
/// in the order units were registered.
using unit_id = std::uint32_t;

/// @brief What every policy offers:
///  - `name`: for reports ("lru", "static_priority", ...);
///  - `reset(units)`: forget everything; units 0..units-1 exist;
///  - `on_access(u, tick)`: `u` was used at `tick` (a counter of accesses that only grows),
///    whether it was resident (a hit) or had to come in;
///  - `on_insert(u, tick)` / `on_evict(u)`: `u` became resident / left;
///  - `victim(candidates, tick)`: one of `candidates` (never empty, no duplicates) to evict.
template <class P>
concept eviction_policy =
    requires(P& p, unit_id u, std::uint64_t tick, std::size_t units,
             std::span<const unit_id> candidates) {
      { P::name } -> std::convertible_to<std::string_view>;
      p.reset(units);
      p.on_access(u, tick);
      p.on_insert(u, tick);
      p.on_evict(u);
      { p.victim(candidates, tick) } -> std::same_as<unit_id>;
    };

}  // namespace lris::cache
