#pragma once
/// @file
/// @brief Many small copies in one kernel launch, for CUDA (lris::cuda; link lris::cuda). Declared
/// in
/// lris/gpu/detail/batched_copy.inc, shared with the other runtime. Includes no CUDA header.

#include <cstddef>
#include <lris/concepts/copy_item.hpp>

namespace lris::cuda {
#include <lris/gpu/detail/batched_copy.inc>
}  // namespace lris::cuda
