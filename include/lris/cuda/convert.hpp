#pragma once
/// @file
/// @brief Element type conversion fused with a copy, on the GPU. Links lris::cuda; includes no
/// CUDA header.

#include <cstddef>
#include <lris/formats/dtype.hpp>

namespace lris::cuda {

/// @brief True when launch_convert supports `from` -> `to`: F32 <-> BF16, F32 <-> F16,
/// F8_E4M3 and F8_E5M2 -> BF16, F16 or F32, and any dtype to itself (a plain copy).
[[nodiscard]] bool can_convert(dtype from, dtype to) noexcept;

/// @brief Queues on `stream` (a cudaStream_t; nullptr is the legacy default stream) the
/// conversion of `count` elements of type `from` at `src` into elements of type `to` at `dst`.
///
/// Both buffers must be addressable by the current device (device memory, or pinned host
/// memory, which the kernel reads or writes over PCIe) and must not overlap. Any alignment
/// works; 16-byte aligned buffers (or ones whose misalignments match) move in 16-byte
/// accesses. The results are those of the reference conversions in
/// lris/formats/dtype_convert.hpp, bit for bit: narrowing rounds to nearest even, NaNs stay
/// NaNs. `from == to` is a cudaMemcpyAsync of the bytes (a sub-byte dtype needs a whole number
/// of bytes). Returns once the work is queued.
///
/// @throws lris::unsupported naming both dtypes when can_convert(from, to) is false.
/// @throws lris::invalid_argument for null or overlapping buffers, or a count whose byte size
/// overflows.
/// @throws lris::cuda_error when the launch fails.
void launch_convert(const void* src, dtype from, void* dst, dtype to, std::size_t count,
                    void* stream);

}  // namespace lris::cuda
