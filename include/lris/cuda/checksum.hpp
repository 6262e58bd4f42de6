#pragma once
/// @file
/// @brief The LRIS block checksum computed by a GPU, for CUDA (lris::cuda; link lris::cuda).
/// Declared in
/// lris/gpu/detail/checksum.inc, shared with the other runtime. Includes no CUDA header.

#include <cstddef>
#include <cstdint>
#include <lris/element/checksum.hpp>

namespace lris::cuda {
#include <lris/gpu/detail/checksum.inc>
}  // namespace lris::cuda
