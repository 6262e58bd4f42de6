// gpu_backend through LRIS's own API only, so that one source tests both runtimes: CUDA, or
// HIP when LRIS_TEST_HIP is defined. Every host <-> device path with random data into poisoned
// destinations, batches (kernel and packed), a conversion kernel, the checksum, and the errors.
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <memory>
#include <filesystem>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <lris/element/checksum.hpp>
#include <lris/element/dtype_convert.hpp>
#include <lris/lris.hpp>
#if defined(LRIS_TEST_HIP)
#include <lris/hip.hpp>
#include <lris/hip/checksum.hpp>
#include <lris/hip/convert.hpp>
namespace rt = lris::hip;
using backend = lris::hip_backend;
#else
#include <lris/cuda.hpp>
#include <lris/cuda/checksum.hpp>
#include <lris/cuda/convert.hpp>
namespace rt = lris::cuda;
using backend = lris::cuda_backend;
#endif

#include "support/held_progress.hpp"
#include "support/random_bytes.hpp"
#include "support/what_contains.hpp"

using lris::test::random_bytes;
using lris::test::what_contains;

namespace {
constexpr std::byte poison{0xA5};

using device_buffer = lris::buffer<lris::device_allocator<backend>>;
using pinned_buffer = lris::buffer<lris::pinned_allocator<backend>>;

// The device bytes, read back through a pinned buffer.
std::vector<std::byte> read_back(lris::pipeline<lris::auto_select, backend>& p, device_buffer& d) {
  pinned_buffer host(d.size());
  std::memset(host.data(), 0, host.size());
  p.copy(host.span(), d.span()).wait();
  return {host.data(), host.data() + host.size()};
}

void fill(lris::pipeline<lris::auto_select, backend>& p, device_buffer& d, std::byte value) {
  std::vector<std::byte> v(d.size(), value);
  p.copy(d.span(), lris::as_host<const std::byte>(v.data(), v.size())).wait();
}
}  // namespace

TEST_CASE("gpu_backend: errors name what is wrong", "[gpu][errors]") {
  const int n = backend::device_count();
  REQUIRE_THROWS_MATCHES(backend(n), lris::invalid_argument, what_contains("does not exist"));
  REQUIRE_THROWS_MATCHES(backend(-1), lris::invalid_argument, what_contains("does not exist"));
  backend be;
  REQUIRE_THROWS_MATCHES(be.allocate_device(std::size_t{1} << 50), lris::out_of_memory,
                         what_contains("1125899906842624 bytes"));
  std::vector<std::byte> plain(4096);
  REQUIRE_THROWS_MATCHES(be.unregister_host(plain.data()), lris::invalid_argument,
                         what_contains("not the start of a registered range"));
  CHECK_FALSE(backend::is_pinned(plain.data()));
  be.register_host(plain.data(), plain.size());
  CHECK(backend::is_pinned(plain.data()));
  REQUIRE_THROWS_MATCHES(be.register_host(plain.data(), plain.size()), lris::invalid_argument,
                         what_contains("already registered"));
  be.unregister_host(plain.data());
}

TEST_CASE("gpu_backend: the broker's monitor reads the link as the driver measures it",
          "[gpu][sched]") {
  backend be;
  const std::string bus = be.pci_bus_id();
  CHECK(bus.size() == 12);  // "0000:1b:00.0"
  auto s = std::make_shared<lris::sched::bandwidth_broker>();
  lris::pipeline_config c;
  c.broker = s;
  lris::pipeline<lris::direct, backend> p({}, be, lris::pinned_allocator<backend>(be), std::move(c));
  const auto link = s->resource(
      lris::sched::link_resource(std::string(backend::name) + ":" + std::to_string(be.device()), true));
  constexpr std::size_t n = std::size_t{256} << 20;
  pinned_buffer host(n);
  device_buffer dev(n);
  std::memset(host.data(), 1, n);
  auto st = s->status(link);  // starts the monitor's sampler
  for (int i = 0; i < 100 && !(st.external && st.external_gbps > 1.0); ++i) {
    for (int k = 0; k < 4; ++k) p.copy(dev.span(), host.span()).wait();
    st = s->status(link);
  }
  const bool driver = backend::name == std::string_view("cuda") &&
                      lris::default_context()->nvml()->get().available();
  if (!driver) {
    WARN("no NVML: " << lris::default_context()->nvml()->get().why());
    CHECK_FALSE(st.external);
    return;
  }
  CHECK(st.external);
  CHECK(st.external_gbps > 1.0);  // the copies, as the driver saw them
  CHECK(st.gbps > 1.0);           // and as the library counted them
}

TEST_CASE("gpu_backend: every host <-> device path moves every byte", "[gpu][paths]") {
  lris::pipeline<lris::auto_select, backend> p;
  for (const std::size_t n : {std::size_t{1}, std::size_t{4096 + 3}, std::size_t{(9 << 20) + 13}}) {
    CAPTURE(n);
    const auto data = random_bytes(n, n);
    device_buffer dev(n);

    fill(p, dev, poison);
    pinned_buffer pinned(n);
    std::memcpy(pinned.data(), data.data(), n);
    p.copy(dev.span(), pinned.span()).wait();  // pinned -> device
    CHECK(read_back(p, dev) == data);

    fill(p, dev, poison);
    const auto st = p.copy(dev.span(), lris::as_host<const std::byte>(data.data(), n)).wait();
    CHECK(st.bytes == n);
    CHECK(read_back(p, dev) == data);  // pageable -> device (staged when large)

    std::vector<std::byte> back(n, poison);
    p.copy(lris::as_host(back.data(), n), dev.span()).wait();  // device -> pageable
    CHECK(back == data);

    device_buffer other(n);
    fill(p, other, poison);
    auto s = p.backend();
    auto stream = s.make_stream();
    s.copy_async(other.data(), dev.data(), n, lris::copy_kind::device_to_device, stream);
    s.synchronize(stream);
    CHECK(read_back(p, other) == data);  // device -> device
  }
}

TEST_CASE("gpu_backend: copy_batch is one kernel for pinned memory, packed for pageable",
          "[gpu][batch]") {
  constexpr std::size_t count = 700, each = 5000;  // not a multiple of 16
  const auto data = random_bytes(count * each, 5);
  pinned_buffer pinned(data.size());
  std::memcpy(pinned.data(), data.data(), data.size());
  device_buffer dev(data.size());
  lris::pipeline<lris::auto_select, backend> p;
  fill(p, dev, poison);
  std::vector<lris::device_span<backend>> d;
  std::vector<lris::pinned_span<backend>> s;
  std::vector<lris::host_span<const std::byte>> pageable;
  for (std::size_t i = 0; i < count; ++i) {
    d.emplace_back(dev.data() + (count - 1 - i) * each, each);  // reversed: a real scatter
    s.emplace_back(pinned.data() + i * each, each);
    pageable.emplace_back(data.data() + i * each, each);
  }
  auto check = [&] {
    const auto out = read_back(p, dev);
    std::size_t bad = 0;
    for (std::size_t i = 0; i < count; ++i) {
      bad += std::memcmp(out.data() + (count - 1 - i) * each, data.data() + i * each, each) != 0;
    }
    return bad;
  };
  CHECK(p.copy_batch(d, s).wait().path == lris::transfer_path::batched);
  CHECK(check() == 0);
  fill(p, dev, poison);
  CHECK(p.copy_batch(d, pageable).wait().path == lris::transfer_path::packed);
  CHECK(check() == 0);
}

TEST_CASE("kernels: F32 -> BF16 conversion and the block checksum agree with the host",
          "[gpu][kernels]") {
  constexpr std::size_t count = (1 << 20) + 7;
  std::vector<float> in(count);
  const auto bits = random_bytes(count * 4, 9);
  std::memcpy(in.data(), bits.data(), bits.size());
  lris::pipeline<lris::auto_select, backend> p;
  device_buffer src(count * 4), dst(count * 2);
  fill(p, dst, poison);
  p.copy(src.span(), lris::as_host<const std::byte>(bits.data(), bits.size())).wait();
  rt::launch_convert(src.data(), lris::dtype::F32, dst.data(), lris::dtype::BF16, count, nullptr);
  const auto out = read_back(p, dst);
  std::size_t bad = 0;
  for (std::size_t i = 0; i < count; ++i) {
    std::uint16_t got;
    std::memcpy(&got, out.data() + 2 * i, 2);
    bad += got != lris::float_to_bf16(in[i]);
  }
  CHECK(bad == 0);

  for (const std::size_t n : {std::size_t{0}, std::size_t{31}, std::size_t{3 << 20} + 5}) {
    CAPTURE(n);
    CHECK(rt::block_checksum(src.data(), std::min(n, src.size()), 7) ==
          lris::block_checksum(bits.data(), std::min(n, src.size()), 7));
  }
}

TEST_CASE("gpu_backend: file -> device and device -> file through the pinned ring",
          "[gpu][io]") {
  const auto path = std::filesystem::current_path() / "gpu_file_test.bin";
  const std::size_t n = (37 << 20) + 4321;  // several chunks, an unaligned end
  const auto data = random_bytes(n, 41);
  {
    lris::io::file out(path, lris::io::open_mode::write);
    lris::io::io_engine().write(out, 0, data);
    out.sync();
  }
  lris::pipeline<lris::auto_select, backend> p;
  device_buffer dev(n - 777);
  fill(p, dev, poison);
  const lris::io::file in(path);
  const auto st = p.read(dev.span(), in, 777).wait();
  CHECK(st.path == lris::transfer_path::staged);
  CHECK(st.bytes == n - 777);
  CHECK_FALSE(st.io.empty());
  const auto got = read_back(p, dev);
  CHECK(std::equal(got.begin(), got.end(), data.begin() + 777));

  const auto copy_path = std::filesystem::current_path() / "gpu_file_test_copy.bin";
  {
    lris::io::file out(copy_path, lris::io::open_mode::write);
    CHECK(p.write(out, 0, dev.span()).wait().bytes == n - 777);
    out.sync();
  }
  std::vector<std::byte> back(n - 777);
  lris::io::io_engine().read(lris::io::file(copy_path), 0, back);
  CHECK(std::equal(back.begin(), back.end(), data.begin() + 777));
  std::filesystem::remove(path);
  std::filesystem::remove(copy_path);
}

TEST_CASE("gpu_backend: then_on makes a stream wait for a chunked copy on the device",
          "[gpu][completion]") {
  // A staged copy held at its first chunk until released: then_on must return before the
  // copy finishes (the stream waits on a flag in pinned memory, not the host), and a copy
  // queued on the stream after it must still see every byte.
  using namespace std::chrono_literals;
  lris::pipeline<lris::staged, backend> p(lris::staged{.chunk_bytes = 1 << 20, .workers = 2},
                                          backend(0));
  const std::size_t n = std::size_t{8} << 20;
  const auto src = random_bytes(n, 17);
  device_buffer d(n);
  pinned_buffer back(n);
  std::memset(back.data(), 0, n);
  backend be(0);
  auto s = be.make_stream();
  lris::test::held_progress hold;
  lris::transfer_options o;
  o.on_progress = hold.callback();
  auto t = p.copy(d.span(), lris::as_host(src), o);
  t.then_on(be, s);
  CHECK(hold.held());  // then_on returned while the copy was held
  CHECK_FALSE(t.poll());
  be.copy_async(back.data(), d.data(), n, lris::copy_kind::device_to_host, s);
  auto after = be.make_event();
  be.record(after, s);
  std::this_thread::sleep_for(20ms);
  CHECK_FALSE(be.query(after));  // the stream waits while the copy is held
  hold.release();
  be.synchronize(s);
  CHECK(std::memcmp(back.data(), src.data(), n) == 0);
  CHECK(t.wait().bytes == n);
}
