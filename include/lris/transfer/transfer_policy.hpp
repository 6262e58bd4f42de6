#pragma once
/// @file
/// @brief transfer_policy: how bytes move, decided per transfer.

#include <concepts>
#include <string_view>

#include <lris/transfer/plan.hpp>

namespace lris {

/// @brief A copyable value type that plans transfers: `t.plan(request) -> exec::plan`, made
/// with the makers of lris::plans (or by hand). Policies decide; the executor runs what they
/// decide. A policy never touches memory itself, so a new one (a different heuristic, a
/// calibrated table) is a few lines of pure code.
template <class T>
concept transfer_policy = std::copyable<T> && requires(const T& t, const transfer_request& r) {
  { T::name } -> std::convertible_to<std::string_view>;
  { t.plan(r) } -> std::same_as<exec::plan>;
};

}  // namespace lris
