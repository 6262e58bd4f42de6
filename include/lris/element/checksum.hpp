#pragma once
/// @file
/// @brief The LRIS block checksum: XXH64 made parallel, so that a GPU can compute it at memory
/// speed and the host can reproduce it exactly with libxxhash.
///
/// XXH64 of a whole buffer is sequential: each 32-byte stripe feeds four accumulators that
/// depend on the previous stripe, so one XXH64 over gigabytes runs at the speed of one core (or
/// of four GPU threads), far below memory bandwidth. The block checksum cuts the buffer into
/// independent blocks first.
///
/// **Definition.** For `n` bytes at `data`, a block size `B` (a power of two, at least 4096
/// bytes) and a 64-bit seed `s`:
///
/// - if `n <= B`: the checksum is exactly `XXH64(data, n, s)`, bit for bit what libxxhash
///   returns (so a small tensor's checksum is its plain XXH64, empty input included);
/// - otherwise, with `m = ceil(n / B)` blocks, block `i` being bytes `[i*B, min((i+1)*B, n))`
///   (the last one may be short) and `h_i = XXH64(block_i, len_i, s)`: the checksum is
///   `XXH64(H, 8*m, s)` where `H` is the array `h_0 ... h_(m-1)`, each value stored as 8
///   little-endian bytes.
///
/// The value depends on `B`: a checksum recorded with one block size only matches a checksum
/// computed with the same block size (and seed). `default_checksum_block` (1 MiB) is what the
/// library uses unless told otherwise. lris::cuda::block_checksum (lris/cuda/checksum.hpp)
/// computes the same value on a GPU.

#include <cstddef>
#include <cstdint>

namespace lris {

/// @brief The block size of the LRIS block checksum unless the caller names another: 1 MiB,
/// enough independent blocks in a multi-GiB tensor to keep a GPU's memory system busy, and few
/// enough that the final hash over the block hashes stays negligible.
inline constexpr std::size_t default_checksum_block = std::size_t{1} << 20;

/// @brief The smallest block size the LRIS block checksum accepts.
inline constexpr std::size_t min_checksum_block = 4096;

/// @brief The LRIS block checksum (see the file comment for the definition) of `n` bytes at
/// `data` with `seed`, computed with libxxhash. Inputs of several blocks are hashed on the
/// threads of the default context's compute lanes (lris::detail::default_thread_pool()).
/// @throws lris::invalid_argument when `block` is not a power of two of at least 4096 bytes,
/// or when `data` is null and `n > 0`.
[[nodiscard]] std::uint64_t block_checksum(const void* data, std::size_t n,
                                           std::uint64_t seed = 0,
                                           std::size_t block = default_checksum_block);

/// @brief The LRIS block checksum from the XXH64 of each block (`hashes`, in order, as
/// block_hash computes them), for a buffer hashed in pieces: the one hash itself when there is
/// one block, else the XXH64 of the hashes.
[[nodiscard]] std::uint64_t combine_block_hashes(const std::uint64_t* hashes, std::size_t blocks,
                                                 std::uint64_t seed = 0);

/// @brief XXH64 of `n` bytes at `data`: one block of the LRIS block checksum.
[[nodiscard]] std::uint64_t block_hash(const void* data, std::size_t n, std::uint64_t seed = 0);

namespace detail {
/// @brief Throws lris::invalid_argument naming `who` and `block` unless `block` is a valid
/// checksum block size (a power of two, at least min_checksum_block).
void check_checksum_block(const char* who, std::size_t block);
}  // namespace detail

}  // namespace lris
