// LRIS with a GPU: pageable memory to the device at close to PCIe speed, and thousands of small
// buffers in one kernel launch. Exits 77 when no CUDA device is usable.
#include <cstdio>
#include <vector>

#include <lris/cuda.hpp>

int main() {
  if (!lris::cuda::runtime_status().usable()) {
    std::printf("no usable CUDA device: %s\n", lris::cuda::runtime_status().reason.c_str());
    return 77;
  }
  // [cuda_quick_start]
  std::vector<float> weights(256 << 20, 0.5f);  // 1 GiB of ordinary (pageable) memory
  lris::buffer<lris::device_allocator<lris::cuda_backend>, float> on_gpu(weights.size());

  // Staged through pinned memory: copy workers and DMA overlap on several streams.
  lris::transfer_stats up = lris::copy(on_gpu.span(), lris::as_host(weights)).wait();
  std::printf("%.1f GB/s, %s path, %u workers, %u streams\n", up.gbps(),
              lris::to_string(up.path).data(), up.workers, up.streams);

  // Pinned memory goes straight to the DMA engine.
  lris::buffer<lris::pinned_allocator<lris::cuda_backend>, float> pinned(weights.size());
  lris::copy(on_gpu.span(), pinned.span()).wait();
  // [cuda_quick_start]

  // [batched_copy]
  // 1,000 small buffers in pinned memory -> 1,000 places on the GPU as one transfer: one
  // kernel launch, the GPU reading pinned memory over PCIe itself (zero copy).
  std::vector<lris::pinned_span<lris::cuda_backend, float>> from;
  std::vector<lris::device_span<lris::cuda_backend, float>> to;
  for (std::size_t i = 0; i < 1000; ++i) {
    from.push_back(pinned.span().subspan(i * 4096, 4096));
    to.push_back(on_gpu.span().subspan((999 - i) * 4096, 4096));
  }
  lris::transfer_stats batch = lris::copy_batch(to, from).wait();  // path: batched
  // [batched_copy]
  return batch.path == lris::transfer_path::batched ? 0 : 1;
}
