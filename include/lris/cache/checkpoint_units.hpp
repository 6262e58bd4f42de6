#pragma once
/// @file
/// @brief add_checkpoint_units: a residency manager's units from a safetensors checkpoint,
/// each tensor read from the files straight into its unit's pinned block (no other copy of
/// the model in host memory); add_checkpoint_file_units: the same units left in the files,
/// read each time they come in.

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

namespace detail {
// The units `unit_of` names for the tensors of `ck`, in the order of their first tensor, each
// with its tensors in checkpoint order.
struct checkpoint_unit {
  std::string name;
  std::vector<const safetensors::tensor_ref*> tensors;
};
template <class Manager>
std::vector<checkpoint_unit> group_units(const Manager& rm, const safetensors::checkpoint& ck,
                                         const std::function<std::string(std::string_view)>& unit_of) {
  std::vector<checkpoint_unit> units;
  std::map<std::string, std::size_t, std::less<>> index;  // unit name -> its place
  for (const auto& t : ck.tensors()) {
    std::string unit = unit_of(t.info->name);
    if (unit.empty()) continue;
    const auto [it, fresh] = index.try_emplace(unit, units.size());
    if (fresh) {
      if (rm.find(unit)) {
        throw invalid_argument(fmt::format("residency_manager: a unit called \"{}\" exists "
                                           "(from tensor \"{}\" of {})", unit, t.info->name,
                                           ck.path().string()));
      }
      units.push_back({std::move(unit), {}});
    }
    units[it->second].tensors.push_back(&t);
  }
  return units;
}
}  // namespace detail

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
  const auto units = detail::group_units(rm, ck, unit_of);
  std::map<std::string, std::pair<std::size_t, std::size_t>, std::less<>> where;  // tensor -> unit, index
  safetensors::load_options o;
  std::vector<typename Manager::unit_draft> drafts;
  drafts.reserve(units.size());
  for (std::size_t u = 0; u < units.size(); ++u) {
    std::vector<tensor_size> sizes;
    for (const auto* t : units[u].tensors) {
      where[t->info->name] = {u, sizes.size()};
      sizes.push_back({t->info->name, t->info->bytes()});
      o.names.push_back(t->info->name);
    }
    drafts.push_back(rm.draft_unit(units[u].name, sizes));
  }
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

/// @brief The same units, kept in the checkpoint's files (residency_manager::add_file_unit):
/// nothing is read now and no host memory holds the model; each unit is read from its
/// shards whenever it comes in. For models bigger than host memory.
/// @throws what residency_manager::add_file_unit throws; units added before the one that
/// failed stay.
template <class Manager>
std::vector<unit_id> add_checkpoint_file_units(
    Manager& rm, const safetensors::checkpoint& ck,
    const std::function<std::string(std::string_view)>& unit_of) {
  std::vector<unit_id> ids;
  for (const auto& u : detail::group_units(rm, ck, unit_of)) {
    std::vector<file_tensor> tensors;
    for (const auto* t : u.tensors) {
      tensors.push_back({t->info->name, ck.shards()[t->shard].file.path(), ck.file_offset(*t),
                         t->info->bytes()});
    }
    ids.push_back(rm.add_file_unit(u.name, tensors));
  }
  return ids;
}

}  // namespace lris::cache
