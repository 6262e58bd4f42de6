#pragma once
/// @file
/// @brief Forward declarations of LRIS's main types, for headers that only name them.

#include <lris/concepts/allocator_policy.hpp>
#include <lris/concepts/backend_policy.hpp>
#include <lris/concepts/memory_space.hpp>

namespace lris {
template <memory_space Space, class T>
class memory_span;
class host_backend;
struct direct;
struct staged;
class auto_select;
struct transfer_stats;
struct transfer_profile;
class transfer;
}  // namespace lris
