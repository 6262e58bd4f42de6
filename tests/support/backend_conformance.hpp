// The backend conformance suite: what every model of backend_policy (and of each refinement it
// claims) must do, checked through the concept's own functions only. A test program defines
// LRIS_CONFORMANCE_BACKENDS (a comma-separated list of backend types) and includes this header:
// host_backend in every build, cuda_backend on the GPU machine, hip_backend where one runs.
#pragma once

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include <lris/concepts/backend_policy.hpp>
#include <lris/concepts/batch_backend.hpp>
#include <lris/concepts/convert_backend.hpp>
#include <lris/concepts/flag_wait_backend.hpp>
#include <lris/concepts/stream_ordered_backend.hpp>
#include <lris/element/dtype_convert.hpp>
#include <lris/error.hpp>

namespace lris::test::conformance {

// Pinned memory of `be`, freed with it.
template <class B>
struct pinned {
  B be;
  std::size_t n;
  std::byte* p;
  pinned(B b, std::size_t bytes)
      : be(std::move(b)), n(bytes), p(static_cast<std::byte*>(be.allocate_pinned(bytes))) {}
  ~pinned() { be.deallocate_pinned(p, n); }
};

// Device memory of `be`, freed with it.
template <class B>
struct device {
  B be;
  std::size_t n;
  std::byte* p;
  device(B b, std::size_t bytes)
      : be(std::move(b)), n(bytes), p(static_cast<std::byte*>(be.allocate_device(bytes))) {}
  ~device() { be.deallocate_device(p, n); }
};

inline void stamp(std::byte* p, std::size_t n, unsigned seed) {
  for (std::size_t i = 0; i < n; ++i) p[i] = static_cast<std::byte>((i * 131 + seed) & 0xff);
}
inline bool stamped(const std::byte* p, std::size_t n, unsigned seed) {
  for (std::size_t i = 0; i < n; ++i) {
    if (p[i] != static_cast<std::byte>((i * 131 + seed) & 0xff)) return false;
  }
  return true;
}

}  // namespace lris::test::conformance

TEMPLATE_TEST_CASE("backend conformance: memory and copies in every direction",
                   "[backend][conformance]", LRIS_CONFORMANCE_BACKENDS) {
  using namespace lris::test::conformance;
  STATIC_REQUIRE(lris::backend_policy<TestType>);
  TestType be(0);
  CHECK(be.device() == 0);
  CHECK(TestType::device_count() >= 1);
  const std::size_t n = (std::size_t{3} << 20) + 5;  // not a multiple of anything
  pinned<TestType> in(be, n), out(be, n);
  device<TestType> a(be, n), b(be, n);
  stamp(in.p, n, 7);
  std::memset(out.p, 0, n);
  auto s = be.make_stream();
  be.copy_async(a.p, in.p, n, lris::copy_kind::host_to_device, s);
  be.copy_async(b.p, a.p, n, lris::copy_kind::device_to_device, s);
  be.copy_async(out.p, b.p, n, lris::copy_kind::device_to_host, s);
  be.synchronize(s);
  CHECK(stamped(out.p, n, 7));
  // Zero bytes is a no-op, also with null pointers.
  be.copy_async(nullptr, nullptr, 0, lris::copy_kind::host_to_device, s);
  be.synchronize(s);
}

TEMPLATE_TEST_CASE("backend conformance: events order work across streams",
                   "[backend][conformance]", LRIS_CONFORMANCE_BACKENDS) {
  using namespace lris::test::conformance;
  TestType be(0);
  const std::size_t n = std::size_t{8} << 20;
  pinned<TestType> in(be, n), out(be, n);
  device<TestType> a(be, n);
  stamp(in.p, n, 3);
  std::memset(out.p, 0, n);
  auto s1 = be.make_stream();
  auto s2 = be.make_stream();
  auto e = be.make_event();
  be.copy_async(a.p, in.p, n, lris::copy_kind::host_to_device, s1);
  be.record(e, s1);
  be.wait(s2, e);  // s2's copy must see what s1 wrote, with no host wait in between
  be.copy_async(out.p, a.p, n, lris::copy_kind::device_to_host, s2);
  be.synchronize(s2);
  CHECK(stamped(out.p, n, 3));
  be.synchronize(e);
  CHECK(be.query(e));
}

TEMPLATE_TEST_CASE("backend conformance: timed events tell the time between them",
                   "[backend][conformance]", LRIS_CONFORMANCE_BACKENDS) {
  using namespace lris::test::conformance;
  TestType be(0);
  const std::size_t n = std::size_t{64} << 20;
  pinned<TestType> in(be, n);
  device<TestType> a(be, n);
  std::memset(in.p, 1, n);
  auto s = be.make_stream();
  auto before = be.make_timed_event();
  auto after = be.make_timed_event();
  be.record(before, s);
  be.copy_async(a.p, in.p, n, lris::copy_kind::host_to_device, s);
  be.record(after, s);
  be.synchronize(after);
  const double t = be.elapsed_seconds(before, after);
  CHECK(t > 0);  // a 64 MiB copy between them
  CHECK(t < 10);
  CHECK(be.elapsed_seconds(after, before) == Approx(-t).margin(1e-6));
}

TEMPLATE_TEST_CASE("backend conformance: registered host memory is copied from and refused "
                   "twice", "[backend][conformance]", LRIS_CONFORMANCE_BACKENDS) {
  using namespace lris::test::conformance;
  TestType be(0);
  const std::size_t n = std::size_t{1} << 20;
  std::unique_ptr<std::byte, decltype(&std::free)> mem(
      static_cast<std::byte*>(std::aligned_alloc(4096, n)), &std::free);
  REQUIRE(mem != nullptr);
  stamp(mem.get(), n, 5);
  be.register_host(mem.get(), n);
  device<TestType> a(be, n);
  pinned<TestType> out(be, n);
  auto s = be.make_stream();
  be.copy_async(a.p, mem.get(), n, lris::copy_kind::host_to_device, s);
  be.copy_async(out.p, a.p, n, lris::copy_kind::device_to_host, s);
  be.synchronize(s);
  CHECK(stamped(out.p, n, 5));
  CHECK_THROWS(be.register_host(mem.get(), n));
  be.unregister_host(mem.get());
  CHECK_THROWS_AS(be.unregister_host(mem.get()), lris::error);
}

TEMPLATE_TEST_CASE("backend conformance: refinements do what they claim",
                   "[backend][conformance]", LRIS_CONFORMANCE_BACKENDS) {
  using namespace lris::test::conformance;
  TestType be(0);
  auto s = be.make_stream();
  if constexpr (lris::batch_backend<TestType>) {
    // Items live in pinned memory: a GPU reads them over the link.
    const std::size_t n = 4096;
    pinned<TestType> in(be, 3 * n), out(be, 3 * n), items(be, 3 * sizeof(lris::copy_item));
    device<TestType> d(be, 3 * n);
    stamp(in.p, 3 * n, 9);
    std::memset(out.p, 0, 3 * n);
    auto* it = reinterpret_cast<lris::copy_item*>(items.p);
    for (std::size_t i = 0; i < 3; ++i) it[i] = {in.p + i * n, d.p + (2 - i) * n, n};  // reversed
    be.copy_batch_async(it, 3, s);
    be.copy_async(out.p, d.p, 3 * n, lris::copy_kind::device_to_host, s);
    be.synchronize(s);
    for (std::size_t i = 0; i < 3; ++i) {
      CHECK(std::memcmp(out.p + (2 - i) * n, in.p + i * n, n) == 0);
    }
  }
  if constexpr (lris::convert_backend<TestType>) {
    const std::size_t count = 1000;
    pinned<TestType> in(be, count * 4), out(be, count * 2);
    device<TestType> src(be, count * 4), dst(be, count * 2);
    auto* f = reinterpret_cast<float*>(in.p);
    for (std::size_t i = 0; i < count; ++i) f[i] = static_cast<float>(i) * 0.37f - 100.0f;
    be.copy_async(src.p, in.p, count * 4, lris::copy_kind::host_to_device, s);
    be.convert_async(dst.p, lris::dtype::BF16, src.p, lris::dtype::F32, count, s);
    be.copy_async(out.p, dst.p, count * 2, lris::copy_kind::device_to_host, s);
    be.synchronize(s);
    const auto* h = reinterpret_cast<const std::uint16_t*>(out.p);
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < count; ++i) wrong += h[i] != lris::float_to_bf16(f[i]);
    CHECK(wrong == 0);
  }
  if constexpr (lris::flag_wait_backend<TestType>) {
    // The stream's copies wait for a flag the host raises later, after writing the source.
    const std::size_t n = std::size_t{1} << 20;
    pinned<TestType> in(be, n), out(be, n), flag(be, sizeof(std::uint32_t));
    device<TestType> d(be, n);
    std::memset(in.p, 0, n);
    std::memset(out.p, 0, n);
    auto* word = reinterpret_cast<std::uint32_t*>(flag.p);
    std::atomic_ref<std::uint32_t>(*word).store(0);
    auto passed = be.make_event();
    be.wait_flag(s, word);
    be.record(passed, s);
    be.copy_async(d.p, in.p, n, lris::copy_kind::host_to_device, s);
    be.copy_async(out.p, d.p, n, lris::copy_kind::device_to_host, s);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    CHECK_FALSE(be.query(passed));  // still waiting
    stamp(in.p, n, 13);
    std::atomic_ref<std::uint32_t>(*word).store(1, std::memory_order_release);
    std::atomic_ref<std::uint32_t>(*word).notify_all();
    be.synchronize(s);
    CHECK(stamped(out.p, n, 13));
    CHECK(be.query(passed));
  }
  if constexpr (lris::stream_ordered_backend<TestType>) {
    // Allocated, used and freed in stream order; freeing queues behind the copies.
    const std::size_t n = std::size_t{16} << 20;
    pinned<TestType> in(be, n), out(be, n);
    stamp(in.p, n, 11);
    std::memset(out.p, 0, n);
    for (int round = 0; round < 4; ++round) {
      auto* d = static_cast<std::byte*>(be.allocate_device_async(n, s));
      REQUIRE(d != nullptr);
      be.copy_async(d, in.p, n, lris::copy_kind::host_to_device, s);
      be.copy_async(out.p, d, n, lris::copy_kind::device_to_host, s);
      be.deallocate_device_async(d, n, s);
    }
    be.synchronize(s);
    CHECK(stamped(out.p, n, 11));
  }
}
