// far_memory: the bytes are the region's; the latency is added to each read, the cap holds over
// several readers, faults are retried with backoff and counted, and a read that faults on
// every retry fails naming its offset.
#include <catch2/catch.hpp>

#include "support/random_bytes.hpp"
#include "support/what_contains.hpp"

#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include <lris/error.hpp>
#include <lris/pool/far_memory.hpp>

using lris::pool::far_memory;
using lris::pool::far_memory_options;
using lris::test::what_contains;
using namespace std::chrono_literals;

namespace {
double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}
}  // namespace

TEST_CASE("far memory: the latency is added to every read", "[pool]") {
  const auto data = lris::test::random_bytes(1 << 16, 1);
  far_memory far(data, {.latency = 2ms});
  std::vector<std::byte> out(4096);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 10; ++i) far.read(4096 * i, out);
  CHECK(seconds_since(start) >= 0.020);
  CHECK(std::memcmp(out.data(), data.data() + 4096 * 9, 4096) == 0);
  const auto s = far.stats();
  CHECK(s.reads == 10);
  CHECK(s.bytes == 40960);
  CHECK(s.waited_seconds >= 0.020);
}

TEST_CASE("far memory: the cap holds over several readers", "[pool]") {
  const auto data = lris::test::random_bytes(8 << 20, 2);
  far_memory far(data, {.gbps = 0.2});  // 200 MB/s: 8 MiB take 42 ms
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> readers;
  for (int r = 0; r < 4; ++r) {
    readers.emplace_back([&, r] {
      std::vector<std::byte> out(1 << 20);
      for (int i = 0; i < 2; ++i) {
        const std::uint64_t at = (std::uint64_t(r) * 2 + i) << 20;
        far.read(at, out);
        REQUIRE(std::memcmp(out.data(), data.data() + at, out.size()) == 0);
      }
    });
  }
  for (auto& t : readers) t.join();
  const double took = seconds_since(start);
  CHECK(took >= 8.0 * (1 << 20) / 0.2e9 * 0.99);
  CHECK(far.stats().bytes == 8u << 20);
}

TEST_CASE("far memory: transient faults are retried and counted", "[pool]") {
  const auto data = lris::test::random_bytes(1 << 20, 3);
  far_memory far(data, {.fault_rate = 0.3, .max_retries = 30, .backoff = 1us, .seed = 7});
  std::vector<std::byte> out(512);
  for (int i = 0; i < 400; ++i) {
    far.read(512 * i, out);
    REQUIRE(std::memcmp(out.data(), data.data() + 512 * i, 512) == 0);
  }
  const auto s = far.stats();
  CHECK(s.reads == 400);
  CHECK(s.failed == 0);
  CHECK(s.faults > 100);  // about 0.3 / 0.7 of the reads' attempts
  CHECK(s.faults < 260);
}

TEST_CASE("far memory: errors name the range and the retries", "[pool]") {
  const auto data = lris::test::random_bytes(4096, 4);
  CHECK_THROWS_MATCHES(far_memory(data, {.fault_rate = 1.0}), lris::invalid_argument,
                       what_contains("fault rate of 1"));
  CHECK_THROWS_MATCHES(far_memory(data, {.gbps = -1}), lris::invalid_argument,
                       what_contains("cap of -1 GB/s"));
  far_memory far(data, {.fault_rate = 0.999999, .max_retries = 3, .backoff = 1us});
  std::vector<std::byte> out(100);
  CHECK_THROWS_MATCHES(far.read(10, out), lris::io_error,
                       what_contains("read of 100 bytes at offset 10 faulted 4 times"));
  CHECK(far.stats().failed == 1);
  CHECK(far.stats().faults == 4);
  far_memory plain(data);
  CHECK_THROWS_MATCHES(plain.read(4000, out), lris::invalid_argument,
                       what_contains("read of 100 bytes at offset 4000 of a region of 4096"));
}
