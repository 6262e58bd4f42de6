// io_engine: every byte of every geometry, on io_uring and on the pread fallback, direct and
// buffered; the page-cache choice; tmpfs; writes; the fallback when the kernel refuses.
#include <catch2/catch.hpp>

#include "support/what_contains.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/utsname.h>

#include <cstdio>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <vector>

#include <lris/error.hpp>
#include <lris/io/engine.hpp>

#include "pattern.hpp"

using lris::io::direct_mode;
using lris::io::io_backend;
using lris::io::io_engine;
using lris::io::io_options;
using lris::test::stamped_from;
using lris::test::what_contains;

namespace {

constexpr std::uint64_t seed = 77;
constexpr std::uint64_t file_bytes = (3 << 20) + 777;

std::filesystem::path stamped_file() {
  static const auto path = lris::test::stamped_file("engine_stamped.bin", file_bytes, seed);
  return path;
}

}  // namespace

TEST_CASE("io_engine reads every byte of every geometry", "[io]") {
  const lris::io::file f(stamped_file());
  REQUIRE(f.size() == file_bytes);
  // Alignments as statx reports them (or 4096): powers of two, at least 512 for offsets.
  const auto power_of_two = [](std::size_t n) { return n > 0 && (n & (n - 1)) == 0; };
  CHECK(power_of_two(f.direct_alignment()));
  CHECK(f.direct_alignment() >= 512);
  CHECK(power_of_two(f.direct_memory_alignment()));
  struct range {
    const char* what;
    std::uint64_t offset;
    std::size_t len;
  };
  const range ranges[] = {
      {"aligned offset and size", 4096, 1 << 20},
      {"unaligned offset", 4096 + 1, 1 << 20},
      {"unaligned size", 8192, (1 << 20) + 5},
      {"both unaligned", 12345, (1 << 20) + 333},
      {"sub-page", 100, 1000},
      {"straddling two pages", 4000, 200},
      {"the whole file", 0, file_bytes},
      {"the last bytes", file_bytes - 10, 10},
      {"empty", 5000, 0},
  };
  for (const io_backend backend : {io_backend::automatic, io_backend::pread}) {
    for (const direct_mode mode : {direct_mode::always, direct_mode::never, direct_mode::automatic}) {
      io_options o;
      o.backend = backend;
      o.direct = mode;
      o.block_bytes = 256 << 10;  // several operations per read
      io_engine engine(o);
      for (const range& r : ranges) {
        for (const std::size_t shift : {std::size_t{0}, std::size_t{4}, std::size_t{123}}) {
          CAPTURE(engine.backend(), static_cast<int>(mode), r.what, shift);
          lris::test::aligned_buffer buf(r.len, shift);
          std::memset(buf.p, 0xEE, r.len);
          const auto st = engine.read(f, r.offset, {buf.p, r.len});
          CHECK(st.bytes == r.len);
          CHECK(stamped_from(buf.p, r.len, r.offset, seed));
          CHECK(st.direct_bytes + st.buffered_bytes == r.len);
          // O_DIRECT needs file offsets aligned to the device's blocks and the memory there
          // aligned as the device asks (statx; often 4 bytes on NVMe, else a block); other
          // memory is served through aligned bounce buffers.
          const std::size_t a = f.direct_alignment(), m = f.direct_memory_alignment();
          const bool fits = (shift + (a - r.offset % a) % a) % m == 0;
          if (mode == direct_mode::never) CHECK(st.direct_bytes == 0);
          if (mode == direct_mode::always && f.direct() && r.len >= 3 * 4096) {
            CHECK(st.direct_bytes > 0);
            CHECK(st.mode.find("direct") == 0);
            CHECK((st.mode_reason.find("bounce buffers") != std::string::npos) == !fits);
          }
          CHECK_FALSE(st.mode_reason.empty());
        }
      }
    }
  }
}

TEST_CASE("io_engine reads resident data buffered and cold data direct", "[io]") {
  const lris::io::file f(stamped_file());
  io_engine engine;
  std::vector<std::byte> warm(file_bytes);
  // Read buffered once: the file is now in the page cache.
  io_options buffered;
  buffered.direct = direct_mode::never;
  io_engine(buffered).read(f, 0, warm);
  REQUIRE(io_engine::resident_fraction(f, 0, file_bytes) > 0.9);
  lris::test::aligned_buffer buf(file_bytes, 0);
  const auto st = engine.read(f, 0, {buf.p, file_bytes});
  CHECK(st.resident_fraction > 0.9);
  CHECK(st.mode == "buffered");
  CHECK_THAT(st.mode_reason, Catch::Contains("resident"));
  CHECK(stamped_from(buf.p, file_bytes, 0, seed));
  // Dropped from the cache (POSIX_FADV_DONTNEED on clean pages), it reads direct.
  REQUIRE(::posix_fadvise(f.fd(), 0, 0, POSIX_FADV_DONTNEED) == 0);
  if (f.direct() && io_engine::resident_fraction(f, 0, file_bytes) < 0.5) {
    const auto cold = engine.read(f, 0, {buf.p, file_bytes});
    CHECK(cold.mode.find("direct") == 0);
    CHECK_THAT(cold.mode_reason, Catch::Contains("cold"));
    CHECK(stamped_from(buf.p, file_bytes, 0, seed));
  }
}

TEST_CASE("io_engine registers its files with io_uring where the kernel has sparse tables",
          "[io]") {
  REQUIRE(lris::test::kernel_at_least(0, 0));  // the kernel's version can be read
  io_engine engine;
  const lris::io::file f(stamped_file());
  std::vector<std::byte> buf(100000);
  const auto st = engine.read(f, 0, buf);
  CHECK(stamped_from(buf.data(), buf.size(), 0, seed));
  if (engine.backend() == "io_uring" && lris::test::kernel_at_least(5, 19)) {
    CHECK(st.registered_files);
  }
  io_options pread_options;
  pread_options.backend = io_backend::pread;
  CHECK_FALSE(io_engine(pread_options).read(f, 0, buf).registered_files);
}

TEST_CASE("io_engine reads through registered memory, and forgets it when told", "[io]") {
  io_engine engine;
  const lris::io::file f(stamped_file());
  const std::size_t len = 2 << 20;
  const bool expected = lris::test::fixed_buffers_expected(engine, len);
  // Memory mapped by hand, so that it can be unmapped and mapped again at the same address
  // with other pages: the case where a stale registration would read into the old pages.
  void* at = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(at != MAP_FAILED);
  auto* mem = static_cast<std::byte*>(at);
  const std::uint64_t id = engine.register_memory({mem, len});
  CHECK(id != 0);
  for (const auto mode : {direct_mode::always, direct_mode::never}) {
    CAPTURE(static_cast<int>(mode));
    std::memset(mem, 0xEE, len);
    // Offset 777: a buffered head and tail around the direct middle, all in registered memory.
    const auto st = engine.read(f, 777, {mem + 777, len - 777 - 5}, {}, {.direct = mode});
    CHECK(stamped_from(mem + 777, len - 777 - 5, 777, seed));
    if (expected) CHECK(st.fixed_buffer_ops == st.operations);
  }
  // Memory outside every registration goes as plain operations.
  std::vector<std::byte> other(100000);
  CHECK(engine.read(f, 0, other).fixed_buffer_ops == 0);
  CHECK(stamped_from(other.data(), other.size(), 0, seed));

  // Unregistered, unmapped, and mapped again at the same address (new pages): reads land in
  // the new pages, registered again or not.
  engine.unregister_memory(id);
  engine.unregister_memory(id);  // a second time: nothing happens
  REQUIRE(::munmap(mem, len) == 0);
  void* again = ::mmap(mem, len, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  REQUIRE(again == mem);
  std::memset(mem, 0xEE, len);
  auto st = engine.read(f, 4096, {mem, len}, {}, {.direct = direct_mode::always});
  CHECK(st.fixed_buffer_ops == 0);
  CHECK(stamped_from(mem, len, 4096, seed));
  const std::uint64_t id2 = engine.register_memory({mem, len});
  CHECK(id2 != id);
  std::memset(mem, 0xEE, len);
  st = engine.read(f, 8192, {mem, len}, {}, {.direct = direct_mode::always});
  CHECK(stamped_from(mem, len, 8192, seed));
  if (expected) CHECK(st.fixed_buffer_ops == st.operations);
  // Writes from registered memory go fixed too.
  const auto out_path = lris::test::disk_dir() / "engine_fixed_written.bin";
  {
    lris::io::file out(out_path, lris::io::open_mode::create);
    const auto w = engine.write(out, 0, {mem, len});
    if (expected) CHECK(w.fixed_buffer_ops == w.operations);
  }
  std::vector<std::byte> back(len);
  io_engine().read(lris::io::file(out_path), 0, back);
  CHECK(stamped_from(back.data(), len, 8192, seed));
  engine.unregister_memory(id2);
  ::munmap(mem, len);
  std::filesystem::remove(out_path);

  CHECK_THROWS_MATCHES(engine.register_memory({}), lris::invalid_argument,
                       what_contains("empty"));
}

TEST_CASE("io_engine holds as many registrations as a staging ring has slots", "[io]") {
  io_engine engine;
  const lris::io::file f(stamped_file());
  constexpr std::size_t n = 300, each = 8192;
  lris::test::aligned_buffer mem(n * each);
  std::vector<std::uint64_t> ids;
  for (std::size_t i = 0; i < n; ++i) ids.push_back(engine.register_memory({mem.p + i * each, each}));
  const bool expected = lris::test::fixed_buffers_expected(engine, n * each);
  for (std::size_t i = 0; i < n; i += 37) {
    CAPTURE(i);
    const auto st = engine.read(f, i * each, {mem.p + i * each, each}, {}, {.direct = direct_mode::always});
    CHECK(stamped_from(mem.p + i * each, each, i * each, seed));
    if (expected) CHECK(st.fixed_buffer_ops == st.operations);
  }
  // A read across two registrations is no single fixed buffer: it goes as a plain operation.
  const auto across = engine.read(f, 4096, {mem.p + each - 4096, 8192}, {}, {.direct = direct_mode::always});
  CHECK(across.fixed_buffer_ops == 0);
  CHECK(stamped_from(mem.p + each - 4096, 8192, 4096, seed));
  for (auto id : ids) engine.unregister_memory(id);
}

TEST_CASE("io_engine writes, and reads back what it wrote", "[io]") {
  const auto path = lris::test::disk_dir() / "engine_written.bin";
  const std::size_t n = (5 << 20) + 3;
  lris::test::aligned_buffer src(n, 1000);  // aligned like the file offset: O_DIRECT middle
  for (std::size_t i = 0; i < n; ++i) src.p[i] = lris::test::stamp_byte(i + 1000, seed);
  io_engine engine;
  {
    lris::io::file out(path, lris::io::open_mode::write);
    const auto st = engine.write(out, 1000, {src.p, n});
    CHECK(st.bytes == n);
    if (out.direct()) CHECK(st.direct_bytes > 0);
    out.sync();
  }
  const lris::io::file in(path);
  CHECK(in.size() == 1000 + n);
  std::vector<std::byte> back(n);
  engine.read(in, 1000, back);
  CHECK(stamped_from(back.data(), n, 1000, seed));
  // open_mode::create truncates, and the file can be read back through the same object.
  {
    lris::io::file again(path, lris::io::open_mode::create);
    CHECK(again.size() == 0);
    engine.write(again, 0, {src.p, 8192});
    std::vector<std::byte> first(8192);
    engine.read(again, 0, first);
    CHECK(stamped_from(first.data(), first.size(), 1000, seed));
  }
}

TEST_CASE("io_engine on tmpfs: O_DIRECT refused, buffered instead, and said why", "[io]") {
  if (!std::filesystem::is_directory("/dev/shm")) {
    WARN("no /dev/shm: the tmpfs case is not checked");
    return;
  }
  const auto path = std::filesystem::path("/dev/shm") / "lris_io_tmpfs_test.bin";
  lris::test::write_stamped(path, 100000, seed);
  const lris::io::file f(path);
  std::vector<std::byte> buf(100000);
  io_options o;
  o.direct = direct_mode::always;
  const auto st = io_engine(o).read(f, 0, buf);
  if (!f.direct()) {
    CHECK(st.mode == "buffered");
    CHECK_THAT(st.mode_reason, Catch::Contains("O_DIRECT refused"));
  }
  CHECK(stamped_from(buf.data(), buf.size(), 0, seed));
  std::filesystem::remove(path);
}

TEST_CASE("io_engine: io_uring refused by the kernel", "[io][errors]") {
  // The kernel refuses rings of more than 32768 entries (EINVAL): a real refusal.
  io_options o;
  o.queue_depth = 1u << 20;
  o.backend = io_backend::io_uring;
  REQUIRE_THROWS_MATCHES(io_engine(o), lris::io_error,
                         what_contains("io_backend::io_uring was asked for, but io_uring refused"));
  o.backend = io_backend::automatic;
  io_engine fallback(o);
  CHECK(fallback.backend() == "pread");
  CHECK_THAT(fallback.fallback_reason(), Catch::Contains("io_uring refused"));
  const lris::io::file f(stamped_file());
  std::vector<std::byte> buf(70000);
  const auto st = fallback.read(f, 5, buf);
  CHECK(st.fallback_reason == fallback.fallback_reason());
  CHECK(stamped_from(buf.data(), buf.size(), 5, seed));
}

TEST_CASE("io_engine: bad input names the file, offset and size", "[io][errors]") {
  const lris::io::file f(stamped_file());
  io_engine engine;
  std::vector<std::byte> buf(100);
  REQUIRE_THROWS_MATCHES(engine.read(f, file_bytes - 50, buf), lris::invalid_argument,
                         what_contains("goes past the end of the file"));
  REQUIRE_THROWS_MATCHES(engine.read(f, file_bytes - 50, buf), lris::invalid_argument,
                         what_contains("engine_stamped.bin"));
  REQUIRE_THROWS_MATCHES(engine.read(f, 0, {static_cast<std::byte*>(nullptr), 10}),
                         lris::invalid_argument, what_contains("null buffer"));
  REQUIRE_THROWS_MATCHES(lris::io::file("/nonexistent/lris/file.bin"), lris::io_error,
                         what_contains("cannot open /nonexistent/lris/file.bin"));
}

TEST_CASE("one rule decides cold or resident, and says why", "[io]") {
  const auto cold = lris::io::io_engine::choose_by_residency(0.2, "the range");
  CHECK(cold.cold);
  CHECK(cold.reason == "cold: 20% of the range in the page cache");
  const auto warm = lris::io::io_engine::choose_by_residency(0.5, "the files");
  CHECK_FALSE(warm.cold);
  CHECK(warm.reason == "resident: 50% of the files in the page cache");
  CHECK(lris::io::io_engine::choose_by_residency(-1, "the range").cold);  // unknown: read cold
}
