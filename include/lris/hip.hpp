#pragma once
/// @file
/// @brief LRIS with the HIP backend (AMD GPUs through ROCm): everything in lris.hpp plus
/// hip_backend and the device probe. Link lris::hip; no HIP header is included.

#include <lris/lris.hpp>

#include <lris/hip/hip_backend.hpp>
#include <lris/hip/device_info.hpp>
