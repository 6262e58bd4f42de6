// Every transfer path on the host backend, checked byte for byte against an offset-stamped
// pattern in poisoned destinations.
#include <catch2/catch.hpp>

#include "support/what_contains.hpp"

#include <algorithm>
#include <atomic>
#include <numeric>
#include <cstdint>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include <lris/detail/stream_copy.hpp>
#include <lris/lris.hpp>

namespace {

using lris::host_backend;

// Every 8-byte word holds its own offset xor a seed: a misplaced chunk shows up at once.
void stamp(std::byte* p, std::size_t n, std::uint64_t seed) {
  for (std::size_t off = 0; off < n; off += 8) {
    const std::uint64_t v = off ^ seed;
    std::memcpy(p + off, &v, std::min<std::size_t>(8, n - off));
  }
}
bool stamped(const std::byte* p, std::size_t n, std::uint64_t seed) {
  std::vector<std::byte> expect(n);
  stamp(expect.data(), n, seed);
  return std::memcmp(p, expect.data(), n) == 0;
}

struct device_buffer {
  host_backend b;
  std::size_t n;
  std::byte* p;
  explicit device_buffer(std::size_t bytes)
      : n(bytes), p(static_cast<std::byte*>(b.allocate_device(bytes))) {
    std::memset(p, 0xA5, n);  // poison
  }
  ~device_buffer() { b.deallocate_device(p, n); }
  lris::device_span<host_backend> span() { return {p, n}; }
};

}  // namespace

TEST_CASE("copy: every host backend path delivers every byte", "[transfer]") {
  const std::size_t sizes[] = {1, 7, 4096, 65536 + 3, (std::size_t{3} << 20) + 5,
                               std::size_t{17} << 20};
  lris::transfer_options small_chunks{.chunk_bytes = 1 << 20, .workers = 4, .streams = 3,
                                      .ring_depth = 3};
  for (std::size_t n : sizes) {
    CAPTURE(n);
    std::vector<std::byte> host(n), back(n, std::byte{0x5A});
    stamp(host.data(), n, n);
    device_buffer dev(n);

    SECTION("h2d then d2h through the staged policy") {
      lris::pipeline<lris::staged, host_backend> p;
      auto up = p.copy(dev.span(), lris::as_host(host.data(), n), small_chunks);
      const auto& st = up.wait();
      CHECK(st.bytes == n);
      CHECK(st.path == lris::transfer_path::staged);
      CHECK(st.kind == lris::copy_kind::host_to_device);
      CHECK(stamped(dev.p, n, n));
      auto down = p.copy(lris::as_host(back.data(), n), lris::device_span<host_backend, const std::byte>(dev.p, n), small_chunks);
      CHECK(down.wait().path == lris::transfer_path::staged);
      CHECK(stamped(back.data(), n, n));
    }
    SECTION("direct policy") {
      lris::pipeline<lris::direct, host_backend> p;
      CHECK(p.copy(dev.span(), lris::as_host(host.data(), n)).wait().path ==
            lris::transfer_path::direct);
      CHECK(stamped(dev.p, n, n));
      p.copy(lris::as_host(back.data(), n), dev.span()).wait();
      CHECK(stamped(back.data(), n, n));
    }
    SECTION("host to host, parallel and direct") {
      lris::pipeline<lris::staged, host_backend> p;
      const auto& st = p.copy(lris::as_host(back.data(), n), lris::as_host(host.data(), n),
                              small_chunks).wait();
      const std::size_t chunks = (n + (1 << 20) - 1) / (1 << 20);
      CHECK(st.chunks == chunks);
      // A single chunk is copied in place: nothing to split.
      CHECK(st.path == (chunks > 1 ? lris::transfer_path::parallel : lris::transfer_path::direct));
      CHECK(stamped(back.data(), n, n));
    }
    SECTION("the free copy() picks a path and delivers") {
      auto st = lris::copy(dev.span(), lris::as_host(host.data(), n)).wait();
      CHECK(st.bytes == n);
      CHECK(stamped(dev.p, n, n));
      lris::copy(lris::as_host(back.data(), n), dev.span()).wait();
      CHECK(stamped(back.data(), n, n));
    }
  }
}

TEST_CASE("copy: pinned memory goes direct, pageable is staged", "[transfer]") {
  using pinned = lris::pinned_space<host_backend>;
  using dev = lris::device_space<host_backend>;
  STATIC_REQUIRE(lris::transfer_traits<dev, pinned>::needs_staging == false);
  STATIC_REQUIRE(lris::transfer_traits<dev, lris::host_space>::needs_staging);
  STATIC_REQUIRE(lris::transfer_traits<lris::host_space, dev>::needs_staging);
  STATIC_REQUIRE(lris::transfer_traits<lris::host_space, dev>::kind ==
                 lris::copy_kind::device_to_host);
  STATIC_REQUIRE(lris::transfer_traits<dev, dev>::kind == lris::copy_kind::device_to_device);
  STATIC_REQUIRE(lris::transfer_traits<lris::host_space, pinned>::kind ==
                 lris::copy_kind::host_to_host);

  lris::pipeline<lris::staged, host_backend> p;
  const std::size_t n = std::size_t{8} << 20;
  lris::buffer<lris::pinned_allocator<host_backend>> src(n);
  stamp(src.data(), n, 42);
  device_buffer d(n);
  const auto& st = p.copy(d.span(), src.span()).wait();
  CHECK(st.path == lris::transfer_path::direct);
  CHECK(stamped(d.p, n, 42));
}

TEST_CASE("auto_select follows the profile's thresholds", "[transfer]") {
  lris::transfer_profile prof;
  prof.parallel_min_bytes = 200000;
  prof.staged_min_bytes = 5000;
  prof.chunk_bytes = 1 << 16;
  lris::auto_select a(prof);
  using lris::copy_kind;
  using lris::exec::place;
  std::vector<std::byte> a_mem(1 << 20), b_mem(1 << 20);
  // The ends of a copy of `bytes` from pageable memory to pageable or device memory.
  auto ask = [&](copy_kind kind, std::size_t bytes) {
    const bool dev = kind == copy_kind::host_to_device;
    return lris::transfer_request{
        .kind = kind, .bytes = bytes, .needs_staging = dev,
        .dst = dev ? place::on_device(b_mem.data(), 0) : place::host(b_mem.data()),
        .src = place::host(a_mem.data())};
  };
  // 64 KiB chunks: both sizes would split, but only the second reaches the threshold.
  CHECK(a.plan(ask(copy_kind::host_to_host, 199999)).shape == lris::transfer_path::direct);
  CHECK(a.plan(ask(copy_kind::host_to_host, 200000)).shape == lris::transfer_path::parallel);
  CHECK(a.plan(ask(copy_kind::host_to_device, 4999)).shape == lris::transfer_path::direct);
  CHECK(a.plan(ask(copy_kind::host_to_device, 5000)).shape == lris::transfer_path::staged);
  auto pinned = ask(copy_kind::host_to_device, 1 << 20);
  pinned.needs_staging = false;
  pinned.src = place::pinned(a_mem.data());
  CHECK(a.plan(pinned).shape == lris::transfer_path::direct);
  const auto split = a.plan(ask(copy_kind::host_to_host, 1 << 20));
  CHECK(split.chunks() == 16);
  CHECK(split.chunk(0).front().bytes == (1 << 16));
}

TEST_CASE("copy: bad arguments are rejected with the sizes and addresses at fault", "[errors]") {
  std::vector<std::byte> a(100), b(200);
  SECTION("size mismatch") {
    REQUIRE_THROWS_MATCHES(lris::copy(lris::as_host(a.data(), 100), lris::as_host(b.data(), 200)),
                           lris::invalid_argument,
                           lris::test::what_contains("has 100 bytes but the source has 200"));
  }
  SECTION("null pointers") {
    REQUIRE_THROWS_MATCHES(
        lris::copy(lris::as_host(static_cast<std::byte*>(nullptr), 100), lris::as_host(a.data(), 100)),
        lris::invalid_argument, lris::test::what_contains("null pointer"));
  }
  SECTION("overlapping ranges") {
    REQUIRE_THROWS_MATCHES(lris::copy(lris::as_host(b.data() + 50, 100), lris::as_host(b.data(), 100)),
                           lris::invalid_argument, lris::test::what_contains("overlaps the source"));
    // Adjacent ranges do not overlap.
    CHECK_NOTHROW(lris::copy(lris::as_host(b.data() + 100, 100), lris::as_host(b.data(), 100)).wait());
  }
  SECTION("device that does not exist") {
    device_buffer d(100);
    REQUIRE_THROWS_MATCHES(
        lris::copy(lris::device_span<host_backend>(d.p, 100, 9), lris::as_host(a.data(), 100)),
        lris::invalid_argument, lris::test::what_contains("device 9 does not exist"));
  }
  SECTION("a moved-from handle") {
    auto t = lris::copy(lris::as_host(a.data(), 100), lris::as_host(b.data(), 100));
    auto t2 = std::move(t);
    REQUIRE_THROWS_AS(t.wait(), lris::invalid_argument);
    CHECK(t2.wait().bytes == 100);
  }
  SECTION("zero bytes is a finished transfer") {
    auto t = lris::copy(lris::as_host(a.data(), 0), lris::as_host(b.data(), 0));
    CHECK(t.poll());
    CHECK(t.wait().bytes == 0);
  }
}

TEST_CASE("cancel: a progress callback stops a staged transfer after its first chunks",
          "[transfer][cancel]") {
  const std::size_t n = std::size_t{64} << 20, chunk = 1 << 20;
  std::vector<std::byte> host(n);
  stamp(host.data(), n, 7);
  device_buffer d(n);
  lris::pipeline<lris::staged, host_backend> p;
  std::atomic<int> calls{0};
  lris::transfer_options o{.chunk_bytes = chunk, .workers = 2, .streams = 1, .ring_depth = 2};
  o.on_progress = [&](std::uint64_t done, std::uint64_t total) {
    CHECK(total == n);
    CHECK(done <= total);
    return ++calls < 3;
  };
  auto t = p.copy(d.span(), lris::as_host(host.data(), n), o);
  REQUIRE_THROWS_MATCHES(t.wait(), lris::cancelled, lris::test::what_contains("of 67108864 bytes"));
  CHECK(t.bytes_done() < n);
  CHECK(t.bytes_done() >= 3 * chunk);
  // Every chunk either arrived whole or was never touched (still poison), and at least the
  // three reported ones arrived.
  std::vector<std::byte> expect(n);
  stamp(expect.data(), n, 7);
  std::size_t whole = 0;
  for (std::size_t off = 0; off < n; off += chunk) {
    const bool arrived = std::memcmp(d.p + off, expect.data() + off, chunk) == 0;
    const bool untouched = std::all_of(d.p + off, d.p + off + chunk,
                                       [](std::byte b) { return b == std::byte{0xA5}; });
    CHECK((arrived || untouched));
    whole += arrived;
  }
  CHECK(whole * chunk == t.bytes_done());
  CHECK(whole >= 3);
  // The pipeline still works after a cancelled transfer.
  CHECK(p.copy(d.span(), lris::as_host(host.data(), n)).wait().bytes == n);
  CHECK(stamped(d.p, n, 7));
}

TEST_CASE("cancel() on the handle and poll/progress", "[transfer][cancel]") {
  const std::size_t n = std::size_t{256} << 20;
  std::vector<std::byte> src(n, std::byte{1}), dst(n);
  lris::pipeline<lris::staged, host_backend> p;
  auto t = p.copy(lris::as_host(dst.data(), n), lris::as_host(src.data(), n),
                  {.chunk_bytes = 1 << 20, .workers = 1});
  t.cancel();
  try {
    const auto& st = t.wait();
    CHECK(st.bytes == n);  // finished before the request took effect: then it is complete
  } catch (const lris::cancelled&) {
    CHECK(t.bytes_done() < n);
  }
  CHECK(t.poll());
  CHECK(t.progress() <= 1.0);
}

TEST_CASE("a progress callback that throws fails the transfer with its exception",
          "[transfer][errors]") {
  const std::size_t n = std::size_t{8} << 20;
  std::vector<std::byte> src(n), dst(n);
  lris::pipeline<lris::staged, host_backend> p;
  lris::transfer_options o{.chunk_bytes = 1 << 20};
  o.on_progress = [](std::uint64_t, std::uint64_t) -> bool { throw std::runtime_error("boom"); };
  auto t = p.copy(lris::as_host(dst.data(), n), lris::as_host(src.data(), n), o);
  REQUIRE_THROWS_WITH(t.wait(), "boom");
}

TEST_CASE("concurrent transfers share a bounded staging ring", "[transfer][concurrency]") {
  // A ring that holds two 1 MiB slots, shared by eight transfers wanting four each.
  lris::pipeline<lris::staged, host_backend> p({}, {}, {}, {.max_staging_bytes = 2 << 20});
  const std::size_t n = (std::size_t{6} << 20) + 123;
  std::vector<std::thread> threads;
  std::atomic<int> good{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      std::vector<std::byte> host(n), back(n);
      stamp(host.data(), n, static_cast<std::uint64_t>(t));
      device_buffer d(n);
      lris::transfer_options o{.chunk_bytes = 1 << 20, .workers = 4, .ring_depth = 4};
      auto up = p.copy(d.span(), lris::as_host(host.data(), n), o);
      const bool ok_up = up.wait().ring_slots <= 2;
      p.copy(lris::as_host(back.data(), n), d.span(), o).wait();
      if (ok_up && stamped(back.data(), n, static_cast<std::uint64_t>(t))) ++good;
    });
  }
  for (auto& th : threads) th.join();
  CHECK(good == 8);
}

TEST_CASE("a chunk larger than the staging bound is clamped to it", "[transfer]") {
  lris::pipeline<lris::staged, host_backend> p({}, {}, {}, {.max_staging_bytes = 1 << 20});
  const std::size_t n = std::size_t{5} << 20;
  std::vector<std::byte> host(n);
  stamp(host.data(), n, 9);
  device_buffer d(n);
  // Two workers: two chunks each would be 1.25 MiB, so the 1 MiB bound decides.
  const auto st =
      p.copy(d.span(), lris::as_host(host.data(), n), {.chunk_bytes = 8 << 20, .workers = 2})
          .wait();
  CHECK(st.chunk_bytes == (1 << 20));
  CHECK(stamped(d.p, n, 9));
}

TEST_CASE("parallel host copies give each worker a chunk, never below 1 MiB", "[transfer]") {
  lris::pipeline<lris::staged, host_backend> p;
  std::vector<std::byte> src(std::size_t{16} << 20), dst(src.size());
  stamp(src.data(), src.size(), 3);
  auto st = p.copy(lris::as_host(dst), lris::as_host(src), {.chunk_bytes = 8 << 20, .workers = 8})
                .wait();
  CHECK(st.chunk_bytes == (2u << 20));
  CHECK(st.chunks == 8);
  CHECK(st.workers == 8);
  CHECK(stamped(dst.data(), dst.size(), 3));
  st = p.copy(lris::as_host(dst.data(), 3 << 20), lris::as_host(src.data(), 3 << 20),
              {.chunk_bytes = 8 << 20, .workers = 8})
           .wait();
  CHECK(st.chunk_bytes == (1u << 20));
  CHECK(st.chunks == 3);
}

TEST_CASE("staged chunks: two per worker, not under 512 KiB, not over the plan's", "[transfer]") {
  lris::pipeline<lris::staged, host_backend> p;
  const std::size_t n = std::size_t{16} << 20;
  std::vector<std::byte> host(n);
  stamp(host.data(), n, 11);
  device_buffer d(n);
  auto chunk_for = [&](unsigned workers) {
    return p.copy(d.span(), lris::as_host(host.data(), n),
                  {.chunk_bytes = 4 << 20, .workers = workers})
        .wait()
        .chunk_bytes;
  };
  CHECK(chunk_for(1) == (4u << 20));   // two chunks of 8 MiB, capped at 4 MiB
  CHECK(chunk_for(4) == (2u << 20));   // 8 chunks
  CHECK(chunk_for(64) == (512u << 10));  // 128 chunks would be 128 KiB: floor
  CHECK(stamped(d.p, n, 11));
}

TEST_CASE("stream_copy copies every byte at any alignment", "[detail]") {
  const std::size_t n = (std::size_t{1} << 20) + 77;
  std::vector<std::byte> src(n + 64), dst(n + 64);
  stamp(src.data(), src.size(), 5);
  for (std::size_t so : {0, 1, 15, 16, 33}) {
    for (std::size_t dof : {0, 3, 16, 63}) {
      for (std::size_t len : {std::size_t{0}, std::size_t{100}, lris::detail::stream_copy_min_bytes,
                              n - 63}) {
        std::fill(dst.begin(), dst.end(), std::byte{0});
        lris::detail::stream_copy(dst.data() + dof, src.data() + so, len);
        CHECK(std::memcmp(dst.data() + dof, src.data() + so, len) == 0);
        CHECK(std::all_of(dst.begin(), dst.begin() + static_cast<std::ptrdiff_t>(dof),
                          [](std::byte b) { return b == std::byte{0}; }));
        CHECK(std::all_of(dst.begin() + static_cast<std::ptrdiff_t>(dof + len), dst.end(),
                          [](std::byte b) { return b == std::byte{0}; }));
      }
    }
  }
}

namespace {
// `count` pairs of random sizes up to `max_bytes` at scattered offsets in `src` and `dst`.
struct batch_layout {
  std::vector<std::size_t> src_off, dst_off, bytes;
  std::size_t src_total = 0, dst_total = 0;
  batch_layout(std::size_t count, std::size_t max_bytes, unsigned seed) {
    std::mt19937_64 rng(seed);
    for (std::size_t i = 0; i < count; ++i) {
      const std::size_t n = 1 + rng() % max_bytes;
      src_total += rng() % 64;
      dst_total += rng() % 64;
      src_off.push_back(src_total);
      dst_off.push_back(dst_total);
      bytes.push_back(n);
      src_total += n;
      dst_total += n;
    }
  }
  // Spans of `Span` at `base + off[i]`, bytes[i] long.
  template <class Span, class P>
  std::vector<Span> spans(P* base, const std::vector<std::size_t>& off) const {
    std::vector<Span> v;
    for (std::size_t i = 0; i < bytes.size(); ++i) v.emplace_back(base + off[i], bytes[i]);
    return v;
  }
};
}  // namespace

TEST_CASE("copy_batch: many buffers, one transfer", "[transfer][batch]") {
  const batch_layout l(500, 40000, 3);
  std::vector<std::byte> src(l.src_total);
  stamp(src.data(), src.size(), 17);
  lris::pipeline<lris::auto_select, host_backend> p;
  auto check_pairs = [&](const std::byte* dst_base) {
    std::size_t bad = 0;
    for (std::size_t i = 0; i < l.bytes.size(); ++i) {
      bad += std::memcmp(dst_base + l.dst_off[i], src.data() + l.src_off[i], l.bytes[i]) != 0;
    }
    return bad;
  };

  SECTION("host to host is one parallel operation") {
    std::vector<std::byte> dst(l.dst_total);
    const auto d = l.spans<lris::host_span<std::byte>>(dst.data(), l.dst_off);
    const auto s = l.spans<lris::host_span<const std::byte>>(src.data(), l.src_off);
    const auto st = p.copy_batch(d, s).wait();
    CHECK(st.path == lris::transfer_path::batched);
    CHECK(st.chunks == l.bytes.size());
    CHECK(st.bytes == std::accumulate(l.bytes.begin(), l.bytes.end(), std::size_t{0}));
    CHECK(check_pairs(dst.data()) == 0);
  }
  SECTION("pinned to device is one backend operation") {
    lris::buffer<lris::pinned_allocator<host_backend>> pinned(l.src_total);
    std::memcpy(pinned.data(), src.data(), l.src_total);
    device_buffer dev(l.dst_total);
    const auto d = l.spans<lris::device_span<host_backend>>(dev.p, l.dst_off);
    const auto s = l.spans<lris::pinned_span<host_backend>>(pinned.data(), l.src_off);
    auto t = p.copy_batch(d, s);
    const auto st = t.wait();
    CHECK(st.path == lris::transfer_path::batched);
    CHECK(st.backend == "host");
    CHECK(check_pairs(dev.p) == 0);
  }
  SECTION("pageable to device is packed into pinned slots, one batch per slot") {
    device_buffer dev(l.dst_total);
    const auto d = l.spans<lris::device_span<host_backend>>(dev.p, l.dst_off);
    const auto s = l.spans<lris::host_span<const std::byte>>(src.data(), l.src_off);
    const auto st = p.copy_batch(d, s).wait();
    CHECK(st.path == lris::transfer_path::packed);
    CHECK(st.chunks > 1);
    CHECK(st.chunks < l.bytes.size() / 4);  // many buffers per slot
    CHECK(st.ring_slots >= 1);
    CHECK(check_pairs(dev.p) == 0);
    CHECK(st.seconds > 0);
    CHECK(st.bytes == std::accumulate(l.bytes.begin(), l.bytes.end(), std::size_t{0}));

    // And back: device buffers gathered into slots, then unpacked into pageable memory.
    std::vector<std::byte> back(l.src_total, std::byte{0xee});
    const auto bd = l.spans<lris::host_span<std::byte>>(back.data(), l.src_off);
    const auto bs = l.spans<lris::device_span<host_backend, const std::byte>>(dev.p, l.dst_off);
    const auto st2 = p.copy_batch(bd, bs).wait();
    CHECK(st2.path == lris::transfer_path::packed);
    CHECK(st2.kind == lris::copy_kind::device_to_host);
    std::size_t bad = 0;
    for (std::size_t i = 0; i < l.bytes.size(); ++i) {
      bad += std::memcmp(back.data() + l.src_off[i], src.data() + l.src_off[i], l.bytes[i]) != 0;
    }
    CHECK(bad == 0);

    // Stopped from on_progress after the first slot: a cancelled transfer, as with copy().
    // Progress is counted when a slot is reused; two slots make that happen early.
    lris::transfer_options stop;
    stop.ring_depth = 2;
    stop.on_progress = [](std::uint64_t, std::uint64_t) { return false; };
    auto t = p.copy_batch(d, s, stop);
    REQUIRE_THROWS_AS(t.wait(), lris::cancelled);
    CHECK(t.bytes_done() > 0);
    CHECK(t.bytes_done() < st.bytes);
  }
  SECTION("buffers larger than a slot are cut into pieces") {
    std::vector<std::byte> big(9 << 20);
    stamp(big.data(), big.size(), 29);
    device_buffer dev(big.size());
    const std::size_t cut = 5 << 20;
    std::vector<lris::device_span<host_backend>> d{{dev.p, cut}, {dev.p + cut, big.size() - cut}};
    std::vector<lris::host_span<const std::byte>> s{{big.data(), cut},
                                                    {big.data() + cut, big.size() - cut}};
    const auto st = p.copy_batch(d, s, {.chunk_bytes = 1 << 20}).wait();
    CHECK(st.path == lris::transfer_path::packed);
    CHECK(st.chunks >= 9);
    CHECK(std::memcmp(dev.p, big.data(), big.size()) == 0);
  }
}

namespace {
// Plans every transfer, batch or not, as staged: a batch is then each pair staged in turn.
struct pair_by_pair {
  static constexpr std::string_view name = "pair_by_pair";
  [[nodiscard]] lris::exec::plan plan(const lris::transfer_request& r) const {
    return lris::plans::staged(r);
  }
};
}  // namespace

TEST_CASE("copy_batch: other plans go pair by pair or one DMA per pair", "[transfer][batch]") {
  const batch_layout l(100, 40000, 5);
  std::vector<std::byte> src(l.src_total);
  stamp(src.data(), src.size(), 31);
  device_buffer dev(l.dst_total);
  auto check_pairs = [&] {
    std::size_t bad = 0;
    for (std::size_t i = 0; i < l.bytes.size(); ++i) {
      bad += std::memcmp(dev.p + l.dst_off[i], src.data() + l.src_off[i], l.bytes[i]) != 0;
    }
    return bad;
  };
  SECTION("a policy that plans no batch shape: each pair staged as copy() would, in one plan") {
    lris::pipeline<pair_by_pair, host_backend> p;
    const auto d = l.spans<lris::device_span<host_backend>>(dev.p, l.dst_off);
    const auto s = l.spans<lris::host_span<const std::byte>>(src.data(), l.src_off);
    const auto st = p.copy_batch(d, s).wait();
    CHECK(st.path == lris::transfer_path::staged);
    CHECK(st.chunks == l.bytes.size());
    CHECK(check_pairs() == 0);
    CHECK(st.bytes == std::accumulate(l.bytes.begin(), l.bytes.end(), std::size_t{0}));

    // Stopped from on_progress at the first pair it hears of: a cancelled transfer, as with
    // copy(); the pairs already under way land, no others start.
    lris::transfer_options stop;
    stop.ring_depth = 2;
    stop.on_progress = [](std::uint64_t, std::uint64_t) { return false; };
    auto t = p.copy_batch(d, s, stop);
    REQUIRE_THROWS_AS(t.wait(), lris::cancelled);
    CHECK(t.bytes_done() > 0);
    CHECK(t.bytes_done() < st.bytes);
  }
  SECTION("pinned buffers above batch_max_item_bytes: one DMA per pair on one stream") {
    lris::transfer_profile prof;
    prof.batch_max_item_bytes = 1024;  // every mean size here is larger
    lris::pipeline<lris::auto_select, host_backend> p{lris::auto_select(prof)};
    lris::buffer<lris::pinned_allocator<host_backend>> pinned(l.src_total);
    std::memcpy(pinned.data(), src.data(), l.src_total);
    const auto d = l.spans<lris::device_span<host_backend>>(dev.p, l.dst_off);
    const auto s = l.spans<lris::pinned_span<host_backend>>(pinned.data(), l.src_off);
    const auto st = p.copy_batch(d, s).wait();
    CHECK(st.path == lris::transfer_path::direct);
    CHECK(st.streams == 1);
    CHECK(st.chunks == l.bytes.size());
    CHECK(check_pairs() == 0);
    prof.batch_max_item_bytes = 1 << 20;
    lris::pipeline<lris::auto_select, host_backend> q{lris::auto_select(prof)};
    CHECK(q.copy_batch(d, s).wait().path == lris::transfer_path::batched);
  }
  SECTION("a batch kernel cuts large buffers into pieces") {
    std::vector<std::byte> big(5 << 20);
    stamp(big.data(), big.size(), 37);
    lris::buffer<lris::pinned_allocator<host_backend>> pinned(big.size());
    std::memcpy(pinned.data(), big.data(), big.size());
    device_buffer out(big.size());
    lris::pipeline<lris::staged, host_backend> p;
    const std::size_t cut = (3 << 20) + 5;
    std::vector<lris::device_span<host_backend>> d{{out.p, cut}, {out.p + cut, big.size() - cut}};
    std::vector<lris::pinned_span<host_backend>> s{{pinned.data(), cut},
                                                   {pinned.data() + cut, big.size() - cut}};
    const auto st = p.copy_batch(d, s).wait();
    CHECK(st.path == lris::transfer_path::batched);
    CHECK(std::memcmp(out.p, big.data(), big.size()) == 0);
  }
}

TEST_CASE("copy_batch: bad input names the pair at fault", "[transfer][batch][errors]") {
  std::vector<std::byte> a(100), b(100);
  lris::pipeline<lris::auto_select, host_backend> p;
  std::vector<lris::host_span<std::byte>> d{{a.data(), 10}, {a.data() + 10, 20}};
  std::vector<lris::host_span<const std::byte>> s{{b.data(), 10}, {b.data() + 10, 21}};
  REQUIRE_THROWS_MATCHES(p.copy_batch(d, s),
                         lris::invalid_argument, lris::test::what_contains("pair 1"));
  s.pop_back();
  REQUIRE_THROWS_MATCHES(p.copy_batch(d, s),
                         lris::invalid_argument,
                         lris::test::what_contains("2 destinations but 1 sources"));
  s.push_back({nullptr, 20});
  REQUIRE_THROWS_MATCHES(p.copy_batch(d, s),
                         lris::invalid_argument, lris::test::what_contains("null pointer"));
}

TEST_CASE("the free copy_batch() picks the backend from the spans", "[transfer][batch]") {
  std::vector<std::byte> a(4096), b(4096);
  stamp(a.data(), a.size(), 23);
  std::vector<lris::host_span<std::byte>> d{{b.data(), 1000}, {b.data() + 1000, 3096}};
  std::vector<lris::host_span<const std::byte>> s{{a.data(), 1000}, {a.data() + 1000, 3096}};
  CHECK(lris::copy_batch(d, s).wait().path == lris::transfer_path::batched);
  CHECK(stamped(b.data(), b.size(), 23));
  d.clear();
  s.clear();
  REQUIRE_THROWS_MATCHES(lris::copy_batch(d, s), lris::invalid_argument,
                         lris::test::what_contains("an empty batch"));
}

TEST_CASE("reserve_staging pins slots up front, within the ring's bound", "[transfer]") {
  lris::pipeline<lris::staged, host_backend> p({}, {}, {}, {.max_staging_bytes = 8 << 20});
  CHECK(p.reserve_staging(1 << 20, 4) == 4);
  CHECK(p.reserve_staging(1 << 20, 100) == 8);  // the 8 MiB bound
  REQUIRE_THROWS_MATCHES(p.reserve_staging(16 << 20, 1), lris::invalid_argument,
                         lris::test::what_contains("does not fit its bound"));
  const std::size_t n = std::size_t{16} << 20;
  std::vector<std::byte> host(n);
  stamp(host.data(), n, 31);
  device_buffer d(n);
  const auto st = p.copy(d.span(), lris::as_host(host), {.chunk_bytes = 1 << 20, .workers = 4,
                                                          .ring_depth = 8})
                      .wait();
  CHECK(st.ring_slots == 8);
  CHECK(stamped(d.p, n, 31));
}
