#pragma once
/// @file
/// @brief Many small copies in one kernel launch, for HIP (lris::hip; link lris::hip). Declared in
/// lris/gpu/detail/batched_copy.inc, shared with the other runtime. Includes no HIP header.

#include <cstddef>
#include <lris/concepts/copy_item.hpp>

namespace lris::hip {
#include <lris/gpu/detail/batched_copy.inc>
}  // namespace lris::hip
