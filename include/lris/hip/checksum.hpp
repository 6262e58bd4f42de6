#pragma once
/// @file
/// @brief The LRIS block checksum computed by a GPU, for HIP (lris::hip; link lris::hip). Declared
/// in
/// lris/gpu/detail/checksum.inc, shared with the other runtime. Includes no HIP header.

#include <cstddef>
#include <cstdint>
#include <lris/element/checksum.hpp>

namespace lris::hip {
#include <lris/gpu/detail/checksum.inc>
}  // namespace lris::hip
