#pragma once
/// @file
/// @brief fanout::verify: every device's tensors of a fan-out compared with the files they
/// came from (each tensor read again once, whatever the number of devices; a slice compared
/// with its rows of the file's tensor), and the checksums of the devices of one
/// tensor-parallel rank compared with each other.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include <lris/error.hpp>
#include <lris/fanout/detail/rank_sums.hpp>
#include <lris/fanout/fan_out_report.hpp>
#include <lris/formats/checkpoint.hpp>
#include <lris/formats/detail/load_select.hpp>
#include <lris/formats/load.hpp>
#include <lris/formats/verify.hpp>
#include <lris/memory/buffer.hpp>
#include <lris/memory/page_aligned_allocator.hpp>

namespace lris::fanout {

namespace detail {

/// @brief A tensor's whole bytes where a fan-out took them from, and how to name them.
struct source_bytes {
  safetensors::tensor_info info;
  const std::byte* data = nullptr;
  std::string what;  ///< "file F (its bytes at offset O)", "the pool's"
};

/// @brief Compares the tensors of every device of `loaded` with `source(name)` (called once
/// per tensor, in order; what it returns is read before the next call), each device's slice
/// with its rows of the source's bytes; checks the checksums of devices of one rank against
/// each other (device d is rank d % tp); counts each device's tensors verified and sets its
/// digest. `what` names the load in messages.
/// @throws lris::integrity_error naming the tensor, the device, its rank and the first byte
/// that differs, or the sizes that do not match; what `source` throws.
template <class Pipeline, class Source>
void verify_devices(std::span<Pipeline> pipelines, fan_out_result& loaded, unsigned tp,
                    const std::string& what, Source&& source) {
  const std::size_t n = pipelines.size();
  LRIS_EXPECTS(n > 0 && loaded.devices.size() == n && loaded.report.devices.size() == n,
               "fan-out verify {}: {} pipelines for {} devices loaded", what, n,
               loaded.devices.size());
  std::vector<std::string> names(n);
  for (std::size_t d = 0; d < n; ++d) names[d] = loaded.report.devices[d].device;
  const std::size_t count = loaded.devices.front().tensors.size();
  rank_sums sums(names, tp, count);
  std::vector<std::byte> got, sliced;
  for (std::size_t i = 0; i < count; ++i) {
    const std::string& name = loaded.devices.front().tensors[i].name;
    const source_bytes src = source(std::string_view(name));
    for (std::size_t d = 0; d < n; ++d) {
      LRIS_EXPECTS(loaded.devices[d].tensors.size() == count &&
                       loaded.devices[d].tensors[i].name == name,
                   "fan-out verify {}: device {} ({}) holds other tensors than device 0", what,
                   d, names[d]);
      const safetensors::loaded_tensor& t = loaded.devices[d].tensors[i];
      const auto bytes = static_cast<std::size_t>(t.bytes);
      got.resize(bytes);
      std::optional<transfer> back = safetensors::detail::read_back(pipelines[d], t, got.data());
      const std::byte* want = src.data;
      std::uint64_t want_bytes = src.info.bytes();
      if (t.slice) {  // its rows of the source's tensor, one after another
        const auto g = safetensors::detail::geometry_of(src.info, *t.slice, what);
        sliced.resize(static_cast<std::size_t>(g.rows * g.row_bytes));
        safetensors::detail::gather_rows(src.data, g.offset, g.rows, g.row_bytes, g.row_stride,
                                         sliced.data());
        want = sliced.data();
        want_bytes = sliced.size();
      }
      if (back) back->wait();
      const std::byte* have = back ? got.data() : t.data;  // host memory: where it lies
      const unsigned rank = static_cast<unsigned>(d % tp);
      if (want_bytes != bytes) {
        throw integrity_error(fmt::format("fan-out load {}: tensor \"{}\" on device {} ({}, rank "
                                          "{} of {}) has {} bytes; its part of {} has {}", what,
                                          name, d, names[d], rank, tp, bytes, src.what,
                                          want_bytes));
      }
      if (const std::size_t at = first_difference(have, want, bytes); at < bytes) {
        throw integrity_error(fmt::format("fan-out load {}: tensor \"{}\" on device {} ({}, rank "
                                          "{} of {}) differs from {} first at byte {} of the "
                                          "device's part", what, name, d, names[d], rank, tp,
                                          src.what, at));
      }
      sums.add(d, i, have, bytes, name, what);
      ++loaded.report.devices[d].verified;
    }
  }
  for (std::size_t d = 0; d < n; ++d) {
    loaded.report.devices[d].digest = sums.digest(d);
    loaded.devices[d].report.verified = loaded.report.devices[d].verified;
  }
}

}  // namespace detail

/// @brief Compares every device's tensors of `loaded` (a fanout::load of `ck` onto
/// `pipelines`, device d being tensor-parallel rank d % loaded.report.tp) with the files: each tensor read
/// again once through the first pipeline's io engine, each device's part copied back and
/// compared with its bytes (its rows, for a slice); the checksums of devices of one rank must
/// agree. Sets each device's verified count and digest. fan_out_options::verify calls it.
/// @throws lris::integrity_error naming the tensor, the device, its rank, the file and the
/// tensor's offset in it, and the first byte that differs; for a tensor the checkpoint does
/// not hold; lris::io_error for a file that cannot be read again.
template <safetensors::loading_pipeline Pipeline>
void verify(std::span<Pipeline> pipelines, const safetensors::checkpoint& ck,
            fan_out_result& loaded) {
  const unsigned tp = loaded.report.tp;
  const std::string file = ck.path().string();
  std::uint64_t largest = 1;
  // A buffer for the largest tensor the devices hold.
  for (std::size_t i = 0; !loaded.devices.empty() && i < loaded.devices.front().tensors.size(); ++i) {
    if (const safetensors::tensor_ref* ref = ck.find(loaded.devices.front().tensors[i].name)) {
      largest = std::max(largest, ref->info->bytes());
    }
  }
  buffer<page_aligned_allocator> whole(static_cast<std::size_t>(largest));
  detail::verify_devices(pipelines, loaded, tp, file, [&](std::string_view name) {
    const safetensors::tensor_ref* ref = ck.find(name);
    if (ref == nullptr) {
      throw integrity_error(fmt::format("fan-out load {}: the devices hold tensor \"{}\", which "
                                        "the checkpoint has not", file, name));
    }
    const io::file& f = ck.shards()[ref->shard].file;
    const std::uint64_t offset = ck.file_offset(*ref);
    pipelines.front().io().read(f, offset, {whole.data(), static_cast<std::size_t>(ref->info->bytes())});
    return detail::source_bytes{*ref->info, whole.data(),
                                fmt::format("file {} (its bytes at offset {})",
                                            f.path().string(), offset)};
  });
}

}  // namespace lris::fanout
