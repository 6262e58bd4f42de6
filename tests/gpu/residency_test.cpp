// residency_manager on a GPU (one source, both runtimes): random acquire/release on two streams
// with every acquired unit's bytes read back from the device, held leases never overwritten,
// the device's free memory unchanged by acquires (the budget is taken once) and given back by
// sleep(), a prefetched cycle under the link's tokens, a pass captured as graphs and replayed.
#include <catch2/catch.hpp>

#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <lris/lris.hpp>
#if defined(LRIS_TEST_HIP)
#include <lris/hip.hpp>
using backend = lris::hip_backend;
namespace runtime = lris::hip;
#else
#include <lris/cuda.hpp>
using backend = lris::cuda_backend;
namespace runtime = lris::cuda;
#endif

namespace cache = lris::cache;
using cache::unit_id;

namespace {

// The device's free memory as the runtime reports it (cudaMemGetInfo, hipMemGetInfo).
std::uint64_t free_device_bytes() { return runtime::list_devices().at(0).free_memory_bytes; }

struct units_of_bytes {
  std::vector<std::vector<std::byte>> data;
  units_of_bytes(unit_id n, std::size_t bytes, unsigned seed) {
    std::mt19937 rng(seed);
    for (unit_id u = 0; u < n; ++u) {
      auto& d = data.emplace_back(bytes);
      for (auto& b : d) b = static_cast<std::byte>(rng());
    }
  }
  template <class M>
  void add_to(M& m) const {
    for (std::size_t u = 0; u < data.size(); ++u) {
      const std::vector<cache::unit_tensor> ts = {{"w", data[u]}};
      m.add_unit(fmt::format("u{}", u), ts);
    }
  }
};

// A manager of units `m` under `budget` with the context's broker, static priority, and the
// units declared a cycle in order with one unit of lookahead.
struct cycle {
  cache::residency_manager<backend> rm;
  std::vector<unit_id> order;
  cycle(backend& be, const units_of_bytes& m, std::uint64_t budget)
      : rm(be, {.budget_bytes = budget, .broker = lris::default_context()->broker()},
           cache::static_priority{}) {
    m.add_to(rm);
    for (unit_id u = 0; u < m.data.size(); ++u) order.push_back(u);
    rm.declare_order(order, true, m.data[0].size());
  }
};

// The lease's tensor read back into pinned memory on `s`, after the work before it.
template <class Lease>
bool on_device_as(backend& be, typename backend::stream& s, const Lease& l,
                  const std::vector<std::byte>& want, std::byte* pinned) {
  be.copy_async(pinned, l.tensor(0), want.size(), lris::copy_kind::device_to_host, s);
  be.synchronize(s);
  return std::memcmp(pinned, want.data(), want.size()) == 0;
}

}  // namespace

TEST_CASE("gpu residency: bytes intact, leases kept, no device allocation after the start",
          "[gpu][residency]") {
  backend be(0);
  const std::size_t unit_bytes = std::size_t{4} << 20;
  auto* pinned = static_cast<std::byte*>(be.allocate_pinned(unit_bytes));
  auto s1 = be.make_stream();  // made before the memory is measured: streams take some
  auto s2 = be.make_stream();
  for (unsigned seed = 1; seed <= 6; ++seed) {
    CAPTURE(seed);
    std::mt19937 rng(seed);
    const unit_id units = 6 + seed % 3;
    const units_of_bytes m(units, unit_bytes, seed);
    const std::uint64_t budget = 3 * unit_bytes;
    const std::uint64_t before = free_device_bytes();
    cache::residency_manager<backend, cache::lru> rm(be, {.budget_bytes = budget});
    m.add_to(rm);
    const std::uint64_t after_start = free_device_bytes();
    CHECK(before - after_start >= budget);
    std::vector<cache::residency_manager<backend, cache::lru>::lease> held;
    for (int step = 0; step < 60; ++step) {
      const unit_id u = static_cast<unit_id>(rng() % units);
      auto& s = step % 2 ? s1 : s2;
      auto l = rm.acquire(u, s);
      CHECK(on_device_as(be, s, l, m.data[u], pinned));
      for (const auto& h : held) CHECK(on_device_as(be, s, h, m.data[h.unit()], pinned));
      if (held.empty() && rng() % 3 == 0) {
        held.push_back(std::move(l));
      } else {
        if (!held.empty() && rng() % 2 == 0) {
          rm.release(std::move(held.back()), s);
          held.pop_back();
        }
        rm.release(std::move(l), s);
      }
    }
    for (auto& h : held) rm.release(std::move(h), s1);
    be.synchronize(s1);
    be.synchronize(s2);
    CHECK(free_device_bytes() == after_start);  // nothing allocated on the device since
    CHECK(rm.stats().high_water_bytes <= budget);
    rm.sleep();
    CHECK(free_device_bytes() >= after_start + budget);
    rm.wake();
    CHECK(free_device_bytes() == after_start);
  }
  be.deallocate_pinned(pinned, unit_bytes);
}

TEST_CASE("gpu residency: a prefetched cycle under the link's tokens", "[gpu][residency]") {
  backend be(0);
  const std::size_t unit_bytes = std::size_t{2} << 20;
  const unit_id units = 12;
  const units_of_bytes m(units, unit_bytes, 42);
  cycle c(be, m, 6 * unit_bytes);
  auto& rm = c.rm;
  const auto& order = c.order;
  auto s = be.make_stream();
  auto* pinned = static_cast<std::byte*>(be.allocate_pinned(unit_bytes));
  for (int pass = 0; pass < 4; ++pass) {
    for (const unit_id u : order) {
      auto l = rm.acquire(u, s);
      CHECK(on_device_as(be, s, l, m.data[u], pinned));
      rm.release(std::move(l), s);
    }
  }
  be.synchronize(s);
  const auto st = rm.stats();
  // Units 0-3 kept from the second pass on: (6 - 2) / 12 of each pass.
  CHECK(st.hit_bytes >= 3 * 4 * unit_bytes);
  CHECK(st.high_water_bytes <= 6 * unit_bytes);
  be.deallocate_pinned(pinned, unit_bytes);
}

TEST_CASE("gpu residency: a captured pass replays as graphs, every unit's bytes before its use",
          "[gpu][residency][capture]") {
  backend be(0);
  const std::size_t unit_bytes = std::size_t{4} << 20;
  const unit_id units = 10;
  const units_of_bytes m(units, unit_bytes, 7);
  cycle c(be, m, 6 * unit_bytes);  // with the broker: a captured pass takes no tokens
  auto& rm = c.rm;
  const auto& order = c.order;
  auto s = be.make_stream();
  // The pass's work: each unit copied to its own place in `out`, right after its acquire.
  auto* out = static_cast<std::byte*>(be.allocate_device(units * unit_bytes));
  auto* zeros = static_cast<std::byte*>(be.allocate_pinned(units * unit_bytes));
  auto* back = static_cast<std::byte*>(be.allocate_pinned(units * unit_bytes));
  std::memset(zeros, 0, units * unit_bytes);
  const auto pass = [&] {
    for (const unit_id u : order) {
      auto l = rm.acquire(u, s);
      be.copy_async(out + u * unit_bytes, l.tensor(0), unit_bytes,
                    lris::copy_kind::device_to_device, s);
      rm.release(std::move(l), s);
    }
  };
  const auto wrong = [&] {
    be.copy_async(back, out, units * unit_bytes, lris::copy_kind::device_to_host, s);
    be.copy_async(out, zeros, units * unit_bytes, lris::copy_kind::host_to_device, s);
    be.synchronize(s);
    unsigned n = 0;
    for (unit_id u = 0; u < units; ++u) {
      n += std::memcmp(back + u * unit_bytes, m.data[u].data(), unit_bytes) != 0;
    }
    return n;
  };
  for (int p = 0; p < 2; ++p) pass();
  CHECK(wrong() == 0);
  auto g = rm.capture(s, pass);
  CHECK(wrong() == units);  // captured, not run
  REQUIRE(g.graphs() >= 1);
  const std::uint64_t free_before = free_device_bytes();
  for (int r = 0; r < 6; ++r) {
    CAPTURE(r);
    rm.replay(g, s);
    CHECK(wrong() == 0);
  }
  // A pass not captured between replays, then replays again.
  pass();
  CHECK(wrong() == 0);
  rm.replay(g, s);
  CHECK(wrong() == 0);
  be.synchronize(s);
  CHECK(free_device_bytes() == free_before);  // replays allocate nothing
  const auto st = rm.stats();
  CHECK(st.replays == 7);
  CHECK(st.high_water_bytes <= 6 * unit_bytes);
  be.deallocate_pinned(back, units * unit_bytes);
  be.deallocate_pinned(zeros, units * unit_bytes);
  be.deallocate_device(out, units * unit_bytes);
}
