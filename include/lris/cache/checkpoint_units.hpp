#pragma once
/// @file
/// @brief add_checkpoint_units: a residency manager's units from a safetensors checkpoint,
/// each tensor read from the files straight into its unit's pinned block (no other copy of
/// the model in host memory).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include <lris/cache/residency_manager.hpp>
#include <lris/error.hpp>
#include <lris/formats/checkpoint.hpp>
#include <lris/formats/load.hpp>

namespace lris::cache {

/// @brief Adds a unit to `rm` for each name `unit_of` gives the tensors of `ck` (a tensor it
/// names "" is left out), units in the order of their first tensor in the checkpoint, tensors
/// in checkpoint order; reads them through `p` into the units' pinned blocks. Returns the new
/// units' ids in that order. Nothing is added when a name is taken or a read fails.
/// @throws what residency_manager::draft_unit and add_unit throw (a unit larger than the
/// budget, a name taken), and what safetensors::load_into throws (a read that fails).
template <class Manager, class Pipeline>
std::vector<unit_id> add_checkpoint_units(
    Manager& rm, Pipeline& p, const safetensors::checkpoint& ck,
    const std::function<std::string(std::string_view)>& unit_of) {
  using tensor_size = typename Manager::tensor_size;
  std::vector<std::string> order;                          // unit names, first seen first
  std::vector<std::vector<tensor_size>> sizes;             // per unit
  std::map<std::string, std::size_t, std::less<>> index;   // unit name -> its place in order
  std::map<std::string, std::pair<std::size_t, std::size_t>, std::less<>> where;  // tensor -> unit, index
  safetensors::load_options o;
  for (const auto& t : ck.tensors()) {
    std::string unit = unit_of(t.info->name);
    if (unit.empty()) continue;
    const auto [it, fresh] = index.try_emplace(unit, order.size());
    if (fresh) {
      if (rm.find(unit)) {
        throw invalid_argument(fmt::format("residency_manager: a unit called \"{}\" exists "
                                           "(from tensor \"{}\" of {})", unit, t.info->name,
                                           ck.path().string()));
      }
      order.push_back(unit);
      sizes.emplace_back();
    }
    where[t.info->name] = {it->second, sizes[it->second].size()};
    sizes[it->second].push_back({t.info->name, t.info->bytes()});
    o.names.push_back(t.info->name);
  }
  std::vector<typename Manager::unit_draft> drafts;
  drafts.reserve(order.size());
  for (std::size_t i = 0; i < order.size(); ++i) drafts.push_back(rm.draft_unit(order[i], sizes[i]));
  if (!o.names.empty()) {
    safetensors::load_into(p, ck, [&](const safetensors::tensor_request& r) {
      const auto& [u, i] = where.find(r.name)->second;
      return as_host(drafts[u].tensor(i), static_cast<std::size_t>(r.bytes));
    }, o);
  }
  std::vector<unit_id> ids;
  for (auto& d : drafts) ids.push_back(rm.add_unit(std::move(d)));
  return ids;
}

}  // namespace lris::cache
