#pragma once
/// @file
/// @brief Many small copies in one kernel launch. Links lris::cuda; includes no CUDA header.

#include <cstddef>

#include <lris/transfer/copy_item.hpp>

namespace lris::cuda {

/// @brief One copy of a batch. For the kernel, `src` and `dst` must be addressable by the device
/// (device memory, or pinned host memory, which the GPU reads over PCIe: zero copy).
using copy_item = lris::copy_item;

/// @brief Queues one kernel on `stream` (a cudaStream_t) that performs every copy of `items`.
/// `items` itself must be device-accessible (device memory or pinned host memory) and stay
/// valid until the kernel has run. Items with 16-byte aligned pointers and sizes move in
/// 16-byte accesses; others byte by byte. Throws lris::cuda_error if the launch fails.
void launch_batched_copy(const copy_item* items, std::size_t count, void* stream);

}  // namespace lris::cuda
