// Captured passes on the host backend (its graphs keep the work their streams queue while
// captured, in order, and run it again when launched; host_backend_test): a pass through the residency manager
// captured once and replayed brings every unit's bytes before the work that reads them, leaves
// the manager as it was, mixes with passes not captured, and every misuse is a clear error.
#include <catch2/catch.hpp>

#include "support/what_contains.hpp"

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <lris/backends/host_backend.hpp>
#include <lris/cache/lru.hpp>
#include <lris/cache/residency_manager.hpp>
#include <lris/cache/static_priority.hpp>
#include <lris/lris.hpp>

namespace cache = lris::cache;
using cache::unit_id;
using lris::copy_kind;
using lris::host_backend;
using lris::test::what_contains;

namespace {

constexpr unit_id units = 10;
constexpr std::size_t unit_bytes = 8192;
constexpr std::uint64_t slot = unit_bytes + 256;

// Units of one tensor, each byte naming its unit; a pass copies every unit it acquires to
// out[u] on the pass's stream (the work that reads the unit).
struct fixture {
  host_backend be;
  std::vector<std::vector<std::byte>> data;
  std::vector<std::vector<std::byte>> out;
  std::vector<unit_id> order;

  fixture() {
    for (unit_id u = 0; u < units; ++u) {
      data.emplace_back(unit_bytes);
      for (std::size_t i = 0; i < unit_bytes; ++i) {
        data[u][i] = static_cast<std::byte>(u * 31 + i % 251);
      }
      out.emplace_back(unit_bytes);
      order.push_back(u);
    }
  }
  template <class Manager>
  void add_to(Manager& rm) const {
    for (unit_id u = 0; u < units; ++u) {
      const std::vector<cache::unit_tensor> ts = {{"w", data[u]}};
      rm.add_unit("unit" + std::to_string(u), ts);
    }
  }
  template <class Manager>
  void pass(Manager& rm, host_backend::stream& s) {
    for (const unit_id u : order) {
      auto l = rm.acquire(u, s);
      be.copy_async(out[u].data(), l.tensor(0), unit_bytes, copy_kind::device_to_host, s);
      rm.release(std::move(l), s);
    }
  }
  void clear_out() {
    for (auto& o : out) std::memset(o.data(), 0, o.size());
  }
  // Units whose output differs from their bytes.
  [[nodiscard]] unsigned wrong() const {
    unsigned n = 0;
    for (unit_id u = 0; u < units; ++u) n += std::memcmp(out[u].data(), data[u].data(), unit_bytes) != 0;
    return n;
  }
};

}  // namespace

TEST_CASE("residency: a captured pass replays with every unit's bytes before its work",
          "[cache][capture]") {
  fixture f;
  cache::residency_manager<host_backend> rm(f.be, {.budget_bytes = 6 * slot});
  f.add_to(rm);
  rm.declare_order(f.order, true, slot);
  auto s = f.be.make_stream();
  for (int p = 0; p < 2; ++p) f.pass(rm, s);  // the cycle's placement settles
  f.be.synchronize(s);
  f.clear_out();
  const auto before = rm.stats();
  auto g = rm.capture(s, [&] { f.pass(rm, s); });
  f.be.synchronize(s);
  CHECK(f.wrong() == units);  // captured, not run
  const auto after = rm.stats();
  CHECK(after.acquires == before.acquires);  // the manager as it was
  CHECK(after.miss_bytes == before.miss_bytes);
  CHECK(g.acquires() == units);
  // Units 0-3 stay; the other six stream through the two places left, each pass, taking
  // turns: every other pass finds them where the one before last left them.
  REQUIRE(g.graphs() == 2);
  CHECK(g.copy_bytes(0) == 6 * unit_bytes);
  CHECK(g.copy_bytes(1) == 6 * unit_bytes);
  for (int r = 0; r < 4; ++r) {
    rm.replay(g, s);
    f.be.synchronize(s);
    CHECK(f.wrong() == 0);
    f.clear_out();
  }
  const auto st = rm.stats() - before;
  CHECK(st.replays == 4);
  CHECK(st.replayed_bytes == 4 * 6 * unit_bytes);
  CHECK(st.miss_bytes == 0);  // each replay left the units where the next one starts
  CHECK(rm.stats().high_water_bytes <= 6 * slot);
}

TEST_CASE("residency: replays mix with passes not captured and with other orders",
          "[cache][capture]") {
  fixture f;
  cache::residency_options o{.budget_bytes = 6 * slot};
  o.broker = std::make_shared<lris::sched::bandwidth_broker>();  // replays take no tokens
  cache::residency_manager<host_backend> rm(f.be, o);
  f.add_to(rm);
  rm.declare_order(f.order, true, slot);
  auto s = f.be.make_stream();
  for (int p = 0; p < 2; ++p) f.pass(rm, s);
  auto g = rm.capture(s, [&] { f.pass(rm, s); });
  rm.replay(g, s);
  f.pass(rm, s);  // after a replay: its units are the graph's
  f.be.synchronize(s);
  CHECK(f.wrong() == 0);
  // Another order moves the units: the next replay puts them back first.
  f.order.assign({9, 7, 5, 3, 1, 8, 6, 4, 2, 0});
  rm.declare_order(f.order, false, 2 * slot);
  f.clear_out();
  f.pass(rm, s);
  f.be.synchronize(s);
  CHECK(f.wrong() == 0);
  const auto before = rm.stats();
  f.clear_out();
  rm.replay(g, s);
  f.be.synchronize(s);
  CHECK(f.wrong() == 0);
  CHECK(rm.stats().miss_bytes > before.miss_bytes);  // put back
  f.clear_out();
  rm.replay(g, s);
  f.be.synchronize(s);
  CHECK(f.wrong() == 0);
  CHECK(rm.stats().high_water_bytes <= 6 * slot);
}

TEST_CASE("residency: capture and replay errors", "[cache][capture][errors]") {
  fixture f;
  using manager = cache::residency_manager<host_backend>;
  manager rm(f.be, {.budget_bytes = 6 * slot});
  f.add_to(rm);
  auto s = f.be.make_stream();
  const auto settled = [&] {
    rm.declare_order(f.order, true, slot);
    f.pass(rm, s);
    f.pass(rm, s);
  };
  // A pass that works after the error: nothing was left behind.
  const auto still_works = [&] {
    f.clear_out();
    f.pass(rm, s);
    f.be.synchronize(s);
    CHECK(f.wrong() == 0);
  };
  SECTION("a leased unit") {
    settled();
    auto l = rm.acquire(3, s);
    REQUIRE_THROWS_MATCHES(rm.capture(s, [&] { f.pass(rm, s); }), lris::invalid_argument,
                           what_contains("capture: unit \"unit3\" is leased (1 lease)"));
    auto g = [&] {
      rm.release(std::move(l), s);
      return rm.capture(s, [&] { f.pass(rm, s); });
    }();
    auto l2 = rm.acquire(3, s);
    REQUIRE_THROWS_MATCHES(rm.replay(g, s), lris::invalid_argument,
                           what_contains("replay: unit \"unit3\" is leased"));
    rm.release(std::move(l2), s);
    still_works();
  }
  SECTION("a pass that throws") {
    settled();
    const auto before = rm.stats();
    REQUIRE_THROWS_MATCHES(rm.capture(s, [&] {
                             f.pass(rm, s);
                             throw std::runtime_error("the model's forward failed");
                           }),
                           std::runtime_error, what_contains("the model's forward failed"));
    CHECK(rm.stats().acquires == before.acquires);
    still_works();
    auto g = rm.capture(s, [&] { f.pass(rm, s); });  // captures again
    rm.replay(g, s);
    f.be.synchronize(s);
    CHECK(f.wrong() == 0);
  }
  SECTION("units that do not come back") {
    // Unit 0 then units 1-9 once each, never repeated: unit 0 never comes back.
    auto& unit0 = f.order;
    unit0 = {0};
    f.pass(rm, s);
    std::vector<unit_id> rest{1, 2, 3, 4, 5, 6, 7, 8, 9};
    std::size_t next = 0;
    REQUIRE_THROWS_MATCHES(rm.capture(s, [&] {
                             f.order = {rest[next++ % rest.size()]};
                             f.pass(rm, s);
                           }, 3),
                           lris::invalid_argument,
                           what_contains("capture: after 3 passes the units are not back where a "
                                         "captured pass found them (unit \""));
    f.order = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    still_works();
  }
  SECTION("another manager's pass") {
    settled();
    manager other(f.be, {.budget_bytes = 6 * slot});
    f.add_to(other);
    other.declare_order(f.order, true, slot);
    f.pass(other, s);
    f.pass(other, s);
    auto g = other.capture(s, [&] { f.pass(other, s); });
    REQUIRE_THROWS_MATCHES(rm.replay(g, s), lris::invalid_argument,
                           what_contains("replay: the pass was captured by another manager"));
    f.be.synchronize(s);
  }
  SECTION("asleep") {
    settled();
    auto g = rm.capture(s, [&] { f.pass(rm, s); });
    f.be.synchronize(s);
    rm.sleep();
    REQUIRE_THROWS_MATCHES(rm.capture(s, [&] { f.pass(rm, s); }), lris::invalid_argument,
                           what_contains("capture: the manager is asleep"));
    REQUIRE_THROWS_MATCHES(rm.replay(g, s), lris::invalid_argument,
                           what_contains("replay: the manager is asleep"));
    rm.wake();
    f.clear_out();
    // wake() put the units back where they were in the budget; the graphs' addresses hold only
    // where the budget's memory came back at the same address.
    bool replayed = true;
    try {
      rm.replay(g, s);
    } catch (const lris::invalid_argument& e) {
      CHECK_THAT(e.what(), Catch::Contains("captured before sleep(), and wake() took the "
                                           "budget's memory back at another address"));
      replayed = false;
    }
    f.be.synchronize(s);
    if (replayed) CHECK(f.wrong() == 0);
    g = rm.capture(s, [&] { f.pass(rm, s); });
    f.clear_out();
    rm.replay(g, s);
    f.be.synchronize(s);
    CHECK(f.wrong() == 0);
  }
  SECTION("units kept in files") {
    const std::filesystem::path file = std::filesystem::current_path() / "capture_unit.bin";
    std::ofstream(file, std::ios::binary).write(reinterpret_cast<const char*>(f.data[0].data()), unit_bytes);
    const std::vector<cache::file_tensor> ft = {{"w", file, 0, unit_bytes}};
    const unit_id kept = rm.add_file_unit("kept", ft);
    settled();
    REQUIRE_THROWS_MATCHES(rm.capture(s, [&] { rm.release(rm.acquire(kept, s), s); }),
                           lris::invalid_argument,
                           what_contains("acquire of unit \"kept\" in a captured pass: it is kept "
                                         "in files"));
    std::vector<unit_id> with_file = f.order;
    with_file.push_back(kept);
    rm.declare_order(with_file, true, slot);
    REQUIRE_THROWS_MATCHES(rm.capture(s, [&] { f.pass(rm, s); }), lris::invalid_argument,
                           what_contains("unit \"kept\" of the declared order is kept in files"));
    still_works();
    std::filesystem::remove(file);
  }
}
