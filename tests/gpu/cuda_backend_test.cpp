// cuda_backend on a real device: every transfer path with random data and poisoned
// destinations, streams and events, and the errors.
#include <catch2/catch.hpp>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include <lris/cuda/cuda_backend.hpp>
#include <lris/lris.hpp>

#include "support/random_bytes.hpp"
#include "support/what_contains.hpp"

using lris::cuda_backend;
using lris::test::random_bytes;
using lris::test::what_contains;

namespace {

// Device memory filled with a poison pattern, read back with plain cudaMemcpy.
struct device_buffer {
  cuda_backend b;
  std::size_t n;
  std::byte* p;
  explicit device_buffer(std::size_t bytes)
      : n(bytes), p(static_cast<std::byte*>(b.allocate_device(bytes))) {
    REQUIRE(cudaMemset(p, 0xA5, n) == cudaSuccess);
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  }
  ~device_buffer() { b.deallocate_device(p, n); }
  lris::device_span<cuda_backend> span() { return {p, n}; }
  std::vector<std::byte> read() const {
    std::vector<std::byte> out(n);
    REQUIRE(cudaMemcpy(out.data(), p, n, cudaMemcpyDeviceToHost) == cudaSuccess);
    return out;
  }
};

}  // namespace

TEST_CASE("cuda: every path delivers every byte", "[cuda][transfer]") {
  const std::size_t sizes[] = {1, 4097, (std::size_t{3} << 20) + 5, std::size_t{64} << 20};
  for (std::size_t n : sizes) {
    CAPTURE(n);
    const auto host = random_bytes(n, static_cast<unsigned>(n));
    device_buffer dev(n);
    std::vector<std::byte> back(n, std::byte{0x5A});

    SECTION("staged, small chunks, several streams") {
      lris::pipeline<lris::staged, cuda_backend> p;
      lris::transfer_options o{.chunk_bytes = 1 << 20, .workers = 4, .streams = 3,
                               .ring_depth = 6};
      const auto up = p.copy(dev.span(), lris::as_host(host), o).wait();
      CHECK(up.path == lris::transfer_path::staged);
      CHECK(up.backend == "cuda");
      CHECK(dev.read() == host);
      const auto down = p.copy(lris::as_host(back), dev.span(), o).wait();
      CHECK(down.path == lris::transfer_path::staged);
      CHECK(back == host);
    }
    SECTION("direct from pageable memory") {
      lris::pipeline<lris::direct, cuda_backend> p;
      p.copy(dev.span(), lris::as_host(host)).wait();
      CHECK(dev.read() == host);
      p.copy(lris::as_host(back), dev.span()).wait();
      CHECK(back == host);
    }
    SECTION("pinned memory goes direct") {
      lris::buffer<lris::pinned_allocator<cuda_backend>> pinned(n);
      std::memcpy(pinned.data(), host.data(), n);
      lris::pipeline<lris::staged, cuda_backend> p;
      CHECK(p.copy(dev.span(), pinned.span()).wait().path == lris::transfer_path::direct);
      CHECK(dev.read() == host);
      std::memset(pinned.data(), 0, n);
      CHECK(p.copy(pinned.span(), dev.span()).wait().path == lris::transfer_path::direct);
      CHECK(std::memcmp(pinned.data(), host.data(), n) == 0);
    }
    SECTION("registered memory goes direct") {
      std::vector<std::byte> mine = host;
      lris::host_registration<cuda_backend> reg(cuda_backend{}, lris::as_host(mine));
      CHECK(cuda_backend::is_pinned(mine.data()));
      lris::pipeline<lris::auto_select, cuda_backend> p;
      CHECK(p.copy(dev.span(), reg.span()).wait().path == lris::transfer_path::direct);
      CHECK(dev.read() == host);
    }
    SECTION("device to device, and the free copy()") {
      device_buffer other(n);
      lris::copy(dev.span(), lris::as_host(host)).wait();
      lris::copy(other.span(), dev.span()).wait();
      CHECK(other.read() == host);
    }
  }
}

TEST_CASE("cuda: both directions at once", "[cuda][transfer]") {
  const std::size_t n = std::size_t{96} << 20;
  const auto a = random_bytes(n, 1);
  const auto b = random_bytes(n, 2);
  device_buffer da(n), db(n);
  lris::copy(db.span(), lris::as_host(b)).wait();
  std::vector<std::byte> b_back(n);
  lris::pipeline<lris::staged, cuda_backend> p;
  std::thread up([&] { p.copy(da.span(), lris::as_host(a)).wait(); });
  std::thread down([&] { p.copy(lris::as_host(b_back), db.span()).wait(); });
  up.join();
  down.join();
  CHECK(da.read() == a);
  CHECK(b_back == b);
}

TEST_CASE("cuda: streams, events and host callbacks", "[cuda]") {
  cuda_backend be;
  auto s1 = be.make_stream();
  auto s2 = be.make_stream();
  auto e = be.make_event();
  CHECK(be.query(e));
  const std::size_t n = std::size_t{32} << 20;
  device_buffer d1(n), d2(n);
  const auto host = random_bytes(n, 3);
  lris::buffer<lris::pinned_allocator<cuda_backend>> pinned(n);
  std::memcpy(pinned.data(), host.data(), n);
  be.copy_async(d1.p, pinned.data(), n, lris::copy_kind::host_to_device, s1);
  be.record(e, s1);
  be.wait(s2, e);  // s2's copy must see s1's data
  be.copy_async(d2.p, d1.p, n, lris::copy_kind::device_to_device, s2);
  int called = 0;
  be.host_callback(s2, +[](void* u) noexcept { ++*static_cast<int*>(u); }, &called);
  be.synchronize(s2);
  CHECK(called == 1);
  CHECK(d2.read() == host);
}

TEST_CASE("cuda: errors name what is at fault", "[cuda][errors]") {
  cuda_backend be;
  SECTION("bad device index") {
    REQUIRE_THROWS_MATCHES(cuda_backend(1000), lris::invalid_argument,
                           what_contains("device 1000 does not exist"));
    REQUIRE_THROWS_AS(cuda_backend(-1), lris::invalid_argument);
  }
  SECTION("device out of memory") {
    REQUIRE_THROWS_MATCHES(be.allocate_device(std::size_t{1} << 50), lris::out_of_memory,
                           what_contains("cannot allocate 1125899906842624 bytes on device 0"));
    // The device still works afterwards.
    void* p = be.allocate_device(1 << 20);
    be.deallocate_device(p, 1 << 20);
  }
  SECTION("registration") {
    std::vector<std::byte> mem(1 << 20);
    REQUIRE_THROWS_MATCHES(be.unregister_host(mem.data()), lris::invalid_argument,
                           what_contains("not the start of a registered range"));
    be.register_host(mem.data(), mem.size());
    REQUIRE_THROWS_MATCHES(be.register_host(mem.data(), mem.size()), lris::invalid_argument,
                           what_contains("already registered"));
    be.unregister_host(mem.data());
    REQUIRE_THROWS_AS(be.register_host(nullptr, 10), lris::invalid_argument);
  }
  SECTION("a span on another device than the pipeline's") {
    device_buffer d(64);
    std::vector<std::byte> h(64);
    lris::pipeline<lris::direct, cuda_backend> p;
    REQUIRE_THROWS_MATCHES(p.copy(lris::device_span<cuda_backend>(d.p, 64, 7), lris::as_host(h)),
                           lris::invalid_argument, what_contains("on device 7"));
  }
}

TEST_CASE("cuda: peer copies, on one device and between two when present", "[cuda][peer]") {
  const std::size_t n = (std::size_t{8} << 20) + 3;
  const auto host = random_bytes(n, 9);
  device_buffer a(n), b(n);
  REQUIRE(cudaMemcpy(a.p, host.data(), n, cudaMemcpyHostToDevice) == cudaSuccess);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);  // non-blocking streams do not wait for it
  cuda_backend be(0);
  CHECK(be.enable_peer_access(0));  // a device reaches itself
  auto s = be.make_stream();
  be.copy_peer_async(b.p, 0, a.p, 0, n, s);
  be.synchronize(s);
  CHECK(b.read() == host);
  REQUIRE_THROWS_MATCHES(be.copy_peer_async(b.p, 0, a.p, 99, n, s), lris::invalid_argument,
                         what_contains("device 99 -> 0"));
  if (cuda_backend::device_count() >= 2) {
    cuda_backend be1(1);
    void* far = be1.allocate_device(n);
    (void)be.enable_peer_access(1);  // direct where possible; correct either way
    be.copy_peer_async(far, 1, a.p, 0, n, s);
    be.synchronize(s);
    std::vector<std::byte> out(n);
    REQUIRE(cudaMemcpy(out.data(), far, n, cudaMemcpyDefault) == cudaSuccess);
    CHECK(out == host);
    be1.deallocate_device(far, n);
  }
}

TEST_CASE("cuda: copy_batch is one kernel for pinned and device memory", "[cuda][batch]") {
  const std::size_t count = 2000, each = 3000;  // not a multiple of 16: the byte path too
  const auto host = random_bytes(count * each, 21);
  lris::buffer<lris::pinned_allocator<cuda_backend>> pinned(count * each);
  std::memcpy(pinned.data(), host.data(), host.size());
  device_buffer dev(count * each + 7);
  std::vector<lris::device_span<cuda_backend>> d;
  std::vector<lris::pinned_span<cuda_backend>> s;
  for (std::size_t i = 0; i < count; ++i) {
    // Reverse order on the device: a real scatter.
    d.emplace_back(dev.p + 7 + (count - 1 - i) * each, each);
    s.emplace_back(pinned.data() + i * each, each);
  }
  lris::pipeline<lris::auto_select, cuda_backend> p;
  const auto st = p.copy_batch(d, s).wait();
  CHECK(st.path == lris::transfer_path::batched);
  CHECK(st.bytes == count * each);
  const auto out = dev.read();
  std::size_t bad = 0;
  for (std::size_t i = 0; i < count; ++i) {
    bad += std::memcmp(out.data() + 7 + (count - 1 - i) * each, host.data() + i * each, each) != 0;
  }
  CHECK(bad == 0);
  CHECK(std::all_of(out.begin(), out.begin() + 7, [](std::byte b) { return b == std::byte{0xA5}; }));

  // And back: device -> pinned, also one kernel.
  std::memset(pinned.data(), 0, host.size());
  const auto back = p.copy_batch(s, d).wait();
  CHECK(back.path == lris::transfer_path::batched);
  CHECK(std::memcmp(pinned.data(), host.data(), host.size()) == 0);

  // Pageable sources are packed into pinned slots, one kernel per slot.
  std::vector<lris::host_span<const std::byte>> pageable;
  for (std::size_t i = 0; i < count; ++i) pageable.emplace_back(host.data() + i * each, each);
  REQUIRE(cudaMemset(dev.p, 0, dev.n) == cudaSuccess);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  const auto packed = p.copy_batch(d, pageable).wait();
  CHECK(packed.path == lris::transfer_path::packed);
  CHECK(packed.chunks > 1);
  const auto out2 = dev.read();
  bad = 0;
  for (std::size_t i = 0; i < count; ++i) {
    bad += std::memcmp(out2.data() + 7 + (count - 1 - i) * each, host.data() + i * each, each) != 0;
  }
  CHECK(bad == 0);

  // And back into poisoned pageable memory, gathered on the device into slots.
  std::vector<std::byte> page_back(host.size(), std::byte{0xA5});
  std::vector<lris::host_span<std::byte>> back_spans;
  for (std::size_t i = 0; i < count; ++i) back_spans.emplace_back(page_back.data() + i * each, each);
  const auto unpacked = p.copy_batch(back_spans, d).wait();
  CHECK(unpacked.path == lris::transfer_path::packed);
  CHECK(page_back == host);

  // Large buffers in a pinned batch are cut into pieces the kernel spreads over the GPU.
  const std::size_t big = (3 << 20) + 48;
  const auto big_host = random_bytes(2 * big, 22);
  lris::buffer<lris::pinned_allocator<cuda_backend>> big_pinned(2 * big);
  std::memcpy(big_pinned.data(), big_host.data(), big_host.size());
  device_buffer big_dev(2 * big);
  lris::pipeline<lris::staged, cuda_backend> st_pipe;
  const std::array<lris::device_span<cuda_backend>, 2> bd{
      lris::device_span<cuda_backend>(big_dev.p + big, big),
      lris::device_span<cuda_backend>(big_dev.p, big)};
  const std::array<lris::pinned_span<cuda_backend>, 2> bs{
      lris::pinned_span<cuda_backend>(big_pinned.data(), big),
      lris::pinned_span<cuda_backend>(big_pinned.data() + big, big)};
  CHECK(st_pipe.copy_batch(bd, bs).wait().path == lris::transfer_path::batched);
  const auto big_out = big_dev.read();
  CHECK(std::memcmp(big_out.data() + big, big_host.data(), big) == 0);
  CHECK(std::memcmp(big_out.data(), big_host.data() + big, big) == 0);
}
