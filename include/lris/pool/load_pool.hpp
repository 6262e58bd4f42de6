#pragma once
/// @file
/// @brief pool::load(): a host pool's ready tensors copied into memory LRIS allocates (a GPU's,
/// or host memory), as safetensors::load gives a checkpoint's: no file is read.

#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include <fmt/format.h>

#include <lris/error.hpp>
#include <lris/formats/detail/load_select.hpp>
#include <lris/formats/load.hpp>
#include <lris/formats/loaded_tensor.hpp>
#include <lris/memory/device_allocator.hpp>
#include <lris/memory/memory_span.hpp>
#include <lris/concepts/memory_space.hpp>
#include <lris/pool/host_pool.hpp>
#include <lris/transfer/transfer.hpp>

namespace lris::pool {

/// @brief Copies the ready tensors of `pool` (those whose name is in `names`, or all when it
/// is empty), in the order they were claimed, into one block of memory: device memory of the
/// pipeline's backend (`where` = device), or host memory; each tensor 256-byte aligned in it,
/// the copies one batch on the pipeline (DMA where the pool's data is registered:
/// pool_registration, else through the staging ring). Each tensor leases the block, as
/// safetensors::load's do. report.file_bytes is 0; report.memory_bytes what was copied.
/// With `slice`, each tensor it gives a slice for is copied as that slice only (a
/// tensor-parallel rank's part: one copy for rows of dimension 0, a copy per row otherwise), as
/// safetensors::load_options::slice does from files: ranks in processes of their own share one
/// pool, each taking its bytes.
/// @throws lris::invalid_argument naming the pool when it holds none of the tensors asked for,
/// or naming a tensor of `names` it does not hold ready, or a slice that does not fit a tensor;
/// what the allocation and copy throw.
template <safetensors::loading_pipeline Pipeline>
safetensors::loaded_checkpoint load(
    host_pool& pool, Pipeline& p,
    safetensors::load_target_memory where = safetensors::load_target_memory::device,
    const std::vector<std::string>& names = {},
    const std::function<std::optional<safetensors::tensor_slice>(const safetensors::tensor_info&)>&
        slice = {});

/// @brief A pool::load under way: its tensors (whose bytes are still moving) and the copy.
struct started_load {
  safetensors::loaded_checkpoint loaded;
  transfer copying;
  std::chrono::steady_clock::time_point start;

  /// @brief Waits for the copy; the tensors, their bytes in place.
  safetensors::loaded_checkpoint wait() {
    if (copying.valid()) (void)copying.wait();
    loaded.report.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return std::move(loaded);
  }
};

/// @brief pool::load, returning once the copy has started: several devices' loads from one
/// pool go at once.
template <safetensors::loading_pipeline Pipeline>
started_load start_load(
    host_pool& pool, Pipeline& p,
    safetensors::load_target_memory where = safetensors::load_target_memory::device,
    const std::vector<std::string>& names = {},
    const std::function<std::optional<safetensors::tensor_slice>(const safetensors::tensor_info&)>&
        slice = {}) {
  using Backend = typename Pipeline::backend_type;
  constexpr std::uint64_t alignment = 256;
  const auto start = std::chrono::steady_clock::now();
  std::vector<pool_tensor> tensors;
  if (names.empty()) {
    tensors = pool.tensors();
  } else {
    for (const auto& n : names) {
      auto t = pool.find(n);
      if (!t) {
        throw invalid_argument(fmt::format("pool::load: pool \"{}\" holds no ready tensor \"{}\"",
                                           pool.name(), n));
      }
      tensors.push_back(std::move(*t));
    }
  }
  if (tensors.empty()) {
    throw invalid_argument(fmt::format("pool::load: pool \"{}\" holds no ready tensor",
                                       pool.name()));
  }
  // Each tensor's bytes in the pool: the whole, or its slice's rows.
  std::vector<safetensors::detail::slice_geometry> parts(tensors.size());
  std::vector<std::optional<safetensors::tensor_slice>> slices(tensors.size());
  std::size_t sliced = 0;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    auto& g = parts[i];
    g = {0, 1, t.bytes, t.bytes, t.shape};
    if (!slice) continue;
    const safetensors::tensor_info info{std::string(t.name), t.type, t.shape, 0, t.bytes};
    if (const auto sl = slice(info)) {
      g = safetensors::detail::geometry_of(info, *sl, fmt::format("pool::load \"{}\"", pool.name()));
      slices[i] = sl;
      ++sliced;
    }
  }
  std::uint64_t total = 0;
  std::vector<std::uint64_t> offsets;
  for (const auto& g : parts) {
    offsets.push_back(total);
    total += (g.rows * g.row_bytes + alignment - 1) / alignment * alignment;
  }
  total = std::max<std::uint64_t>(total, alignment);
  const bool on_device = where == safetensors::load_target_memory::device &&
                         !std::is_same_v<Backend, host_backend>;
  std::shared_ptr<void> block;
  if (on_device) {
    device_allocator<Backend> alloc(p.backend());
    void* mem = alloc.allocate(static_cast<std::size_t>(total), alignment);
    block = std::shared_ptr<void>(mem, [alloc, total](void* q) mutable {
      alloc.deallocate(q, static_cast<std::size_t>(total), alignment);
    });
  } else {
    void* mem = ::operator new(static_cast<std::size_t>(total), std::align_val_t{alignment});
    block = std::shared_ptr<void>(mem, [](void* q) { ::operator delete(q, std::align_val_t{alignment}); });
  }
  auto* base = static_cast<std::byte*>(block.get());
  safetensors::loaded_checkpoint out;
  transfer copying;
  std::vector<memory_span<host_space, const std::byte>> src;
  const auto copy_all = [&](auto& dst) {
    if (!dst.empty()) copying = p.copy_batch(dst, src);
  };
  // The pool's data registered in this process (pool_registration): rows of 1 MiB or more go
  // by DMA, one copy each, and only the smaller ones as one batch (a batch between pinned and
  // device memory is one kernel reading over the link: 0.59 of the link's ceiling on the H200
  // for a pool of 34 GB, where DMA reaches it).
  bool dma = false;
  if constexpr (requires(const void* q) {
                  { Backend::is_pinned(q) } -> std::convertible_to<bool>;
                }) {
    dma = on_device && !tensors.empty() && Backend::is_pinned(tensors.front().data);
  }
  std::vector<transfer> direct;
  // One copy per row of each part (one for a whole tensor or a slice of dimension 0).
  const auto add_rows = [&](auto& dst, auto span_at) {
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      const auto& g = parts[i];
      if (g.row_bytes == 0) continue;
      const auto n = static_cast<std::size_t>(g.row_bytes);
      for (std::uint64_t r = 0; r < g.rows; ++r) {
        std::byte* to = base + offsets[i] + r * g.row_bytes;
        const std::byte* from = tensors[i].data + g.offset + r * g.row_stride;
        if (dma && n >= (std::size_t{1} << 20)) {
          direct.push_back(p.copy(span_at(to, n),
                                  memory_span<pinned_space<Backend>, const std::byte>(from, n)));
          continue;
        }
        dst.push_back(span_at(to, n));
        src.push_back(as_host(from, n));
      }
    }
    copy_all(dst);
    if (!direct.empty()) {
      if (copying.valid()) direct.push_back(std::move(copying));
      copying = when_all(std::move(direct));
    }
  };
  if (on_device) {
    std::vector<memory_span<device_space<Backend>, std::byte>> dst;
    add_rows(dst, [&](std::byte* at, std::size_t n) {
      return memory_span<device_space<Backend>, std::byte>(at, n, p.backend().device());
    });
  } else {
    std::vector<memory_span<host_space, std::byte>> dst;
    add_rows(dst, [](std::byte* at, std::size_t n) { return as_host(at, n); });
  }
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    safetensors::loaded_tensor t;
    t.name = std::string(tensors[i].name);
    t.type = tensors[i].type;
    t.shape = parts[i].shape;
    t.slice = slices[i];
    t.data = base + offsets[i];
    t.bytes = parts[i].rows * parts[i].row_bytes;
    t.location = {on_device, on_device ? Backend::name : std::string_view("host"),
                  on_device ? p.backend().device() : 0};
    t.lease = block;
    out.report.memory_bytes += t.bytes;
    out.tensors.push_back(std::move(t));
  }
  out.report.tensors = out.tensors.size();
  out.report.path = fmt::format("host pool \"{}\" -> {}{}", pool.name(),
                                on_device ? "device" : "host memory",
                                sliced ? fmt::format(" ({} tensors as slices)", sliced) : "");
  return {std::move(out), std::move(copying), start};
}

template <safetensors::loading_pipeline Pipeline>
safetensors::loaded_checkpoint load(
    host_pool& pool, Pipeline& p, safetensors::load_target_memory where,
    const std::vector<std::string>& names,
    const std::function<std::optional<safetensors::tensor_slice>(const safetensors::tensor_info&)>&
        slice) {
  return start_load(pool, p, where, names, slice).wait();
}

}  // namespace lris::pool
