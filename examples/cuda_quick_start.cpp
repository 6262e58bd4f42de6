// LRIS with a GPU: pageable memory to the device at close to PCIe speed, and thousands of small
// buffers in one kernel launch. Exits 77 when no CUDA device is usable.
#include <cstdio>
#include <vector>

#include <lris/cuda.hpp>
#include <lris/cuda/batched_copy.hpp>

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
  // 1,000 small buffers in pinned memory -> 1,000 places on the GPU, one kernel launch: the
  // GPU reads pinned memory over PCIe itself (zero copy).
  lris::buffer<lris::pinned_allocator<lris::cuda_backend>, lris::cuda::copy_item> items(1000);
  for (std::size_t i = 0; i < items.size(); ++i) {
    items.data()[i] = {pinned.data() + i * 4096, on_gpu.data() + i * 4096, 4096 * sizeof(float)};
  }
  lris::cuda_backend gpu;
  lris::cuda_backend::stream stream = gpu.make_stream();
  lris::cuda::launch_batched_copy(items.data(), items.size(), stream.native());
  gpu.synchronize(stream);
  // [batched_copy]
  return 0;
}
