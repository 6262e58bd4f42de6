// One kernel for a batch of copies: each block takes items in turn, its threads move 16 bytes
// per access where the item allows it. Reading pinned host memory from here is zero copy: the
// loads travel over PCIe, many in flight at once, so thousands of small buffers cost one launch
// instead of thousands of DMA setups.
#include "gpu/runtime.hpp"

#include <cstdint>


namespace lris::LRIS_GPU_NS {

namespace {

constexpr unsigned threads_per_block = 256;

__global__ void batched_copy_kernel(const copy_item* items, std::size_t count) {
  for (std::size_t i = blockIdx.x; i < count; i += gridDim.x) {
    const copy_item item = items[i];
    const auto s = reinterpret_cast<std::uintptr_t>(item.src);
    const auto d = reinterpret_cast<std::uintptr_t>(item.dst);
    std::size_t done = 0;
    if (((s | d) & 15) == 0) {
      // Vector body; several loads per thread in flight before the stores hide PCIe latency.
      const std::size_t vectors = item.bytes / 16;
      const auto* sv = static_cast<const uint4*>(item.src);
      auto* dv = static_cast<uint4*>(item.dst);
      constexpr unsigned unroll = 4;
      std::size_t v = threadIdx.x;
      for (; v + (unroll - 1) * threads_per_block < vectors; v += unroll * threads_per_block) {
        uint4 r[unroll];
#pragma unroll
        for (unsigned u = 0; u < unroll; ++u) r[u] = sv[v + u * threads_per_block];
#pragma unroll
        for (unsigned u = 0; u < unroll; ++u) dv[v + u * threads_per_block] = r[u];
      }
      for (; v < vectors; v += threads_per_block) dv[v] = sv[v];
      done = vectors * 16;
    }
    const auto* sb = static_cast<const unsigned char*>(item.src);
    auto* db = static_cast<unsigned char*>(item.dst);
    for (std::size_t b = done + threadIdx.x; b < item.bytes; b += threads_per_block) db[b] = sb[b];
  }
}

}  // namespace

void launch_batched_copy(const copy_item* items, std::size_t count, void* stream) {
  if (count == 0) return;
  // Enough blocks to fill the GPU several times over; each loops over its share of items.
  int device = 0, sms = 0;
  LRIS_GPU_TRY(LRIS_GPU(GetDevice)(&device));
  LRIS_GPU_TRY(LRIS_GPU(DeviceGetAttribute)(&sms, gpu_rt::attr_multiprocessors, device));
  const std::size_t blocks = std::min<std::size_t>(count, static_cast<std::size_t>(sms) * 16);
  batched_copy_kernel<<<static_cast<unsigned>(blocks), threads_per_block, 0,
                        static_cast<LRIS_GPU(Stream_t)>(stream)>>>(items, count);
  LRIS_GPU_TRY(LRIS_GPU(GetLastError)());
}

}  // namespace lris::LRIS_GPU_NS
