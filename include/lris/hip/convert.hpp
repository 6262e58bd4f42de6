#pragma once
/// @file
/// @brief Element type conversion fused with a copy, on the GPU, for HIP (lris::hip; link
/// lris::hip). Declared in
/// lris/gpu/detail/convert.inc, shared with the other runtime. Includes no HIP header.

#include <cstddef>
#include <lris/element/dtype.hpp>

namespace lris::hip {
#include <lris/gpu/detail/convert.inc>
}  // namespace lris::hip
