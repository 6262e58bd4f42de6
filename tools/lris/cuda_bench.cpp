// lris bench, GPU table: host <-> device 0 over PCIe, each path against cudaMemcpy from pinned
// memory measured in the same run.
#include <cuda_runtime_api.h>

#include <cstring>
#include <memory>

#include <fmt/format.h>

#include <lris/cuda.hpp>
#include <lris/cuda/cuda_try.hpp>

#include "bench_table.hpp"
#include "measure.hpp"

namespace lris::tool {

std::optional<bench_table> cuda_bench(const std::vector<std::size_t>& sizes, double seconds,
                                      bool tty) {
  if (cuda_backend::device_count() == 0) return std::nullopt;
  const std::size_t largest = sizes.back();
  cuda_backend gpu(0);
  buffer<pageable_allocator> src(largest), dst(largest);
  buffer<pinned_allocator<cuda_backend>> pinned(largest, pinned_allocator<cuda_backend>(gpu));
  buffer<device_allocator<cuda_backend>> dev(largest, device_allocator<cuda_backend>(gpu));
  std::memset(src.data(), 0x3c, largest);
  prefault(dst.data(), largest);
  std::memset(pinned.data(), 0x3c, largest);
  LRIS_CUDA_TRY(cudaSetDevice(0));

  auto raw = [](void* d, const void* s, std::size_t n, cudaMemcpyKind k) {
    LRIS_CUDA_TRY(cudaMemcpy(d, s, n, k));
    return transfer_stats{};
  };
  if (tty) fmt::print(stderr, "lris bench: measuring the PCIe ceilings...\n");
  const double h2d_ceiling = measure_gbps(largest, [&] {
    raw(dev.data(), pinned.data(), largest, cudaMemcpyHostToDevice);
  }, 5, seconds);
  const double d2h_ceiling = measure_gbps(largest, [&] {
    raw(pinned.data(), dev.data(), largest, cudaMemcpyDeviceToHost);
  }, 5, seconds);

  const auto devices = cuda::list_devices();
  bench_table t{fmt::format("GPU paths: {} (cuda_backend, device 0)", devices.at(0).name),
                fmt::format("cudaMemcpy from pinned memory, {}, measured in this run: host -> "
                            "device {:.1f} GB/s, device -> host {:.1f} GB/s",
                            size_label(largest), h2d_ceiling, d2h_ceiling),
                sizes, {}};
  auto& p = default_pipeline<cuda_backend>(0);
  auto dspan = [&](std::size_t n) { return dev.span().subspan(0, n); };
  add_row(t, "cudaMemcpy pinned -> device (ceiling)", h2d_ceiling, [&](std::size_t n) {
    return raw(dev.data(), pinned.data(), n, cudaMemcpyHostToDevice);
  }, seconds, tty);
  add_row(t, "cudaMemcpy device -> pinned (ceiling)", d2h_ceiling, [&](std::size_t n) {
    return raw(pinned.data(), dev.data(), n, cudaMemcpyDeviceToHost);
  }, seconds, tty);
  add_row(t, "cudaMemcpy pageable -> device (naive)", h2d_ceiling, [&](std::size_t n) {
    return raw(dev.data(), src.data(), n, cudaMemcpyHostToDevice);
  }, seconds, tty);
  add_row(t, "cudaMemcpy device -> pageable (naive)", d2h_ceiling, [&](std::size_t n) {
    return raw(dst.data(), dev.data(), n, cudaMemcpyDeviceToHost);
  }, seconds, tty);
  add_row(t, "lris pinned -> device", h2d_ceiling, [&](std::size_t n) {
    return p.copy(dspan(n), pinned.span().subspan(0, n)).wait();
  }, seconds, tty);
  add_row(t, "lris device -> pinned", d2h_ceiling, [&](std::size_t n) {
    return p.copy(pinned.span().subspan(0, n), dspan(n)).wait();
  }, seconds, tty);
  add_row(t, "lris pageable -> device", h2d_ceiling, [&](std::size_t n) {
    return p.copy(dspan(n), src.span().subspan(0, n)).wait();
  }, seconds, tty);
  add_row(t, "lris device -> pageable", d2h_ceiling, [&](std::size_t n) {
    return p.copy(dst.span().subspan(0, n), dspan(n)).wait();
  }, seconds, tty);
  return t;
}

}  // namespace lris::tool
