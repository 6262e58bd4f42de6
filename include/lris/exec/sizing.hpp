#pragma once
/// @file
/// @brief Every sizing decision of a transfer, in one place: how big its chunks are, how many
/// threads work on them, how file chunks line up with O_DIRECT, how big a coordinated piece
/// is. Pure functions of numbers, so that each rule is tested on its own and every path (copy,
/// file transfer, checkpoint load) takes the same decision.

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace lris::exec {

inline constexpr std::size_t mib = std::size_t{1} << 20;

/// @brief Threads for a chunked transfer when nothing asks otherwise: one per CPU the
/// context may use, at most 16 (more stop paying: copies are limited by memory bandwidth).
[[nodiscard]] constexpr unsigned default_workers(unsigned context_threads) noexcept {
  return std::clamp(context_threads, 1u, 16u);
}

/// @brief Chunks of a host -> host copy split over `workers` threads: one per worker where the
/// size allows, but none under 1 MiB (below that a hand-off to another thread costs more than
/// the copy) and none over `max_chunk`.
[[nodiscard]] constexpr std::size_t host_split_chunk(std::size_t bytes, unsigned workers,
                                                     std::size_t max_chunk) noexcept {
  const std::size_t per_worker = (bytes + std::max(1u, workers) - 1) / std::max(1u, workers);
  return std::min(max_chunk, std::max(per_worker, mib));
}

/// @brief Staging slots for `bytes` through a ring: two chunks per worker where the size
/// allows, so that copies and DMA overlap from the start; but not under 512 KiB, where
/// per-chunk costs dominate; not over `max_chunk` or what one slot of the ring may hold.
[[nodiscard]] constexpr std::size_t staging_chunk(std::size_t bytes, unsigned workers,
                                                  std::size_t max_chunk,
                                                  std::size_t ring_max) noexcept {
  const std::size_t per_chunk = (bytes + 2 * std::size_t{std::max(1u, workers)} - 1) /
                                (2 * std::size_t{std::max(1u, workers)});
  return std::min({max_chunk, std::max<std::size_t>(per_chunk, 512 * 1024), ring_max});
}

/// @brief Chunks and workers of a read that goes O_DIRECT. Direct io is paced by the disk: a
/// few workers with large chunks (16 MiB) keep the queue depth the disk wants (`queue_depth`
/// operations of `block_bytes` in flight) in few, nearly sequential streams. Twice the queue
/// depth's worth of chunks: a worker between two reads (waiting for its last operations, or
/// copying into host memory) leaves the others enough in flight. At least 2 workers, at most
/// `max_workers` (when that is 2 or more).
struct direct_io_chunking {
  std::size_t chunk_bytes;
  unsigned workers;
};
[[nodiscard]] constexpr direct_io_chunking direct_io_chunks(unsigned queue_depth,
                                                           std::size_t block_bytes,
                                                           unsigned max_workers) noexcept {
  constexpr std::size_t chunk = 16 * mib;
  const std::size_t in_flight = 2 * std::size_t{queue_depth} * block_bytes;
  return {chunk, static_cast<unsigned>(
                     std::clamp<std::size_t>(in_flight / chunk, 2, std::max(2u, max_workers)))};
}

/// @brief `want` rounded down to whole `unit`s (O_DIRECT blocks, checksum blocks), at least one
/// unit, and no more than `limit` (what a slot holds) allows.
[[nodiscard]] constexpr std::size_t whole_units(std::size_t want, std::size_t unit,
                                                std::size_t limit) noexcept {
  return std::max(unit, std::min(want, limit) / unit * unit);
}

/// @brief Pieces of a coordinated single copy: half the link's budget, in whole MiB from 1 to
/// 64. Two in flight keep the link busy, since the tokens of one come back (and the next is
/// queued) within microseconds of its end; larger pieces cost less each. (On an H200, 64 MiB
/// in 3 MiB pieces took 4.7% longer than one copy, in 6 MiB pieces 1.9%; under contention,
/// halves of the budget gave the critical copy a lower p99 than thirds at the same throughput.)
[[nodiscard]] constexpr std::size_t paced_piece_bytes(std::uint64_t capacity) noexcept {
  return std::clamp<std::size_t>(static_cast<std::size_t>(capacity / 2) / mib * mib, mib,
                                 64 * mib);
}

/// @brief Pieces of a file read straight into host memory under a disk's budget: a quarter of
/// it, at least 16 MiB, each holding its tokens while it runs.
[[nodiscard]] constexpr std::size_t file_piece_bytes(std::uint64_t capacity) noexcept {
  return static_cast<std::size_t>(std::max<std::uint64_t>(16 * mib, capacity / 4));
}

}  // namespace lris::exec
