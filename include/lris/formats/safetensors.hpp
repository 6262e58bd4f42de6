#pragma once
/// @file
/// @brief The safetensors header: parsed and validated with the reference implementation's
/// rules, every violation its own error kind, naming the file, the tensor and the offset.
///
/// A file is an 8-byte little-endian header length N, N bytes of UTF-8 JSON, then the data.
/// The JSON maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
/// into the data) and may hold "__metadata__", a map of strings to strings.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <lris/error.hpp>
#include <lris/element/dtype.hpp>
#include <lris/io/file.hpp>

namespace lris::safetensors {

/// @brief Largest header the reference accepts.
inline constexpr std::uint64_t max_header_bytes = 100'000'000;

/// @brief What is wrong with a file, one kind per rule.
enum class error_kind {
  file_too_small,         ///< fewer than 8 bytes: no header length
  header_too_large,       ///< N > max_header_bytes
  header_past_end,        ///< 8 + N > file size
  header_not_utf8,        ///< the header is not valid UTF-8
  header_bad_start,       ///< the header does not start with '{'
  invalid_json,           ///< not JSON, or not an object at the top
  duplicate_key,          ///< a key twice in one object
  metadata_not_strings,   ///< __metadata__ is not a map of strings to strings
  entry_not_object,       ///< a tensor's entry is not an object
  missing_field,          ///< dtype, shape or data_offsets absent
  unknown_dtype,          ///< a dtype the format does not define
  bad_shape,              ///< shape is not an array of non-negative integers
  shape_overflow,         ///< the element count or byte size overflows 64 bits
  sub_byte_misaligned,    ///< a 4- or 6-bit tensor does not end on a byte boundary
  bad_offsets,            ///< data_offsets is not [begin, end] with begin <= end
  size_mismatch,          ///< end - begin differs from the size dtype and shape give
  overlap,                ///< a tensor's bytes overlap the previous one's
  gap,                    ///< bytes between two tensors (or before the first) belong to none
  data_not_covered,       ///< the tensors end before or after the end of the file
  // Sharded checkpoints (model.safetensors.index.json):
  index_invalid,            ///< the index is not JSON with a "weight_map" of names to files
  shard_outside_directory,  ///< a shard name leaves the model directory (absolute, or "..")
  shard_missing,            ///< a shard named by the index does not exist
  index_mismatch,           ///< a tensor the index places in a shard is not there, or a
                            ///< shard holds a tensor the index does not list there
  duplicate_tensor,         ///< two files of one checkpoint hold a tensor of the same name
  no_safetensors,           ///< a directory without an index or any *.safetensors file
};

/// @brief "duplicate_key", ...
[[nodiscard]] std::string_view to_string(error_kind k) noexcept;

/// @brief A malformed safetensors file: kind() says which rule, what() names the file, the
/// tensor and the offset.
class error : public format_error {
 public:
  error(error_kind kind, const std::string& what) : format_error(what), kind_(kind) {}
  [[nodiscard]] error_kind kind() const noexcept { return kind_; }

 private:
  error_kind kind_;
};

/// @brief One tensor of a file.
struct tensor_info {
  std::string name;
  dtype type = dtype::U8;
  std::vector<std::uint64_t> shape;
  std::uint64_t begin = 0;  ///< offset of its first byte in the data section
  std::uint64_t end = 0;    ///< offset past its last byte in the data section

  [[nodiscard]] std::uint64_t bytes() const noexcept { return end - begin; }
  [[nodiscard]] std::uint64_t elements() const noexcept;
};

/// @brief A validated header.
struct header {
  std::filesystem::path file;
  std::uint64_t file_bytes = 0;
  std::uint64_t header_bytes = 0;  ///< N
  std::uint64_t data_offset = 0;   ///< 8 + N: where the data section starts in the file
  std::vector<tensor_info> tensors;  ///< in data order
  std::map<std::string, std::string> metadata;

  /// @brief The tensor called `name`; nullptr when there is none.
  [[nodiscard]] const tensor_info* find(std::string_view name) const noexcept;
  /// @brief Where `t`'s bytes start in the file.
  [[nodiscard]] std::uint64_t file_offset(const tensor_info& t) const noexcept {
    return data_offset + t.begin;
  }
};

/// @brief Parses the header at the start of `prefix` (the file's first bytes: at least 8 + N
/// of them when the file is valid) of a file of `file_bytes` bytes called `file`.
/// @throws safetensors::error for every violation.
[[nodiscard]] header parse_header(std::span<const std::byte> prefix, std::uint64_t file_bytes,
                                  const std::filesystem::path& file);

/// @brief Reads and validates the header of the file at `path`.
/// @throws lris::io_error when the file cannot be read; safetensors::error when it is not a
/// valid safetensors file.
[[nodiscard]] header read_header(const std::filesystem::path& path);
/// @brief Reads and validates the header of the open file `f`.
[[nodiscard]] header read_header(const io::file& f);

}  // namespace lris::safetensors
