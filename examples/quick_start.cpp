// The shortest useful LRIS program: move a buffer to a device and back, and see how.
#include <cstdio>
#include <vector>

#include <lris/lris.hpp>

int main() {
  // [quick_start]
  std::vector<float> weights(64 << 20, 1.5f);  // 256 MiB of ordinary (pageable) memory

  // Device memory. host_backend runs anywhere; with the CUDA backend it is GPU memory.
  lris::buffer<lris::device_allocator<lris::host_backend>, float> on_device(weights.size());

  // copy() returns a handle at once; wait() returns what happened.
  lris::transfer t = lris::copy(on_device.span(), lris::as_host(weights));
  lris::transfer_stats stats = t.wait();
  std::printf("%.1f GB/s along the %s path, %zu chunks\n", stats.gbps(),
              lris::to_string(stats.path).data(), stats.chunks);

  std::vector<float> back(weights.size());
  lris::copy(lris::as_host(back), on_device.span()).wait();
  // [quick_start]
  return back == weights ? 0 : 1;
}
