// pipeline::read and ::write: file <-> host memory straight through the io engine, and file
// <-> device memory through the pinned ring (on the host backend, whose device memory is host
// memory: the same jobs the GPU backends run).
#include <catch2/catch.hpp>

#include "support/what_contains.hpp"

#include <atomic>
#include <vector>

#include <lris/lris.hpp>

#include "pattern.hpp"

using lris::host_backend;
using lris::test::stamped_from;
using lris::test::what_contains;

namespace {

constexpr std::uint64_t seed = 5;
constexpr std::uint64_t file_bytes = (21 << 20) + 4321;

std::filesystem::path stamped_file() {
  static const auto path = lris::test::stamped_file("transfer_stamped.bin", file_bytes, seed);
  return path;
}

}  // namespace

TEST_CASE("read a file into host and device memory, any offset and size", "[io][transfer]") {
  const lris::io::file f(stamped_file());
  lris::pipeline<lris::auto_select, host_backend> p;
  for (const auto& [offset, len] : {std::pair<std::uint64_t, std::size_t>{0, file_bytes},
                                    {4096, 8 << 20},
                                    {777, (9 << 20) + 5},
                                    {file_bytes - 100, 100},
                                    {12, 3}}) {
    CAPTURE(offset, len);
    std::vector<std::byte> host(len, std::byte{0xEE});
    const auto h = p.read(lris::as_host(host.data(), len), f, offset).wait();
    CHECK(h.bytes == len);
    CHECK(stamped_from(host.data(), len, offset, seed));
    CHECK_FALSE(h.io.empty());
    CHECK(h.io_direct_bytes + h.io_buffered_bytes == len);

    lris::buffer<lris::device_allocator<host_backend>> dev(len);
    std::memset(dev.data(), 0xEE, len);
    const auto d = p.read(dev.span(), f, offset).wait();
    CHECK(d.path == lris::transfer_path::staged);
    CHECK(d.bytes == len);
    CHECK(d.io_direct_bytes + d.io_buffered_bytes == len);
    CHECK(stamped_from(dev.data(), len, offset, seed));
    // The staging slots are registered with io_uring where the kernel allows it.
    if (lris::test::fixed_buffers_expected(p.io(), 64 << 20)) CHECK(d.io_fixed_buffer_ops > 0);
  }
}

TEST_CASE("write device and host memory into a file, and read it back", "[io][transfer]") {
  const auto path = lris::test::disk_dir() / "transfer_written.bin";
  const std::size_t len = (13 << 20) + 99;
  lris::buffer<lris::device_allocator<host_backend>> dev(len);
  for (std::size_t i = 0; i < len; ++i) dev.data()[i] = lris::test::stamp_byte(i + 5000, seed);
  {
    lris::io::file out(path, lris::io::open_mode::write);
    const auto st = lris::write_file(out, 5000, dev.span()).wait();
    CHECK(st.bytes == len);
    CHECK(st.path == lris::transfer_path::staged);
    std::vector<std::byte> tail(1000);
    for (std::size_t i = 0; i < tail.size(); ++i) {
      tail[i] = lris::test::stamp_byte(5000 + len + i, seed);
    }
    lris::write_file(out, 5000 + len, lris::as_host<const std::byte>(tail.data(), tail.size()))
        .wait();
    out.sync();
  }
  const lris::io::file in(path);
  REQUIRE(in.size() == 5000 + len + 1000);
  std::vector<std::byte> back(len + 1000);
  lris::read_file(lris::as_host(back.data(), back.size()), in, 5000).wait();
  CHECK(stamped_from(back.data(), back.size(), 5000, seed));
}

TEST_CASE("file transfers take io settings per call", "[io][transfer]") {
  const lris::io::file f(stamped_file());
  lris::pipeline<lris::auto_select, host_backend> p;
  const std::size_t len = 9 << 20;
  const lris::transfer_options buffered{.io = {.direct = lris::io::direct_mode::never}};
  const lris::transfer_options direct{.io = {.direct = lris::io::direct_mode::always}};
  lris::buffer<lris::device_allocator<host_backend>> dev(len);
  std::vector<std::byte> host(len);
  auto st = p.read(dev.span(), f, 4096, buffered).wait();
  CHECK(st.io_buffered_bytes == len);
  CHECK(stamped_from(dev.data(), len, 4096, seed));
  st = p.read(lris::as_host(host.data(), len), f, 4096, buffered).wait();
  CHECK(st.io_buffered_bytes == len);
  CHECK(stamped_from(host.data(), len, 4096, seed));
  if (f.direct()) {
    std::memset(dev.data(), 0, len);
    st = p.read(dev.span(), f, 4096, direct).wait();
    CHECK(st.io_direct_bytes == len);
    CHECK(stamped_from(dev.data(), len, 4096, seed));
  }
}

TEST_CASE("file transfers: errors and cancellation", "[io][transfer][errors]") {
  const lris::io::file f(stamped_file());
  lris::pipeline<lris::staged, host_backend> p;
  std::vector<std::byte> host(1000);
  REQUIRE_THROWS_MATCHES(p.read(lris::as_host(host.data(), host.size()), f, file_bytes - 10),
                         lris::invalid_argument, what_contains("goes past the end of the file"));
  REQUIRE_THROWS_MATCHES(p.read(lris::as_host(host.data(), host.size()), f, file_bytes - 10),
                         lris::invalid_argument, what_contains("transfer_stamped.bin"));

  // Stopped after the first chunk: cancelled, and the ring is whole again afterwards.
  lris::buffer<lris::device_allocator<host_backend>> dev(file_bytes);
  lris::transfer_options stop;
  stop.ring_depth = 2;
  stop.chunk_bytes = 1 << 20;
  stop.on_progress = [](std::uint64_t, std::uint64_t) { return false; };
  auto t = p.read(dev.span(), f, 0, stop);
  REQUIRE_THROWS_AS(t.wait(), lris::cancelled);
  CHECK(t.bytes_done() < file_bytes);
  CHECK(p.read(dev.span(), f, 0).wait().bytes == file_bytes);
  CHECK(stamped_from(dev.data(), file_bytes, 0, seed));
}
