// lris bench, GPU table: host <-> device 0 over PCIe, each path against cudaMemcpy from pinned
// memory measured in the same run.
#include <cuda_runtime_api.h>

#include <array>
#include <cstring>
#include <memory>
#include <random>

#include <fmt/format.h>

#include <lris/cuda.hpp>
#include <lris/cuda/batched_copy.hpp>
#include <lris/cuda/cuda_try.hpp>

#include "bench_table.hpp"
#include "measure.hpp"

namespace lris::tool {

namespace {

// 10,000 buffers of 4-64 KiB at random places in pinned host memory, to random places in device
// memory: a loop of cudaMemcpyAsync against one batched gather kernel reading over PCIe. Then
// the same buffers in pageable memory, packed through the staging ring, both ways.
bench_table small_buffers(cuda_backend& gpu, double h2d_ceiling, double d2h_ceiling,
                          double seconds, bool tty) {
  constexpr std::size_t count = 10000;
  std::mt19937_64 rng(42);
  std::uniform_int_distribution<std::size_t> size(4 << 10, 64 << 10), gap(0, 4 << 10);
  std::vector<std::size_t> src_off, dst_off, bytes;
  std::size_t src_total = 0, dst_total = 0, total = 0;
  for (std::size_t i = 0; i < count; ++i) {
    const std::size_t n = size(rng) & ~std::size_t{15};
    src_total += gap(rng) & ~std::size_t{15};
    dst_total += gap(rng) & ~std::size_t{15};
    src_off.push_back(src_total);
    dst_off.push_back(dst_total);
    bytes.push_back(n);
    src_total += n;
    dst_total += n;
    total += n;
  }
  buffer<pinned_allocator<cuda_backend>> src(src_total, pinned_allocator<cuda_backend>(gpu));
  buffer<device_allocator<cuda_backend>> dst(dst_total, device_allocator<cuda_backend>(gpu));
  buffer<pinned_allocator<cuda_backend>, cuda::copy_item> items(
      count, pinned_allocator<cuda_backend>(gpu));
  std::memset(src.data(), 0x5a, src_total);
  for (std::size_t i = 0; i < count; ++i) {
    items.data()[i] = {src.data() + src_off[i], dst.data() + dst_off[i], bytes[i]};
  }
  auto stream = gpu.make_stream();
  auto native = static_cast<cudaStream_t>(stream.native());
  bench_table t{fmt::format("Many small buffers: {} buffers of 4-64 KiB, scattered in host "
                            "memory",
                            count),
                fmt::format("cudaMemcpy of 1 GiB from and to pinned memory, measured in this "
                            "run: host -> device {:.1f} GB/s, device -> host {:.1f} GB/s",
                            h2d_ceiling, d2h_ceiling),
                {total}, {}};
  // The baseline: one cudaMemcpyAsync per buffer on one stream, then one synchronize.
  auto memcpy_loop = [&](const auto& dsts, const auto& srcs, cudaMemcpyKind kind) {
    for (std::size_t i = 0; i < count; ++i) {
      LRIS_CUDA_TRY(cudaMemcpyAsync(std::data(dsts)[i].data(), std::data(srcs)[i].data(),
                                    bytes[i], kind, native));
    }
    LRIS_CUDA_TRY(cudaStreamSynchronize(native));
    return transfer_stats{};
  };
  // Through the pipeline: spans in, one kernel out (item array built and pinned per batch).
  std::vector<device_span<cuda_backend>> dspans;
  std::vector<pinned_span<cuda_backend>> sspans;
  for (std::size_t i = 0; i < count; ++i) {
    dspans.emplace_back(dst.data() + dst_off[i], bytes[i]);
    sspans.emplace_back(src.data() + src_off[i], bytes[i]);
  }
  add_row(t, "loop of cudaMemcpyAsync (baseline)", h2d_ceiling, [&](std::size_t) {
    return memcpy_loop(dspans, sspans, cudaMemcpyHostToDevice);
  }, seconds, tty);
  auto& pipe = default_pipeline<cuda_backend>(gpu.device());
  add_row(t, "lris copy_batch (pipeline)", h2d_ceiling, [&](std::size_t) {
    return pipe.copy_batch(dspans, sspans).wait();
  }, seconds, tty);
  add_row(t, "lris batched gather kernel, zero copy", h2d_ceiling, [&](std::size_t) {
    cuda::launch_batched_copy(items.data(), count, native);
    LRIS_CUDA_TRY(cudaStreamSynchronize(native));
    transfer_stats st;
    st.policy = "batched";  // shown as an LRIS path in the table
    st.path = transfer_path::batched;
    return st;
  }, seconds, tty);
  // The same buffers in pageable memory.
  buffer<pageable_allocator> page_src(src_total), page_back(src_total);
  std::memset(page_src.data(), 0x5b, src_total);
  prefault(page_back.data(), src_total);
  std::vector<host_span<const std::byte>> page_spans;
  std::vector<host_span<std::byte>> back_spans;
  std::vector<device_span<cuda_backend, const std::byte>> dev_spans;
  for (std::size_t i = 0; i < count; ++i) {
    page_spans.emplace_back(page_src.data() + src_off[i], bytes[i]);
    back_spans.emplace_back(page_back.data() + src_off[i], bytes[i]);
    dev_spans.emplace_back(dst.data() + dst_off[i], bytes[i]);
  }
  add_row(t, "loop of cudaMemcpyAsync, pageable -> device", h2d_ceiling, [&](std::size_t) {
    return memcpy_loop(dspans, page_spans, cudaMemcpyHostToDevice);
  }, seconds, tty);
  add_row(t, "lris copy_batch pageable -> device", h2d_ceiling, [&](std::size_t) {
    return pipe.copy_batch(dspans, page_spans).wait();
  }, seconds, tty);
  add_row(t, "loop of cudaMemcpyAsync, device -> pageable", d2h_ceiling, [&](std::size_t) {
    return memcpy_loop(back_spans, dev_spans, cudaMemcpyDeviceToHost);
  }, seconds, tty);
  add_row(t, "lris copy_batch device -> pageable", d2h_ceiling, [&](std::size_t) {
    return pipe.copy_batch(back_spans, dev_spans).wait();
  }, seconds, tty);
  return t;
}

// Host -> device and device -> host at the same time, `bytes` each way; the ceiling is two
// cudaMemcpyAsync from pinned memory on two streams, measured in this run.
bench_table both_directions(cuda_backend& gpu, std::size_t bytes, double seconds, bool tty) {
  buffer<pinned_allocator<cuda_backend>> up_src(bytes, pinned_allocator<cuda_backend>(gpu));
  buffer<pinned_allocator<cuda_backend>> down_dst(bytes, pinned_allocator<cuda_backend>(gpu));
  buffer<pageable_allocator> page_src(bytes), page_dst(bytes);
  buffer<device_allocator<cuda_backend>> dev_up(bytes, device_allocator<cuda_backend>(gpu));
  buffer<device_allocator<cuda_backend>> dev_down(bytes, device_allocator<cuda_backend>(gpu));
  std::memset(up_src.data(), 1, bytes);
  std::memset(page_src.data(), 2, bytes);
  prefault(down_dst.data(), bytes);
  prefault(page_dst.data(), bytes);
  auto s1 = gpu.make_stream();
  auto s2 = gpu.make_stream();
  const std::size_t moved = 2 * bytes;  // rates below count both directions
  const double ceiling = measure_gbps(moved, [&] {
    LRIS_CUDA_TRY(cudaMemcpyAsync(dev_up.data(), up_src.data(), bytes, cudaMemcpyHostToDevice,
                                  static_cast<cudaStream_t>(s1.native())));
    LRIS_CUDA_TRY(cudaMemcpyAsync(down_dst.data(), dev_down.data(), bytes,
                                  cudaMemcpyDeviceToHost, static_cast<cudaStream_t>(s2.native())));
    gpu.synchronize(s1);
    gpu.synchronize(s2);
  }, 5, seconds);
  bench_table t{fmt::format("Both directions at once: {} each way (rates count both)",
                            size_label(bytes)),
                fmt::format("two cudaMemcpyAsync from and to pinned memory on two streams, "
                            "measured in this run: {:.1f} GB/s in all", ceiling),
                {moved}, {}};
  auto& p = default_pipeline<cuda_backend>(0);
  add_row(t, "lris pinned, both ways", ceiling, [&](std::size_t) {
    auto up = p.copy(dev_up.span(), up_src.span());
    auto down = p.copy(down_dst.span(), dev_down.span());
    up.wait();
    return down.wait();
  }, seconds, tty);
  add_row(t, "lris pageable (staged), both ways", ceiling, [&](std::size_t) {
    auto up = p.copy(dev_up.span(), page_src.span());
    auto down = p.copy(page_dst.span(), dev_down.span());
    up.wait();
    return down.wait();
  }, seconds, tty);
  return t;
}

}  // namespace

std::vector<bench_table> cuda_bench(const std::vector<std::size_t>& sizes, double seconds,
                                    bool tty) {
  if (cuda_backend::device_count() == 0) return {};
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
  // A kernel reading pinned host memory over the link itself (zero copy), the buffer cut in
  // two so that it goes as a batch: one kernel, 1 MiB pieces spread over the GPU.
  pipeline<staged, cuda_backend> zero_copy(staged{}, gpu);
  add_row(t, "lris zero-copy kernel read, pinned -> device", h2d_ceiling, [&](std::size_t n) {
    const std::size_t half = n / 2;
    const std::array<device_span<cuda_backend>, 2> d{dspan(half), dev.span().subspan(half, n - half)};
    const std::array<pinned_span<cuda_backend>, 2> s{pinned.span().subspan(0, half),
                                                     pinned.span().subspan(half, n - half)};
    return zero_copy.copy_batch(d, s).wait();
  }, seconds, tty);
  std::vector<bench_table> tables;
  tables.push_back(std::move(t));
  tables.push_back(both_directions(gpu, largest, seconds, tty));
  tables.push_back(small_buffers(gpu, h2d_ceiling, d2h_ceiling, seconds, tty));
  return tables;
}

}  // namespace lris::tool
