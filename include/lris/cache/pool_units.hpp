#pragma once
/// @file
/// @brief add_pool_units: a residency manager's units kept in a host pool (one copy of the
/// model in shared memory for every process and GPU): nothing is copied into the manager's own
/// pinned memory; each unit comes in straight from the pool.

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include <lris/cache/residency_manager.hpp>
#include <lris/error.hpp>
#include <lris/pool/host_pool.hpp>

namespace lris::cache {

/// @brief Adds a unit to `rm` for each name `unit_of` gives the ready tensors of `pool` (a
/// tensor it names "" is left out), in the order of their first tensor in the pool, each kept
/// in the pool (residency_manager::add_host_unit): the bytes from its first tensor to the end of
/// its last. The pool must outlive the manager; pin it (pool_registration) for DMA. Returns the
/// new units' ids in that order. Every unit is checked before any is added; units added
/// before one that add_host_unit refuses stay.
/// @throws lris::invalid_argument naming the unit and the tensor when another unit's tensor
/// lies between two of its own in the pool (its bytes would come in with it), when the pool's
/// place for a tensor is not aligned for the manager, and what add_host_unit throws.
template <class Manager>
std::vector<unit_id> add_pool_units(Manager& rm, pool::host_pool& pool,
                                    const std::function<std::string(std::string_view)>& unit_of) {
  struct unit {
    std::string name;
    std::vector<pool::pool_tensor> tensors;
  };
  if (const auto i = pool.info(); i.filling > 0) {
    throw invalid_argument(fmt::format("add_pool_units: pool \"{}\" has {} tensors being filled; "
                                       "units are made of a pool once it is filled", pool.name(),
                                       i.filling));
  }
  std::vector<unit> units;
  std::map<std::string, std::size_t, std::less<>> index;
  std::vector<std::pair<std::uint64_t, std::string>> owner;  // each tensor's offset -> its unit
  for (auto& t : pool.tensors()) {
    std::string name = unit_of(t.name);
    if (name.empty()) continue;
    const auto [it, fresh] = index.try_emplace(name, units.size());
    if (fresh) {
      if (rm.find(name)) {
        throw invalid_argument(fmt::format("residency_manager: a unit called \"{}\" exists (from "
                                           "tensor \"{}\" of pool \"{}\")", name, t.name,
                                           pool.name()));
      }
      units.push_back({name, {}});
    }
    owner.emplace_back(t.offset, name);
    units[it->second].tensors.push_back(std::move(t));
  }
  std::sort(owner.begin(), owner.end());
  struct planned {
    std::string name;
    std::byte* host;
    std::uint64_t bytes;
    std::vector<placed_tensor> tensors;
  };
  std::vector<planned> plan;
  for (const auto& u : units) {
    std::uint64_t first = u.tensors.front().offset, end = first;
    for (const auto& t : u.tensors) {
      first = std::min(first, t.offset);
      end = std::max(end, t.offset + t.bytes);
    }
    for (auto it = std::lower_bound(owner.begin(), owner.end(), std::make_pair(first, std::string()));
         it != owner.end() && it->first < end; ++it) {
      if (it->second != u.name) {
        throw invalid_argument(fmt::format(
            "add_pool_units: pool \"{}\" holds a tensor of unit \"{}\" at offset {}, between "
            "tensors of unit \"{}\" ({} to {}): fill the pool in unit order", pool.name(),
            it->second, it->first, u.name, first, end));
      }
    }
    planned p{u.name, pool.data() + first, end - first, {}};
    for (const auto& t : u.tensors) p.tensors.push_back({std::string(t.name), t.offset - first, t.bytes});
    plan.push_back(std::move(p));
  }
  std::vector<unit_id> ids;
  for (const auto& p : plan) ids.push_back(rm.add_host_unit(p.name, p.host, p.bytes, p.tensors));
  return ids;
}

}  // namespace lris::cache
