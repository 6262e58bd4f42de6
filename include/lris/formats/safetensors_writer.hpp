#pragma once
/// @file
/// @brief Writing safetensors files byte for byte as the reference implementation (the
/// `safetensors` package, 0.8) writes them, so that a checkpoint saved by LRIS has the same
/// bytes, and the same checksum, as one saved from Python.
///
/// The reference's layout: tensors sorted by dtype, widest first (in the order of
/// lris::dtype, reversed), then by name (bytewise); the data of each follows the previous one
/// with no padding; the header is compact JSON, `__metadata__` first when there is one, each
/// tensor as {"dtype","shape","data_offsets"}, strings escaped as serde_json escapes them
/// (`"`, `\` and control characters; everything else, non-ASCII included, stays UTF-8),
/// padded with spaces to a multiple of 8 bytes so that the data starts 8-aligned.
///
/// Where the reference itself differs from one run to the next, or writes a file its own
/// reader refuses, LRIS does not follow it:
/// - it writes `__metadata__` in the iteration order of a Rust HashMap, which changes from
///   process to process; LRIS writes the keys sorted (std::map's order), one of the orders the
///   reference writes. Files with at most one metadata key are identical.
/// - given no tensors and empty metadata it writes `{},"__metadata__":{}}`, which is not JSON;
///   LRIS writes `{"__metadata__":{}}`, of the same length.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <vector>

#include <lris/element/dtype.hpp>
#include <lris/formats/safetensors.hpp>
#include <lris/io/stats.hpp>

namespace lris::safetensors {

/// @brief The `__metadata__` of a file: strings to strings.
using metadata_map = std::map<std::string, std::string>;

/// @brief A tensor to place in a file: what its header entry says, and its size in bytes.
struct tensor_to_write {
  std::string name;
  dtype type = dtype::U8;
  std::vector<std::uint64_t> shape;  ///< {} for a scalar
  std::uint64_t bytes = 0;           ///< must be what `type` and `shape` give
};

/// @brief A tensor in host memory to write: dtype, shape and its bytes (little-endian,
/// row-major, sub-byte types packed).
struct tensor_view {
  std::string name;
  dtype type = dtype::U8;
  std::vector<std::uint64_t> shape;  ///< {} for a scalar
  std::span<const std::byte> data;   ///< must be as long as `type` and `shape` give
};

/// @brief Where one tensor goes.
struct placed_tensor {
  tensor_info info;           ///< its header entry: begin and end are offsets in the data
  std::size_t input = 0;      ///< its index in the list given to plan_file
  std::uint64_t file_offset = 0;  ///< where its first byte goes in the file
};

/// @brief A file laid out: the bytes that start it, and where each tensor's bytes go.
struct layout {
  /// The first bytes of the file: the 8-byte little-endian length N, then N bytes of JSON
  /// padded with spaces. The data starts right after.
  std::vector<std::byte> header;
  /// The tensors in file order: as the reference orders them.
  std::vector<placed_tensor> tensors;

  /// @brief 8 + N: where the data starts in the file.
  [[nodiscard]] std::uint64_t data_offset() const noexcept { return header.size(); }
  /// @brief The size of the whole file.
  [[nodiscard]] std::uint64_t file_bytes() const noexcept;
};

/// @brief Lays out a file of `tensors` without `__metadata__` (what the reference writes for
/// `metadata=None`).
/// @throws lris::invalid_argument naming the tensor when two tensors share a name, a name is
/// "__metadata__", a string is not UTF-8, `bytes` differs from what dtype and shape give, a
/// 4- or 6-bit tensor does not end on a byte boundary, the size overflows 64 bits, or the
/// header would pass max_header_bytes (no reader would open the file).
[[nodiscard]] layout plan_file(std::span<const tensor_to_write> tensors);
/// @brief Lays out a file of `tensors` with `metadata` as its `__metadata__`, written even
/// when empty, as the reference writes `metadata={}`.
[[nodiscard]] layout plan_file(std::span<const tensor_to_write> tensors,
                               const metadata_map& metadata);

/// @brief The whole file in memory.
/// @throws lris::invalid_argument as plan_file does, a tensor's data its size.
[[nodiscard]] std::vector<std::byte> serialize(std::span<const tensor_view> tensors);
[[nodiscard]] std::vector<std::byte> serialize(std::span<const tensor_view> tensors,
                                               const metadata_map& metadata);

/// @brief Writes the file through the io engine: into a new file beside `path`, synced to the
/// disk, then renamed over `path`. Readers of `path` see the old file or the new one, never a
/// part; on an error `path` is as it was and nothing is left beside it.
/// @return what the writes did (bytes, time, direct or buffered).
/// @throws lris::invalid_argument as plan_file does, naming the file; lris::io_error naming
/// the file when it cannot be written.
io::io_stats save_file(const std::filesystem::path& path, std::span<const tensor_view> tensors);
io::io_stats save_file(const std::filesystem::path& path, std::span<const tensor_view> tensors,
                       const metadata_map& metadata);

}  // namespace lris::safetensors
