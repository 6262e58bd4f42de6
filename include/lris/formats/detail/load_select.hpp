#pragma once
// The tensors a load takes, with the geometry of their bytes in the files; and the SHA-256
// check of whole files. Independent of backends: the loader (lris/formats/load.hpp) runs them.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include <lris/formats/checkpoint.hpp>
#include <lris/formats/load_options.hpp>
#include <lris/io/engine.hpp>

namespace lris::safetensors::detail {

struct selected_tensor {
  tensor_request request;
  // The file bytes: `rows` rows of `row_bytes`, `row_stride` apart, from `file_offset`.
  std::uint64_t file_offset = 0;
  std::uint64_t rows = 1;
  std::uint64_t row_bytes = 0;
  std::uint64_t row_stride = 0;
  bool verify = false;
  std::uint64_t expected_checksum = 0;
};

/// Where the bytes of slice `sl` of `t` lie among the tensor's bytes: `rows` rows of
/// `row_bytes`, `row_stride` apart, from `offset` (one row when they are contiguous); and the
/// slice's shape.
struct slice_geometry {
  std::uint64_t offset = 0;
  std::uint64_t rows = 1;
  std::uint64_t row_bytes = 0;
  std::uint64_t row_stride = 0;
  std::vector<std::uint64_t> shape;
};
/// @throws lris::invalid_argument naming `where` (e.g. "load FILE") and the tensor for a rank
/// out of range, a dimension it does not have or that does not divide evenly, or a slice that
/// does not end on a byte.
[[nodiscard]] slice_geometry geometry_of(const tensor_info& t, const tensor_slice& sl,
                                         std::string_view where);

/// Copies `rows` rows of `row_bytes`, `row_stride` apart from `offset` in a tensor's bytes at
/// `tensor`, one after another to `out`. `out` may be `tensor` itself: rows only move towards
/// the start.
inline void gather_rows(const std::byte* tensor, std::uint64_t offset, std::uint64_t rows,
                        std::uint64_t row_bytes, std::uint64_t row_stride, std::byte* out) {
  for (std::uint64_t r = 0; r < rows; ++r) {
    std::memmove(out + r * row_bytes, tensor + offset + r * row_stride,
                 static_cast<std::size_t>(row_bytes));
  }
}

/// std::regex compiles and matches by recursion, a frame or more per nested group and per
/// character matched: a pattern nested deeper, or a name longer, than these would overflow a
/// thread's stack (a name of 40,000 bytes did, with ".*", on 8 MiB). Names of tensors are far
/// shorter; a selection is refused beyond them, naming what is at fault.
inline constexpr std::size_t max_regex_depth = 256;
inline constexpr std::size_t max_matched_name = 1024;

/// `pattern` compiled (ECMAScript) for matching names.
/// @throws lris::invalid_argument starting with `where`: a bad expression, or one whose groups
/// nest deeper than max_regex_depth.
[[nodiscard]] std::regex name_regex(const std::string& pattern, std::string_view where);

/// Whether `re` matches part of `name` (std::regex_search).
/// @throws lris::invalid_argument starting with `where` for a name longer than
/// max_matched_name.
[[nodiscard]] bool name_matches(const std::regex& re, std::string_view name, std::string_view where);

/// The tensors `o` selects, in checkpoint order, sliced and typed as they will be in memory.
/// @throws lris::invalid_argument naming the tensor (or the expression) for a name not in the
/// checkpoint, a bad regular expression, a slice that does not fit, or a checksum asked for a
/// sliced tensor.
[[nodiscard]] std::vector<selected_tensor> select_tensors(const checkpoint& ck, const load_options& o);

/// The SHA-256 of the whole file, as 64 lowercase hex digits, read through `io`.
[[nodiscard]] std::string sha256_hex(io::io_engine& io, const io::file& f);

/// Checks every file `o.expected_sha256` names; returns how many matched.
/// @throws lris::invalid_argument for a name that is no file of the checkpoint;
/// lris::integrity_error naming the file and both digests for a mismatch.
std::size_t check_sha256(io::io_engine& io, const checkpoint& ck, const load_options& o);

/// Throws lris::integrity_error naming the tensor, its file and offset, and both values.
[[noreturn]] void checksum_mismatch(const checkpoint& ck, const tensor_ref& t,
                                    std::uint64_t expected, std::uint64_t actual);

}  // namespace lris::safetensors::detail
