#pragma once
// How a load reads its checkpoint: the tensors to load (targets), cut into chunks that each
// fill one pinned staging slot. Chunks follow the files in order, so the disk sees sequential
// reads; neighbouring tensors share chunks, so small tensors cost no operation of their own.
// Independent of backends and memory: the loader (lris/formats/load.hpp) runs the chunks.

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include <lris/element/dtype.hpp>
#include <lris/formats/loaded_tensor.hpp>

namespace lris::safetensors::detail {

/// One tensor to load: its bytes in the file (rows of `row_bytes` every `row_stride` bytes
/// from `file_offset`; one row for a whole tensor or a slice along dimension 0), and where they
/// go, converted from `from` to `to`.
struct load_target {
  std::size_t shard = 0;
  std::uint64_t file_offset = 0;
  std::uint64_t rows = 1;
  std::uint64_t row_bytes = 0;
  std::uint64_t row_stride = 0;
  dtype from = dtype::U8;
  dtype to = dtype::U8;
  std::byte* dst = nullptr;
  bool device = false;  ///< dst is device memory (else host memory the CPU writes)
  int device_index = 0;  ///< which device, when it is
  bool verify = false;  ///< hash the bytes (whole tensors only), in blocks of checksum_block

  [[nodiscard]] std::uint64_t bytes() const noexcept { return rows * row_bytes; }
  [[nodiscard]] bool strided() const noexcept { return rows > 1 && row_stride != row_bytes; }
  [[nodiscard]] bool converts() const noexcept { return from != to; }
};

/// File bytes [file_offset, + bytes) into the slot at slot_offset.
struct load_read {
  std::uint64_t file_offset = 0;
  std::uint64_t bytes = 0;
  std::size_t slot_offset = 0;
};

/// Slot bytes [slot_offset, + bytes) are the target's (unconverted) bytes from target_offset.
struct load_move {
  std::size_t target = 0;
  std::size_t slot_offset = 0;
  std::uint64_t bytes = 0;
  std::uint64_t target_offset = 0;
};

/// Slot bytes [from, + bytes) copied by the CPU to [to, + bytes) of the slot, after the reads
/// and before the moves: rows read with the gaps between them, gathered.
struct load_gather {
  std::size_t from = 0;
  std::size_t to = 0;
  std::uint64_t bytes = 0;
};

struct load_chunk {
  std::size_t shard = 0;
  std::vector<load_read> reads;
  std::vector<load_gather> gathers;
  std::vector<load_move> moves;
  /// Host moves without conversion that cover the whole read, into memory laid out as the
  /// file is and aligned for O_DIRECT: read straight into the destination, no slot involved.
  bool straight_to_host = false;
};

/// One tensor of a load into a block of host memory: its bytes in the file and in memory.
/// `mirrors`: it may keep the file's layout (whole, unconverted, at a file offset that is a
/// multiple of its element size).
struct layout_item {
  std::size_t shard = 0;
  std::uint64_t file_offset = 0;
  std::uint64_t bytes = 0;
  bool mirrors = false;
};

/// Offsets of `items` (same order) in one block whose start is aligned to `modulus`, and its
/// size. Tensors adjacent in a file that mirror keep the file's layout: each run of them starts
/// at the same offset modulo `modulus` as in the file, so that reads go straight into them
/// (O_DIRECT for their aligned middle). Each other tensor starts `alignment`-aligned.
struct block_layout {
  std::vector<std::uint64_t> offsets;
  std::uint64_t bytes = 0;
};
[[nodiscard]] block_layout host_layout(std::span<const layout_item> items, std::size_t modulus,
                                       std::size_t alignment);

/// The chunks of `targets` (any order) for slots of `chunk_bytes` + `align` bytes. Reads of
/// contiguous file ranges start in the slot at the file offset modulo `align`, so that their
/// aligned middle can go with O_DIRECT. A tensor that is converted or verified starts its own
/// chunks, cut at multiples of `chunk_bytes` (a multiple of `block`) from its first byte, so
/// that no element and no hash block straddles two chunks. A chunk goes straight into host
/// memory (straight_to_host) where its tensors are unconverted, laid out in memory as in the
/// file, and the memory at its first `align`-aligned file offset is aligned to `memory_align`
/// (the device's O_DIRECT memory alignment).
///
/// A strided target (a slice along a later dimension) has whole rows per chunk, packed at the
/// front of the slot in destination order. Rows whose gaps are small (at most three rows, or
/// 64 KiB: skipping them costs more reads than reading them) are read as one range, gaps and
/// all, into the slot's upper half, and gathered by the CPU (gathers); rows further apart are
/// read one by one.
[[nodiscard]] std::vector<load_chunk> plan_chunks(std::span<const load_target> targets,
                                                  std::size_t chunk_bytes, std::size_t align,
                                                  std::size_t block, std::size_t memory_align);

/// The memory of `tensors` (made from `targets`, one each, in the same order) in the order the
/// reads reach it (by shard, then file offset): the order in which to fault in its pages ahead
/// of the reads (page_populator). Empty tensors are left out.
[[nodiscard]] std::vector<std::span<std::byte>> destinations_in_file_order(
    std::span<const load_target> targets, std::span<const loaded_tensor> tensors);

}  // namespace lris::safetensors::detail
