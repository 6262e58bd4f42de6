#pragma once
/// @file
/// @brief Element type conversion fused with a copy, on the GPU, for CUDA (lris::cuda; link
/// lris::cuda). Declared in
/// lris/gpu/detail/convert.inc, shared with the other runtime. Includes no CUDA header.

#include <cstddef>
#include <lris/element/dtype.hpp>

namespace lris::cuda {
#include <lris/gpu/detail/convert.inc>
}  // namespace lris::cuda
