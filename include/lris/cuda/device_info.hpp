#pragma once
/// @file
/// @brief list_devices and runtime_status: the CUDA GPUs this process can use, with the facts
/// that decide how fast bytes reach them (memory, PCIe link, NUMA node). Declared in
/// lris/gpu/detail/device_info.inc, shared with the other runtime.
///
/// Part of `lris::cuda`. This header does not include the CUDA headers, so a program can list
/// GPUs without them on its include path; only the library's source does.

#include <string>
#include <vector>

#include <lris/gpu/device_info.hpp>

namespace lris::cuda {
#include <lris/gpu/detail/device_info.inc>
}  // namespace lris::cuda
