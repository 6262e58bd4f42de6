#pragma once
/// @file
/// @brief The plan makers that transfer policies answer with: one function per shape, each
/// the only place that cuts its transfer into chunks and steps. Pure functions of addresses
/// and numbers: tests build plans with them and inspect them.

#include <cstddef>
#include <cstdint>
#include <span>

#include <lris/concepts/copy_item.hpp>
#include <lris/concepts/memory_property.hpp>
#include <lris/exec/file_io.hpp>
#include <lris/exec/plan.hpp>
#include <lris/transfer/plan.hpp>

namespace lris::plans {

/// @brief Where memory of space `Space` at `p` is, for a plan: device memory, pinned host
/// memory (which a device reaches by DMA), or host memory.
template <class Space>
[[nodiscard]] exec::place place_of(const void* p, int device) noexcept {
  if constexpr (!has_property<Space, property::host_accessible>) {
    return exec::place::on_device(p, device);
  } else if constexpr (has_property<Space, property::pinned>) {
    return exec::place::pinned(p);
  } else {
    return exec::place::host(p);
  }
}

// Each maker plans a copy (request.pairs empty: request.src to request.dst) or a batch (every
// pair of request.pairs), with `sizes` completed by the request (lris::complete).

/// @brief Each pair as one operation: on the calling thread for host memory, else all on one
/// device stream (shape `direct`).
[[nodiscard]] exec::plan direct(const transfer_request& r, transfer_sizes sizes = {});

/// @brief Host to host over several threads in chunks of exec::host_split_chunk (shape
/// `parallel`); a copy of one chunk goes direct, and so does anything with a device.
[[nodiscard]] exec::plan split(const transfer_request& r, transfer_sizes sizes = {});

/// @brief Pageable host memory <-> a device through pinned slots of exec::staging_chunk:
/// source -> slot -> destination, chunk by chunk, each pair cut into its own chunks (shape
/// `staged`). What needs no staging is split.
[[nodiscard]] exec::plan staged(const transfer_request& r, transfer_sizes sizes = {});

/// @brief A batch as one operation (shape `batched`): DMA-able buffers as one batched device
/// operation, in pieces of at most a MiB so that a few large buffers still spread over the
/// device (where the backend has one; else direct); host buffers as one parallel loop, pairs
/// grouped into chunks of about a quarter of each worker's share. Pageable buffers and a device
/// are packed.
[[nodiscard]] exec::plan batched(const transfer_request& r, transfer_sizes sizes = {});

/// @brief Many pageable buffers <-> a device: cut into pieces, packed into pinned slots (a
/// packed exec::batch, 24 bytes a piece); each slot's pieces move as one DMA and one batched
/// operation (shape `packed`). Without a batching backend they are staged; without pageable
/// memory, batched.
[[nodiscard]] exec::plan packed(const transfer_request& r, transfer_sizes sizes = {});

/// @brief A file range and host memory: in pieces of `piece` bytes, one after another on an
/// io thread (shape `direct`). `reading`: file -> memory, else memory -> file.
[[nodiscard]] exec::plan file_host(const io::file& f, std::uint64_t offset, exec::place mem,
                                   std::size_t bytes, bool reading, std::size_t piece,
                                   const io::io_overrides& call);

/// @brief A file range and device memory through pinned slots (shape `staged`). Chunk i covers
/// the file bytes [base + i * chunk, base + (i + 1) * chunk) that fall in the range, where
/// `base` is the offset rounded down to `chunk` (whole O_DIRECT blocks of the file): file
/// offsets and slot addresses then agree modulo the alignment, so the io engine can move each
/// chunk's middle with O_DIRECT wherever the file allows it. `io` says how (exec::file_io_for).
[[nodiscard]] exec::plan file_device(const transfer_sizes& sizes, const io::file& f,
                                     std::uint64_t offset, exec::place mem, std::size_t bytes,
                                     bool reading, const exec::file_io_choice& io,
                                     const io::io_overrides& call, std::size_t ring_max);

}  // namespace lris::plans
