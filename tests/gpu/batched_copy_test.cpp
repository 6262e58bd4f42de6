// launch_batched_copy: thousands of small copies in one launch, from pinned host memory (zero
// copy) and from device memory, aligned and not; nothing outside the destinations is touched.
#include <catch2/catch.hpp>

#include <cuda_runtime_api.h>

#include <cstring>
#include <random>
#include <vector>

#include <lris/cuda.hpp>
#include <lris/cuda/batched_copy.hpp>

using lris::cuda_backend;

namespace {

struct layout {
  std::vector<std::size_t> src_off, dst_off, bytes;
  std::size_t src_total = 0, dst_total = 0;
};

// Random sizes and offsets with gaps, so that an overrun lands on poison we check.
layout make_layout(std::size_t count, std::size_t min_bytes, std::size_t max_bytes, bool aligned,
                   unsigned seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::size_t> size(min_bytes, max_bytes), gap(1, 300);
  layout l;
  for (std::size_t i = 0; i < count; ++i) {
    std::size_t n = size(rng);
    std::size_t sg = gap(rng), dg = gap(rng);
    if (aligned) {
      n = (n + 15) & ~std::size_t{15};
      sg = (sg + 15) & ~std::size_t{15};
      dg = (dg + 15) & ~std::size_t{15};
    }
    l.src_total += sg;
    l.dst_total += dg;
    l.src_off.push_back(l.src_total);
    l.dst_off.push_back(l.dst_total);
    l.bytes.push_back(n);
    l.src_total += n;
    l.dst_total += n;
  }
  l.src_total += 64;
  l.dst_total += 64;
  return l;
}

}  // namespace

TEST_CASE("batched copy: every item lands, nothing else is written", "[cuda][kernels]") {
  cuda_backend be;
  auto stream = be.make_stream();
  for (const bool aligned : {true, false}) {
    for (const bool from_device : {false, true}) {
      CAPTURE(aligned, from_device);
      const layout l = make_layout(3000, 1, 64 << 10, aligned, aligned ? 1 : 2);
      // Sources: random bytes in a pinned arena (or a device copy of it).
      lris::buffer<lris::pinned_allocator<cuda_backend>> host_src(l.src_total);
      std::mt19937_64 rng(7);
      for (std::size_t i = 0; i < l.src_total; ++i) host_src.data()[i] = std::byte(rng());
      lris::buffer<lris::device_allocator<cuda_backend>> dev_src(l.src_total);
      REQUIRE(cudaMemcpy(dev_src.data(), host_src.data(), l.src_total, cudaMemcpyHostToDevice) ==
              cudaSuccess);
      const std::byte* src = from_device ? dev_src.data() : host_src.data();
      lris::buffer<lris::device_allocator<cuda_backend>> dst(l.dst_total);
      REQUIRE(cudaMemset(dst.data(), 0xA5, l.dst_total) == cudaSuccess);
      // The memset and the pageable upload run on the legacy default stream, which the
      // backend's non-blocking streams do not wait for.
      REQUIRE(cudaDeviceSynchronize() == cudaSuccess);

      lris::buffer<lris::pinned_allocator<cuda_backend>, lris::cuda::copy_item> items(
          l.bytes.size());
      for (std::size_t i = 0; i < l.bytes.size(); ++i) {
        items.data()[i] = {src + l.src_off[i], dst.data() + l.dst_off[i], l.bytes[i]};
      }
      lris::cuda::launch_batched_copy(items.data(), items.size(), stream.native());
      be.synchronize(stream);

      std::vector<std::byte> out(l.dst_total);
      REQUIRE(cudaMemcpy(out.data(), dst.data(), l.dst_total, cudaMemcpyDeviceToHost) ==
              cudaSuccess);
      std::vector<bool> covered(l.dst_total, false);
      std::size_t bad = 0;
      for (std::size_t i = 0; i < l.bytes.size(); ++i) {
        if (std::memcmp(out.data() + l.dst_off[i], host_src.data() + l.src_off[i], l.bytes[i])) ++bad;
        std::fill_n(covered.begin() + static_cast<std::ptrdiff_t>(l.dst_off[i]), l.bytes[i], true);
      }
      CHECK(bad == 0);
      std::size_t stray = 0;
      for (std::size_t b = 0; b < l.dst_total; ++b) stray += !covered[b] && out[b] != std::byte{0xA5};
      CHECK(stray == 0);
    }
  }
}

TEST_CASE("batched copy: an empty batch launches nothing", "[cuda][kernels]") {
  cuda_backend be;
  auto s = be.make_stream();
  lris::cuda::launch_batched_copy(nullptr, 0, s.native());
  be.synchronize(s);
}
