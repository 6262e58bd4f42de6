#pragma once
/// @file
/// @brief fanout::fan_plan: a checkpoint read once and delivered to N devices, as data. Each
/// chunk is one contiguous read of one file into a pinned staging buffer; from the buffer, each
/// device takes the bytes it needs: the whole of a replicated tensor, its rows of a tensor
/// split along dimension 0 (one byte range), or its piece of every row of a tensor split along
/// another dimension (gathered, row by row, into its memory). Independent of backends: the
/// loader (fanout/fan_out_load.hpp) runs the chunks.

#include <cstddef>
#include <cstdint>
#include <vector>

namespace lris::fanout {

/// @brief One device's part of a tensor: `rows` rows of `row_bytes`, `row_stride` apart, from
/// `offset` bytes into the tensor's bytes in the file; they land one after another from `dst`.
/// A part of no bytes: the device takes nothing of the tensor.
struct part {
  std::uint64_t offset = 0;
  std::uint64_t rows = 1;
  std::uint64_t row_bytes = 0;
  std::uint64_t row_stride = 0;
  std::byte* dst = nullptr;

  [[nodiscard]] std::uint64_t bytes() const noexcept { return rows * row_bytes; }
  [[nodiscard]] bool strided() const noexcept { return rows > 1 && row_stride != row_bytes; }
};

/// @brief A tensor to read once: its bytes in the file, and parts[d] for each device d.
struct fan_tensor {
  std::size_t shard = 0;
  std::uint64_t file_offset = 0;
  std::uint64_t bytes = 0;
  std::vector<part> parts;
};

/// @brief Bytes [begin, end) of tensor `tensor`, at offset `at` of the chunk's buffer.
struct chunk_piece {
  std::size_t tensor = 0;
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
  std::size_t at = 0;
};

/// @brief One read: file bytes [file_offset, + bytes) of shard `shard` into the buffer at `at`
/// (file_offset modulo the plan's alignment, so that the read's aligned middle can go with
/// O_DIRECT). Bytes between two pieces (tensors not loaded) are read through when few.
struct fan_chunk {
  std::size_t shard = 0;
  std::uint64_t file_offset = 0;
  std::uint64_t bytes = 0;
  std::size_t at = 0;
  std::vector<chunk_piece> pieces;
};

/// @brief A copy of `bytes` from offset `from` of a chunk's buffer to `to` in a device's memory.
struct delivery {
  std::size_t from = 0;
  std::byte* to = nullptr;
  std::uint64_t bytes = 0;
};

struct fan_plan {
  std::vector<fan_tensor> tensors;
  std::vector<fan_chunk> chunks;
  std::size_t devices = 0;
  /// Bytes of each staging buffer: every chunk's `at + bytes` fits.
  std::size_t buffer_bytes = 0;

  /// @brief Bytes read from storage: every chunk's, once.
  [[nodiscard]] std::uint64_t storage_bytes() const noexcept;
  /// @brief Bytes that device `d` receives.
  [[nodiscard]] std::uint64_t device_bytes(std::size_t d) const noexcept;
  /// @brief The copies of chunk `c` to device `d`, in buffer order; neighbouring copies that
  /// are contiguous on both sides are one.
  [[nodiscard]] std::vector<delivery> deliveries(std::size_t c, std::size_t d) const;
};

/// @brief Cuts `tensors` (parts for `devices` devices each) into chunks of at most
/// `chunk_bytes` file bytes, in file order, each read starting in its buffer at its file offset
/// modulo `align`. A chunk ends at a file's end, before a gap of more than `gap` bytes between
/// loaded tensors, or when full. A tensor split along a dimension other than 0 is cut at whole
/// rows of the file (when a row fits in a chunk), so that each device's piece of a row lands in
/// one copy.
/// @throws lris::invalid_argument naming the tensor whose part lies outside its bytes or whose
/// parts are not one per device; for chunk_bytes or align of 0.
[[nodiscard]] fan_plan plan_fan_out(std::vector<fan_tensor> tensors, std::size_t devices,
                                    std::size_t chunk_bytes, std::size_t align,
                                    std::uint64_t gap = std::uint64_t{64} << 10);

}  // namespace lris::fanout
