#pragma once
/// @file
/// @brief lris::copy(dst, src, options): move bytes between any two typed spans.

#include <memory>
#include <ranges>

#include <lris/exec/context.hpp>
#include <lris/memory/memory_span.hpp>
#include <lris/memory/pinned_allocator.hpp>
#include <lris/transfer/auto_select.hpp>
#include <lris/transfer/pipeline.hpp>
#include <lris/transfer/traits.hpp>

namespace lris {

/// @brief The pipeline copy() uses for `Backend`'s device `device` in `ctx`: auto_select over a
/// pinned ring of at most 256 MiB, one per device, made on first use and kept as long as the
/// context.
template <backend_policy Backend>
[[nodiscard]] pipeline<auto_select, Backend>& default_pipeline(context& ctx, int device = 0) {
  LRIS_EXPECTS(device >= 0 && device < Backend::device_count(),
               "lris::copy: device {} does not exist ({} has {} devices)", device, Backend::name,
               Backend::device_count());
  return ctx.cached<pipeline<auto_select, Backend>>(device, [&] {
    // The context owns the pipeline: it refers back to it without keeping it alive.
    return std::make_unique<pipeline<auto_select, Backend>>(
        auto_select{}, Backend(device), pinned_allocator<Backend>{},
        pipeline_config{.context = ctx.unowned()});
  });
}

/// @brief default_pipeline(ctx, device) of the default context. The reference stays valid as
/// long as that context: the first default lives until the process ends.
template <backend_policy Backend>
[[nodiscard]] pipeline<auto_select, Backend>& default_pipeline(int device = 0) {
  return default_pipeline<Backend>(*default_context(), device);
}

/// @brief Starts copying `src` into `dst` (same size in bytes) along the path auto_select
/// picks, on the backend the spans' memory spaces name. Returns the transfer's handle; call
/// `.wait()` for its statistics. Impossible pairs of memory spaces fail to compile.
template <memory_space DstSpace, class T, memory_space SrcSpace, class U>
transfer copy(memory_span<DstSpace, T> dst, memory_span<SrcSpace, U> src,
              const transfer_options& options = {}) {
  using traits = transfer_traits<DstSpace, SrcSpace>;
  static_assert(traits::possible,
                "lris::copy: no direct path between device memory of two different backends; "
                "copy through host memory");
  using backend = typename traits::backend;
  const int device = traits::kind == copy_kind::device_to_host ? src.device() : dst.device();
  const auto ctx = default_context();  // held while the transfer starts
  return default_pipeline<backend>(*ctx, device).copy(dst, src, options);
}

/// @brief Copies `src[i]` into `dst[i]` for every i as one transfer (see pipeline::copy_batch):
/// one kernel for pinned and device memory on a GPU. `dst` and `src` are contiguous ranges of
/// memory spans (std::vector, std::array, std::span), at least one pair long.
template <std::ranges::contiguous_range DstRange, std::ranges::contiguous_range SrcRange>
transfer copy_batch(const DstRange& dst, const SrcRange& src,
                    const transfer_options& options = {}) {
  using dst_span = std::ranges::range_value_t<DstRange>;
  using src_span = std::ranges::range_value_t<SrcRange>;
  using traits = transfer_traits<typename dst_span::space_type, typename src_span::space_type>;
  static_assert(traits::possible,
                "lris::copy_batch: no direct path between device memory of two different "
                "backends; copy through host memory");
  using backend = typename traits::backend;
  LRIS_EXPECTS(!std::ranges::empty(dst) && !std::ranges::empty(src),
               "lris::copy_batch: an empty batch ({} destinations, {} sources)",
               std::ranges::size(dst), std::ranges::size(src));
  const int device = traits::kind == copy_kind::device_to_host
                         ? std::ranges::begin(src)->device()
                         : std::ranges::begin(dst)->device();
  const auto ctx = default_context();
  return default_pipeline<backend>(*ctx, device).copy_batch(dst, src, options);
}

/// @brief Starts reading dst.size_bytes() bytes of `f` from `offset` into `dst` (host or device
/// memory) on the default pipeline of the span's backend; see pipeline::read.
template <memory_space DstSpace, class T>
transfer read_file(memory_span<DstSpace, T> dst, const io::file& f, std::uint64_t offset = 0,
                   const transfer_options& options = {}) {
  using backend = typename transfer_traits<DstSpace, host_space>::backend;
  const auto ctx = default_context();
  return default_pipeline<backend>(*ctx, dst.device()).read(dst, f, offset, options);
}

/// @brief Starts writing `src` (host or device memory) into `f` at `offset` on the default
/// pipeline of the span's backend; see pipeline::write.
template <memory_space SrcSpace, class U>
transfer write_file(io::file& f, std::uint64_t offset, memory_span<SrcSpace, U> src,
                    const transfer_options& options = {}) {
  using backend = typename transfer_traits<host_space, SrcSpace>::backend;
  const auto ctx = default_context();
  return default_pipeline<backend>(*ctx, src.device()).write(f, offset, src, options);
}

}  // namespace lris
