#pragma once
/// @file
/// @brief The LRIS block checksum (lris/formats/checksum.hpp) computed by a GPU at memory
/// speed; the value is bit-identical to lris::block_checksum on the host. Links lris::cuda;
/// includes no CUDA header.

#include <cstddef>
#include <cstdint>

#include <lris/formats/checksum.hpp>

namespace lris::cuda {

/// @brief The number of per-block hashes of `n` bytes: ceil(n / block), the entries of the
/// `block_hashes` scratch of launch_block_checksum.
[[nodiscard]] constexpr std::size_t checksum_block_count(std::size_t n,
                                                         std::size_t block) noexcept {
  return n == 0 ? 0 : (n - 1) / block + 1;
}

/// @brief Queues on `stream` (a cudaStream_t; null is the default stream) the kernels that
/// compute the LRIS block checksum of `n` bytes at `device_data` with `seed` and `block`, and
/// store it in `*result`.
///
/// `device_data` must be readable by the device (device memory, or pinned/mapped host memory,
/// read over PCIe) and may have any alignment; 16-byte aligned device memory is read fastest
/// (on an H200, 4 GiB in 1 MiB blocks: ~0.85 of the device's read bandwidth, ~0.72 when not
/// aligned). `block_hashes` is device memory for checksum_block_count(n, block) entries;
/// afterwards it holds the per-block XXH64 values. It may be null when `n <= block`: the
/// checksum is then the one block's XXH64 and no array is needed. `result` is device or pinned
/// host memory. Nothing is synchronized: the inputs must stay valid, and `*result` is ready,
/// once the stream has reached this point. Small blocks make the final, sequential hash over
/// the block hashes long (4 GiB in 4 KiB blocks: 8 MiB of hashes); the default block keeps it
/// at ~25 us for 4 GiB.
/// @throws lris::invalid_argument for an invalid `block` (not a power of two >= 4096), a null
/// `device_data` with `n > 0`, a null `result`, or a null `block_hashes` when it is needed;
/// lris::cuda_error when a launch fails.
void launch_block_checksum(const void* device_data, std::size_t n, std::uint64_t seed,
                           std::size_t block, std::uint64_t* block_hashes, std::uint64_t* result,
                           void* stream);

/// @brief The LRIS block checksum of `n` device-readable bytes at `device_data`: allocates the
/// scratch (stream-ordered where the device supports it), calls launch_block_checksum on
/// `stream` (a cudaStream_t; null is the default stream), waits for the stream and returns the
/// value. Same argument checks as launch_block_checksum.
[[nodiscard]] std::uint64_t block_checksum(const void* device_data, std::size_t n,
                                           std::uint64_t seed = 0,
                                           std::size_t block = default_checksum_block,
                                           void* stream = nullptr);

}  // namespace lris::cuda
