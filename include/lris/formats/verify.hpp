#pragma once
/// @file
/// @brief safetensors::verify: every byte of a load compared with its file, after the load.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>

#include <fmt/format.h>

#include <lris/element/convert.hpp>
#include <lris/error.hpp>
#include <lris/formats/checkpoint.hpp>
#include <lris/formats/detail/load_select.hpp>
#include <lris/formats/load.hpp>
#include <lris/formats/loaded_tensor.hpp>
#include <lris/memory/buffer.hpp>
#include <lris/memory/page_aligned_allocator.hpp>

namespace lris::safetensors {

namespace detail {
/// Starts copying loaded tensor `t`'s bytes into host memory at `into` (t.bytes of room) where
/// they are in device memory; none where they are in host memory already (t.data holds them).
template <loading_pipeline Pipeline>
std::optional<transfer> read_back(Pipeline& p, const loaded_tensor& t, std::byte* into) {
  using Backend = typename Pipeline::backend_type;
  if (!t.location.device || t.bytes == 0) return std::nullopt;
  const auto bytes = static_cast<std::size_t>(t.bytes);
  return p.copy(as_host(into, bytes), memory_span<device_space<Backend>, std::byte>(
                                          t.data, bytes, t.location.device_id));
}
}  // namespace detail

/// @brief Reads each tensor of `loaded` from its file again (through `p`'s io engine),
/// converts it as the load did (by the CPU), and compares it with the loaded bytes (copied
/// back from the device for device memory, while the file's bytes are read). Three buffers of
/// the largest tensor serve every tensor. A tensor loaded as a slice is compared with its rows
/// of the file's tensor. Returns the tensors compared.
/// @throws lris::integrity_error naming the tensor, the file, the tensor's offset in it and the
/// first byte that differs; lris::io_error for a file that cannot be read again.
template <loading_pipeline Pipeline>
std::size_t verify(Pipeline& p, const checkpoint& ck, const loaded_checkpoint& loaded) {
  std::uint64_t largest = 1;
  for (const auto& t : loaded.tensors) {
    largest = std::max({largest, t.bytes, ck.find(t.name)->info->bytes()});
  }
  const auto n = static_cast<std::size_t>(largest);
  buffer<page_aligned_allocator> file_bytes(n), converted(n), got(n);
  io::io_engine& engine = p.io();
  std::size_t verified = 0;
  for (const auto& t : loaded.tensors) {
    const tensor_ref& ref = *ck.find(t.name);
    if (t.shape != ref.info->shape && !t.slice) continue;  // not this load's: nothing to say
    const auto bytes = static_cast<std::size_t>(t.bytes);
    std::optional<transfer> back = detail::read_back(p, t, got.data());
    const std::byte* have = back ? got.data() : t.data;
    const io::file& f = ck.shards()[ref.shard].file;
    engine.read(f, ck.file_offset(ref),
                {file_bytes.data(), static_cast<std::size_t>(ref.info->bytes())});
    const std::byte* want = file_bytes.data();
    std::uint64_t elements = ref.info->elements();
    if (t.slice) {  // its rows of the file's tensor, one after another, where the file's were
      const auto g = detail::geometry_of(*ref.info, *t.slice, "verify");
      detail::gather_rows(file_bytes.data(), g.offset, g.rows, g.row_bytes, g.row_stride,
                          file_bytes.data());
      elements = g.rows * g.row_bytes * 8 / bits_of(ref.info->type);
    }
    if (t.type != ref.info->type) {
      convert(file_bytes.data(), ref.info->type, converted.data(), t.type,
              static_cast<std::size_t>(elements));
      want = converted.data();
    }
    if (back) back->wait();
    if (std::memcmp(have, want, bytes) != 0) {
      const auto at = std::mismatch(have, have + bytes, want).first - have;
      throw integrity_error(fmt::format("verify: tensor \"{}\" differs from {} (its bytes at "
                                        "offset {}) first at byte {} of the tensor",
                                        t.name, f.path().string(), ck.file_offset(ref), at));
    }
    ++verified;
  }
  return verified;
}

}  // namespace lris::safetensors
