#pragma once
/// @file
/// @brief LRIS with the CUDA backend: everything in lris.hpp plus cuda_backend and the device
/// probe. Link lris::cuda; no CUDA header is included.

#include <lris/lris.hpp>

#include <lris/cuda/cuda_backend.hpp>
#include <lris/cuda/device_info.hpp>
