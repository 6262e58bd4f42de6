// residency_manager on the host backend (its "device" memory is host memory, its streams
// ordered queues on threads): every acquired unit holds its bytes, a leased unit is never
// overwritten, the budget is never passed (random acquire/release sequences over many seeds),
// prefetch along a declared order, the policies' hits against the Belady oracle, and every
// error.
#include <catch2/catch.hpp>

#include "support/safetensors_file.hpp"
#include "support/what_contains.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <lris/backends/host_backend.hpp>
#include <lris/cache/checkpoint_units.hpp>
#include <lris/cache/lru.hpp>
#include <lris/cache/next_use.hpp>
#include <lris/cache/residency_manager.hpp>
#include <lris/cache/static_priority.hpp>
#include <lris/lris.hpp>

namespace cache = lris::cache;
using cache::unit_id;
using lris::host_backend;
using lris::test::what_contains;

namespace {

// Units of one or two tensors with bytes that say which unit and tensor they belong to.
struct model {
  std::vector<std::vector<std::vector<std::byte>>> data;  // unit -> tensor -> bytes

  model(unit_id units, std::size_t bytes, unsigned seed) {
    std::mt19937 rng(seed);
    for (unit_id u = 0; u < units; ++u) {
      auto& tensors = data.emplace_back();
      const std::size_t first = bytes / 2 + rng() % (bytes / 2);
      for (const std::size_t n : {first, bytes - first}) {
        auto& t = tensors.emplace_back(n);
        for (auto& b : t) b = static_cast<std::byte>(rng());
      }
    }
  }
  template <class Manager>
  void add_to(Manager& m) const {
    for (std::size_t u = 0; u < data.size(); ++u) {
      std::vector<cache::unit_tensor> ts;
      for (std::size_t i = 0; i < data[u].size(); ++i) {
        ts.push_back({"t" + std::to_string(i), data[u][i]});
      }
      m.add_unit("unit" + std::to_string(u), ts);
    }
  }
  // The lease's tensors hold the unit's bytes (the stream that used it synchronized first).
  template <class Lease>
  bool matches(const Lease& l) const {
    const auto& tensors = data[l.unit()];
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      if (std::memcmp(l.tensor(i), tensors[i].data(), tensors[i].size()) != 0) return false;
    }
    return true;
  }
};

// Acquires each of `ids` in turn; each holds tensors 2i and 2i + 1 of `tensors` by name.
template <class Manager, class Tensors>
void acquire_layers(host_backend& be, Manager& rm, const std::vector<unit_id>& ids,
                    const Tensors& tensors, host_backend::stream& s) {
  for (std::size_t layer = 0; layer < ids.size(); ++layer) {
    auto l = rm.acquire(ids[layer], s);
    be.synchronize(s);
    for (std::size_t k = 0; k < 2; ++k) {
      const auto& t = tensors[2 * layer + k];
      CHECK(std::memcmp(l.tensor(t.name), t.data.data(), t.data.size()) == 0);
    }
    rm.release(std::move(l), s);
  }
}

// A directory in the working directory for a test's files, removed with everything in it.
struct scratch_dir {
  std::filesystem::path path;
  explicit scratch_dir(const std::string& name) : path(std::filesystem::current_path() / name) {
    std::filesystem::create_directories(path);
  }
  scratch_dir(const scratch_dir&) = delete;
  scratch_dir& operator=(const scratch_dir&) = delete;
  ~scratch_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

// Three passes of the cycle 0..units-1 with a lookahead, every lease's bytes checked.
template <class Manager>
void three_cycles(host_backend& be, Manager& rm, const model& m, unit_id units,
                  std::uint64_t lookahead) {
  std::vector<unit_id> order(units);
  for (unit_id u = 0; u < units; ++u) order[u] = u;
  rm.declare_order(order, true, lookahead);
  auto s = be.make_stream();
  for (int p = 0; p < 3; ++p) {
    for (const unit_id u : order) {
      auto l = rm.acquire(u, s);
      be.synchronize(s);
      CHECK(m.matches(l));
      rm.release(std::move(l), s);
    }
  }
  be.synchronize(s);
}

// The units of a model laid out in two files f0 and f1 of `dir` at odd offsets, each unit's
// two tensors in different files.
struct model_files {
  std::filesystem::path dir;
  std::vector<std::vector<cache::file_tensor>> tensors;  // unit -> tensors
  std::vector<std::byte> contents[2];

  model_files(const model& m, std::filesystem::path d) : dir(std::move(d)) {
    std::uint64_t at[2] = {17, 3};
    tensors.resize(m.data.size());
    for (std::size_t u = 0; u < m.data.size(); ++u) {
      for (std::size_t t = 0; t < 2; ++t) {
        const std::size_t f = (u + t) % 2;
        const auto& bytes = m.data[u][t];
        contents[f].resize(at[f]);
        contents[f].insert(contents[f].end(), bytes.begin(), bytes.end());
        tensors[u].push_back({"t" + std::to_string(t), dir / ("f" + std::to_string(f)), at[f],
                              bytes.size()});
        at[f] += bytes.size() + 5;
      }
    }
    write(0);
    write(1);
  }
  // (Re)writes file f whole.
  void write(std::size_t f) const {
    std::ofstream(dir / ("f" + std::to_string(f)), std::ios::binary)
        .write(reinterpret_cast<const char*>(contents[f].data()),
               static_cast<std::streamsize>(contents[f].size()));
  }
};

// Layers 0..layers-1 of two BF16 tensors each ("layers.N.attn", "layers.N.mlp"), 64 x
// (width + N).
std::vector<lris::test::raw_tensor> layer_tensors(unsigned layers, std::uint64_t width) {
  std::vector<lris::test::raw_tensor> tensors;
  for (unsigned layer = 0; layer < layers; ++layer) {
    for (const char* part : {"attn", "mlp"}) {
      tensors.push_back(lris::test::random_tensor("layers." + std::to_string(layer) + "." + part,
                                                  lris::dtype::BF16, {64, width + layer}, layer));
    }
  }
  return tensors;
}

}  // namespace

TEST_CASE("residency: acquired units hold their bytes; leased units stay; the budget holds",
          "[cache][residency]") {
  host_backend be;
  for (unsigned seed = 1; seed <= 40; ++seed) {
    CAPTURE(seed);
    std::mt19937 rng(seed);
    const unit_id units = 3 + seed % 6;
    const std::size_t unit_bytes = 4096 + (seed % 5) * 1000;
    const model m(units, unit_bytes, seed);
    // Room for three to five units (rounded up to the alignment, 256 bytes per tensor): with
    // one unit held anywhere in the arena, one of the two ranges beside it still fits the
    // largest unit (units of several sizes can leave holes).
    const std::uint64_t budget = (3 + seed % 3) * (unit_bytes + 512);
    cache::residency_manager<host_backend, cache::lru> rm(be, {.budget_bytes = budget});
    m.add_to(rm);
    auto s1 = be.make_stream();
    auto s2 = be.make_stream();
    std::vector<cache::residency_manager<host_backend, cache::lru>::lease> held;
    std::uint64_t asked = 0;
    for (int step = 0; step < 200; ++step) {
      const unit_id u = static_cast<unit_id>(rng() % units);
      auto& s = step % 2 ? s1 : s2;
      // At most one lease held across steps: the budget has room for it and one more.
      auto l = rm.acquire(u, s);
      asked += rm.unit_bytes(u);
      be.synchronize(s);
      CHECK(m.matches(l));
      for (const auto& h : held) CHECK(m.matches(h));  // not overwritten while held
      if (!held.empty() && rng() % 2 == 0) {
        rm.release(std::move(held.back()), s);
        held.pop_back();
      }
      if (held.empty() && rng() % 3 == 0) {
        held.push_back(std::move(l));
      } else {
        rm.release(std::move(l), s);
      }
    }
    for (auto& h : held) rm.release(std::move(h), s1);
    be.synchronize(s1);
    const auto st = rm.stats();
    CHECK(st.high_water_bytes <= budget);
    CHECK(st.hit_bytes + st.prefetch_hit_bytes + st.miss_bytes == asked);
    CHECK(st.acquires == 200);
    CHECK(st.pinned_host_bytes >= units * unit_bytes);
    CHECK(st.pinned_host_bytes <= units * (unit_bytes + 512));
    CHECK(rm.belady_hit_bytes() >= st.hit_bytes);
  }
}

TEST_CASE("residency: a declared cycle prefetches ahead; static priority keeps a fixed part",
          "[cache][residency]") {
  host_backend be;
  const unit_id units = 10;
  const std::size_t unit_bytes = 8192;  // two tensors, each a multiple of 256
  const model m(units, unit_bytes, 3);
  const std::uint64_t slot = unit_bytes + 256;
  cache::residency_manager<host_backend> rm(be, {.budget_bytes = 6 * slot},
                                            cache::static_priority{});
  m.add_to(rm);
  std::vector<unit_id> order(units);
  for (unit_id u = 0; u < units; ++u) order[u] = u;
  rm.declare_order(order, true, slot);  // one unit ahead
  auto s = be.make_stream();
  const int passes = 5;
  for (int p = 0; p < passes; ++p) {
    for (const unit_id u : order) {
      auto l = rm.acquire(u, s);
      CHECK(rm.resident((u + 1) % units));  // brought in ahead
      be.synchronize(s);
      CHECK(m.matches(l));
      rm.release(std::move(l), s);
    }
  }
  const auto st = rm.stats();
  CHECK(st.prefetched_bytes > 0);
  CHECK(st.high_water_bytes <= 6 * slot);
  // Units 0-3 stay (the two places left stream the rest, one being used, one coming in): from
  // the second pass on, every acquire after the first of each pass is a hit or a prefetch.
  CHECK(st.miss_bytes <= unit_bytes + 2 * unit_bytes);  // a cold start only
  CHECK(st.hit_bytes + st.prefetch_hit_bytes >= (passes * units - 3) * unit_bytes);
  // Kept, not moved: units 0-3 in every pass after the first, the bound (6 - 2) / 10 of a pass.
  CHECK(st.hit_bytes >= (passes - 1) * 4 * unit_bytes);
  CHECK(rm.belady_hit_bytes() >= st.hit_bytes);  // the oracle reuses its streaming place too
}

TEST_CASE("residency: LRU against the oracle on a cycle larger than the budget",
          "[cache][residency]") {
  host_backend be;
  const model m(8, 4096, 5);
  cache::residency_manager<host_backend, cache::lru> rm(be, {.budget_bytes = 4 * (4096 + 512)});
  m.add_to(rm);
  auto s = be.make_stream();
  for (int p = 0; p < 4; ++p) {
    for (unit_id u = 0; u < 8; ++u) rm.release(rm.acquire(u, s), s);
  }
  be.synchronize(s);
  CHECK(rm.stats().hit_bytes == 0);  // LRU evicts what the cycle needs next
  CHECK(rm.belady_hit_bytes() > 0);  // the oracle keeps some
}

TEST_CASE("residency: pinned units are never evicted", "[cache][residency]") {
  host_backend be;
  const model m(6, 4096, 9);
  cache::residency_manager<host_backend, cache::lru> rm(be, {.budget_bytes = 3 * (4096 + 512)});
  m.add_to(rm);
  rm.pin(0);
  auto s = be.make_stream();
  for (int p = 0; p < 3; ++p) {
    for (unit_id u = 0; u < 6; ++u) {
      rm.release(rm.acquire(u, s), s);
      if (p > 0 || u > 0) CHECK(rm.resident(0));
    }
  }
}

TEST_CASE("residency: errors name the unit and the sizes", "[cache][residency][errors]") {
  host_backend be;
  const model m(3, 4096, 11);
  using manager = cache::residency_manager<host_backend, cache::lru>;
  auto s = be.make_stream();
  SECTION("a zero budget") {
    REQUIRE_THROWS_MATCHES(manager(be, {.budget_bytes = 0}), lris::invalid_argument,
                           what_contains("the budget is 0 bytes"));
  }
  SECTION("a budget smaller than one aligned range, and an alignment of 0 or not a power of 2") {
    REQUIRE_THROWS_MATCHES(manager(be, {.budget_bytes = 100, .alignment = 256}),
                           lris::invalid_argument,
                           what_contains("the budget is 100 bytes, less than one range of the "
                                         "alignment, 256"));
    for (const std::size_t a : {std::size_t{0}, std::size_t{48}}) {
      REQUIRE_THROWS_MATCHES(manager(be, {.budget_bytes = 4096, .alignment = a}),
                             lris::invalid_argument,
                             what_contains(fmt::format("alignment {} is not a power of two", a)));
    }
  }
  SECTION("a unit larger than the budget") {
    manager rm(be, {.budget_bytes = 2048});
    const std::vector<std::byte> big(4096);
    const std::vector<cache::unit_tensor> ts = {{"w", big}};
    REQUIRE_THROWS_MATCHES(rm.add_unit("layer", ts), lris::invalid_argument,
                           what_contains("unit \"layer\" needs 4096 bytes, more than the budget "
                                         "of 2048 bytes"));
  }
  SECTION("names taken") {
    manager rm(be, {.budget_bytes = 1 << 20});
    m.add_to(rm);
    REQUIRE_THROWS_MATCHES(rm.add_unit("unit1", {}), lris::invalid_argument,
                           what_contains("a unit called \"unit1\" exists"));
    const std::vector<std::byte> b(16);
    const std::vector<cache::unit_tensor> ts = {{"w", b}, {"w", b}};
    REQUIRE_THROWS_MATCHES(rm.add_unit("x", ts), lris::invalid_argument,
                           what_contains("unit \"x\" has two tensors called \"w\""));
  }
  SECTION("unknown units and tensors") {
    manager rm(be, {.budget_bytes = 1 << 20});
    m.add_to(rm);
    REQUIRE_THROWS_MATCHES(rm.acquire(3, s), lris::invalid_argument,
                           what_contains("acquire: unit 3 is not registered (3 units)"));
    REQUIRE_THROWS_MATCHES(rm.pin(7), lris::invalid_argument,
                           what_contains("pin: unit 7 is not registered"));
    REQUIRE_THROWS_MATCHES(rm.declare_order({0, 5}, false, 1), lris::invalid_argument,
                           what_contains("declare_order: unit 5 is not registered"));
    auto l = rm.acquire(1, s);
    REQUIRE_THROWS_MATCHES(l.tensor("nope"), lris::invalid_argument,
                           what_contains("unit \"unit1\": no tensor called \"nope\""));
    REQUIRE_THROWS_MATCHES(l.tensor(2), lris::invalid_argument,
                           what_contains("unit \"unit1\": tensor 2 of 2"));
    rm.release(std::move(l), s);
  }
  SECTION("a lease used after release") {
    manager rm(be, {.budget_bytes = 1 << 20});
    m.add_to(rm);
    auto l = rm.acquire(2, s);
    auto moved = std::move(l);
    rm.release(std::move(moved), s);
    REQUIRE_THROWS_MATCHES(moved.tensor(0), lris::invalid_argument,
                           what_contains("lease of unit 2: tensor() on a lease that was released"));
    REQUIRE_THROWS_MATCHES(rm.release(std::move(moved), s), lris::invalid_argument,
                           what_contains("release of a lease of unit 2 that was released already"));
    REQUIRE_THROWS_MATCHES(rm.release(std::move(l), s), lris::invalid_argument,
                           what_contains("was released already (or moved from)"));
    manager other(be, {.budget_bytes = 1 << 20});
    m.add_to(other);
    auto theirs = other.acquire(0, s);
    REQUIRE_THROWS_MATCHES(rm.release(std::move(theirs), s), lris::invalid_argument,
                           what_contains("another manager gave"));
    other.release(std::move(theirs), s);
  }
  SECTION("no room beside leased units") {
    manager rm(be, {.budget_bytes = 2 * (4096 + 512)});
    m.add_to(rm);
    auto a = rm.acquire(0, s);
    auto b = rm.acquire(1, s);
    REQUIRE_THROWS_MATCHES(rm.acquire(2, s), lris::out_of_memory,
                           what_contains("unit \"unit2\" (") &&
                               what_contains("bytes) does not fit") &&
                               what_contains("hold units that are leased or pinned"));
    rm.release(std::move(a), s);
    auto c = rm.acquire(2, s);  // now unit 0 may go
    be.synchronize(s);
    CHECK(m.matches(c));
    CHECK(m.matches(b));
    rm.release(std::move(b), s);
    rm.release(std::move(c), s);
  }
  be.synchronize(s);
}

TEST_CASE("residency: sleep gives the device memory back, wake copies the resident units back",
          "[cache][residency]") {
  host_backend be;
  const model m(5, 4096, 13);
  cache::residency_manager<host_backend, cache::lru> rm(be, {.budget_bytes = 3 * (4096 + 512)});
  m.add_to(rm);
  auto s = be.make_stream();
  for (unit_id u = 0; u < 5; ++u) rm.release(rm.acquire(u, s), s);
  std::vector<bool> was(5);
  for (unit_id u = 0; u < 5; ++u) was[u] = rm.resident(u);
  auto held = rm.acquire(4, s);
  REQUIRE_THROWS_MATCHES(rm.sleep(), lris::invalid_argument,
                         what_contains("sleep: unit \"unit4\" is leased (1 lease)"));
  rm.release(std::move(held), s);
  rm.sleep();
  CHECK(rm.asleep());
  REQUIRE_THROWS_MATCHES(rm.acquire(0, s), lris::invalid_argument,
                         what_contains("acquire of unit \"unit0\": the manager is asleep"));
  REQUIRE_THROWS_MATCHES(rm.sleep(), lris::invalid_argument, what_contains("asleep already"));
  rm.wake();
  REQUIRE_THROWS_MATCHES(rm.wake(), lris::invalid_argument, what_contains("awake already"));
  for (unit_id u = 0; u < 5; ++u) CHECK(rm.resident(u) == was[u]);
  const auto before = rm.stats();
  for (const bool woken : {true, false}) {  // the woken units first: they hit
    for (unit_id u = 0; u < 5; ++u) {
      if (was[u] != woken) continue;
      auto l = rm.acquire(u, s);
      be.synchronize(s);
      CHECK(m.matches(l));
      rm.release(std::move(l), s);
    }
    if (woken) {
      const auto after = rm.stats();
      CHECK(after.sleeps == 1);
      CHECK(before.woken_bytes > 0);
      CHECK(after.hit_bytes - before.hit_bytes == before.woken_bytes);
    }
  }
  be.synchronize(s);
}

TEST_CASE("residency: units from a checkpoint, read from the files into pinned memory",
          "[cache][residency]") {
  namespace st = lris::safetensors;
  using lris::dtype;
  std::vector<lris::test::raw_tensor> tensors = layer_tensors(3, 33);
  tensors.push_back(lris::test::random_tensor("norm", dtype::F32, {64}, 9));
  const scratch_dir scratch("residency_test_files");
  const auto& dir = scratch.path;
  const auto path = lris::test::write_file(dir / "layers.safetensors", tensors);
  const st::checkpoint ck(path);
  lris::pipeline<lris::auto_select, host_backend> p;
  host_backend be;
  cache::residency_manager<host_backend, cache::lru> rm(be, {.budget_bytes = 1 << 20});
  const auto by_layer = [](std::string_view name) -> std::string {
    if (!name.starts_with("layers.")) return {};  // "norm" stays out
    return std::string(name.substr(0, name.find('.', 7)));
  };
  const auto ids = cache::add_checkpoint_units(rm, p, ck, by_layer);
  REQUIRE(ids.size() == 3);
  CHECK(rm.units() == 3);
  CHECK(rm.find("layers.1") == ids[1]);
  CHECK_FALSE(rm.find("norm"));
  auto s = be.make_stream();
  acquire_layers(be, rm, ids, tensors, s);
  CHECK(rm.stats().pinned_host_bytes < 2 * (1 << 14));  // the layers only, once
  // A name taken: nothing more is added.
  REQUIRE_THROWS_MATCHES(cache::add_checkpoint_units(rm, p, ck, by_layer), lris::invalid_argument,
                         what_contains("a unit called \"layers.0\" exists (from tensor "
                                       "\"layers.0.attn\" of"));
  CHECK(rm.units() == 3);
  // A unit larger than the budget.
  cache::residency_manager<host_backend, cache::lru> small(be, {.budget_bytes = 4096});
  REQUIRE_THROWS_MATCHES(cache::add_checkpoint_units(small, p, ck, by_layer),
                         lris::invalid_argument,
                         what_contains("unit \"layers.0\" needs") &&
                             what_contains("more than the budget of 4096 bytes"));
  CHECK(small.units() == 0);
  // A read that fails (the file cut short after it was opened): nothing is added.
  const auto cut = lris::test::write_file(dir / "cut.safetensors", tensors);
  const st::checkpoint cut_ck(cut);
  std::filesystem::resize_file(cut, std::filesystem::file_size(cut) / 2);
  cache::residency_manager<host_backend, cache::lru> other(be, {.budget_bytes = 1 << 20});
  REQUIRE_THROWS_AS(cache::add_checkpoint_units(other, p, cut_ck, by_layer), lris::error);
  CHECK(other.units() == 0);
  CHECK(other.stats().pinned_host_bytes == 0);
  be.synchronize(s);
}

TEST_CASE("residency: the oracle's history is bounded", "[cache][residency]") {
  host_backend be;
  const model m(4, 1024, 17);
  cache::residency_manager<host_backend, cache::lru> rm(
      be, {.budget_bytes = 2 * (1024 + 512), .history = 8});
  m.add_to(rm);
  auto s = be.make_stream();
  for (int i = 0; i < 100; ++i) rm.release(rm.acquire(static_cast<unit_id>(i % 4), s), s);
  be.synchronize(s);
  // 4-cycle through 2 places: LRU and the oracle alike see only the last 4 to 8 acquires.
  CHECK(rm.belady_hit_bytes() <= 8 * rm.unit_bytes(0));
  CHECK(rm.stats().acquires == 100);
}

TEST_CASE("residency: statistics as JSON", "[cache][residency]") {
  cache::residency_stats s;
  s.acquires = 3;
  s.hit_bytes = 1024;
  s.woken_bytes = 7;
  const std::string j = cache::to_json(s);
  CHECK_THAT(j, Catch::StartsWith("{\"acquires\": 3, \"hit_bytes\": 1024, \"miss_bytes\": 0,"));
  CHECK_THAT(j, Catch::EndsWith("\"woken_bytes\": 7, \"file_read_bytes\": 0, "
                                "\"file_read_seconds\": 0.000000, \"stall_seconds\": "
                                "0.000000, \"stalls\": 0, \"replays\": 0, "
                                "\"replayed_bytes\": 0}"));
  CHECK(std::count(j.begin(), j.end(), ':') == 18);  // every field
}

TEST_CASE("residency: copies take the link's tokens, demand at critical, prefetch behind",
          "[cache][residency]") {
  host_backend be;
  const unit_id units = 8;
  const model m(units, 8192, 21);
  auto broker = std::make_shared<lris::sched::bandwidth_broker>();
  cache::residency_options o;
  o.budget_bytes = 4 * (8192 + 512);
  o.broker = broker;
  cache::residency_manager<host_backend> rm(be, o, cache::static_priority{});
  m.add_to(rm);
  three_cycles(be, rm, m, units, 8192 + 512);
  const auto st = rm.stats();
  const auto link = broker->status(broker->resource("host:0 h2d"));
  const auto at = [](lris::priority p) { return static_cast<std::size_t>(p); };
  CHECK(st.miss_bytes > 0);
  CHECK(st.prefetched_bytes > 0);
  CHECK(link.granted_bytes[at(lris::priority::critical)] == st.miss_bytes);
  CHECK(link.granted_bytes[at(lris::priority::background)] == st.prefetched_bytes);
  CHECK(link.granted_bytes[at(lris::priority::normal)] == 0);
}

TEST_CASE("residency: units larger than the link's tokens come in ahead, piece by piece",
          "[cache][residency]") {
  host_backend be;
  const unit_id units = 6;
  const std::size_t unit_bytes = 64 * 1024;
  const model m(units, unit_bytes, 5);
  lris::sched::broker_options bo;
  bo.min_capacity = 16 * 1024;  // a quarter of a unit in flight at most
  bo.ceilings["host:0 h2d"] = 0.001;
  auto broker = std::make_shared<lris::sched::bandwidth_broker>(bo);
  const std::size_t link = broker->resource("host:0 h2d");
  REQUIRE(broker->capacity(link) < unit_bytes);
  cache::residency_options o;
  o.budget_bytes = 3 * (unit_bytes + 512);
  o.broker = broker;
  o.piece_bytes = 4 * 1024;
  cache::residency_manager<host_backend> rm(be, o, cache::static_priority{});
  m.add_to(rm);
  three_cycles(be, rm, m, units, unit_bytes + 512);
  const auto st = rm.stats();
  const auto status = broker->status(link);
  const auto at = [](lris::priority p) { return static_cast<std::size_t>(p); };
  CHECK(st.prefetched_bytes > 0);
  CHECK(st.prefetch_hit_bytes > 0);
  CHECK(st.hit_bytes + st.prefetch_hit_bytes + st.miss_bytes == st.acquires * rm.unit_bytes(0));
  CHECK(status.granted_bytes[at(lris::priority::background)] == st.prefetched_bytes);
  CHECK(status.granted_bytes[at(lris::priority::critical)] == st.miss_bytes);
  // No grant was larger than a piece: as many grants as pieces.
  const auto grants = status.grants[at(lris::priority::background)] +
                      status.grants[at(lris::priority::critical)];
  CHECK(grants * o.piece_bytes >= st.prefetched_bytes + st.miss_bytes);
  CHECK(status.granted_bytes[at(lris::priority::normal)] == 0);
}

TEST_CASE("residency: stalls are timed by events, per unit and per pass", "[cache][residency]") {
  host_backend be;
  const std::size_t unit_bytes = std::size_t{32} << 20;  // a copy that takes a while
  std::vector<std::byte> bytes(unit_bytes, std::byte{7});
  cache::residency_manager<host_backend> rm(be, {.budget_bytes = 2 * unit_bytes + 1024});
  const cache::unit_tensor t{"w", bytes};
  const unit_id a = rm.add_unit("a", {&t, 1});
  const unit_id b = rm.add_unit("b", {&t, 1});
  auto s = be.make_stream();
  const cache::residency_stats start = rm.stats();
  rm.release(rm.acquire(a, s), s);  // a miss: the stream waits for the copy
  be.synchronize(s);
  const cache::residency_stats first = rm.stats();
  CHECK(first.stalls == 1);
  CHECK(first.stall_seconds > 0);
  CHECK(rm.stats(a).stalls == 1);
  CHECK(rm.stats(a).stall_seconds == first.stall_seconds);
  CHECK(rm.stats(a).miss_bytes == unit_bytes);
  CHECK(rm.stats(b).acquires == 0);
  rm.release(rm.acquire(a, s), s);  // a hit, its copy long done: no stall
  be.synchronize(s);
  const cache::residency_stats pass = rm.stats() - first;
  CHECK(pass.acquires == 1);
  CHECK(pass.hit_bytes == unit_bytes);
  CHECK(pass.miss_bytes == 0);
  CHECK(pass.stalls == 0);
  CHECK(pass.stall_seconds == 0);
  CHECK(pass.budget_bytes == first.budget_bytes);
  CHECK((rm.stats() - start).acquires == 2);
  CHECK(rm.stats(a).hit_bytes == unit_bytes);
  CHECK_THROWS_WITH(rm.stats(unit_id{9}), Catch::Contains("unit 9 is not registered"));
}

TEST_CASE("residency: without stall timing nothing is timed", "[cache][residency]") {
  host_backend be;
  std::vector<std::byte> bytes(std::size_t{8} << 20, std::byte{1});
  cache::residency_options o;
  o.budget_bytes = bytes.size() + 1024;
  o.time_stalls = false;
  cache::residency_manager<host_backend> rm(be, o);
  const cache::unit_tensor t{"w", bytes};
  const unit_id a = rm.add_unit("a", {&t, 1});
  auto s = be.make_stream();
  rm.release(rm.acquire(a, s), s);
  be.synchronize(s);
  CHECK(rm.stats().stalls == 0);
  CHECK(rm.stats().miss_bytes == bytes.size());
}

TEST_CASE("residency: next_use on a declared cycle keeps what the oracle keeps; static a unit "
          "less a pass", "[cache][residency]") {
  host_backend be;
  const unit_id units = 10;
  const std::size_t unit_bytes = 8192 - 256;  // one aligned place each
  const model m(units, unit_bytes, 9);
  std::vector<unit_id> order(units);
  for (unit_id u = 0; u < units; ++u) order[u] = u;
  for (const std::uint64_t places : {4u, 6u, 9u}) {
    CAPTURE(places);
    const auto run = [&](auto policy) {
      cache::residency_manager<host_backend, decltype(policy)> rm(
          be, {.budget_bytes = places * 8192}, std::move(policy));
      m.add_to(rm);
      three_cycles(be, rm, m, units, 8192);
      return std::tuple{rm.stats().hit_bytes, rm.belady_hit_bytes(), rm.belady_hit_bytes(0)};
    };
    const auto [next, staged, whole] = run(cache::next_use::from_order(order, true, units));
    const auto [stat, staged2, whole2] = run(cache::static_priority{});
    CHECK(staged == staged2);
    CHECK(whole == whole2);
    CAPTURE(next, stat, staged, whole);
    CHECK(next >= staged);  // the oracle with the lookahead's room set aside
    CHECK(next <= whole);   // no policy of the budget does better
    CHECK(stat < next);
  }
}

namespace {
// The host backend with a scripted clock: elapsed_seconds() answers the next scripted value.
struct scripted_clock_backend : host_backend {
  std::shared_ptr<std::vector<double>> script = std::make_shared<std::vector<double>>();
  std::shared_ptr<std::size_t> asked = std::make_shared<std::size_t>(0);
  double elapsed_seconds(event&, event&) {
    return (*asked)++ < script->size() ? (*script)[*asked - 1] : 0.0;
  }
};
}  // namespace

TEST_CASE("residency: stall accounting on a scripted clock", "[cache][residency]") {
  scripted_clock_backend be;
  *be.script = {0.5, -0.25, 0.125, 0.0};  // waited, copy done before, waited, no wait
  std::vector<std::byte> bytes(4096, std::byte{3});
  cache::residency_manager<scripted_clock_backend> rm(be, {.budget_bytes = 4 * 4096});
  const cache::unit_tensor t{"w", bytes};
  const unit_id a = rm.add_unit("a", {&t, 1});
  const unit_id b = rm.add_unit("b", {&t, 1});
  auto s = be.make_stream();
  for (const unit_id u : {a, b, a, b}) {
    rm.release(rm.acquire(u, s), s);
    be.synchronize(s);
  }
  const auto st = rm.stats();
  CHECK(*be.asked == 4);  // one probe per acquire, each timed once
  CHECK(st.stalls == 2);
  CHECK(st.stall_seconds == Approx(0.625));
  CHECK(rm.stats(a).stalls == 2);
  CHECK(rm.stats(a).stall_seconds == Approx(0.625));
  CHECK(rm.stats(b).stalls == 0);
  CHECK(rm.stats(b).stall_seconds == 0);
  CHECK(*be.asked == 4);  // asking again times nothing twice
}

TEST_CASE("residency: units from a checkpoint kept in its files", "[cache][residency]") {
  namespace st = lris::safetensors;
  const std::vector<lris::test::raw_tensor> tensors = layer_tensors(4, 31);
  const scratch_dir scratch("residency_checkpoint_files");
  const auto& dir = scratch.path;
  const st::checkpoint ck(lris::test::write_file(dir / "layers.safetensors", tensors));
  host_backend be;
  cache::residency_options o;
  o.budget_bytes = 2 * 8192;  // two layers of four at once
  o.file_staging_bytes = 4096;
  cache::residency_manager<host_backend> rm(be, o);
  const auto ids = cache::add_checkpoint_file_units(
      rm, ck, [](std::string_view n) { return std::string(n.substr(0, n.find('.', 7))); });
  REQUIRE(ids.size() == 4);
  CHECK(rm.stats().pinned_host_bytes == 0);
  rm.declare_order(ids, true, 8192);
  auto s = be.make_stream();
  for (int pass = 0; pass < 2; ++pass) acquire_layers(be, rm, ids, tensors, s);
  CHECK(rm.stats().file_read_bytes > 0);
  CHECK_THROWS_WITH(cache::add_checkpoint_file_units(
                        rm, ck, [](std::string_view n) { return std::string(n.substr(0, 8)); }),
                    Catch::Contains("a unit called \"layers.0\" exists"));
}

TEST_CASE("residency: units kept in files come in through the staging slots, every byte",
          "[cache][residency]") {
  host_backend be;
  const scratch_dir scratch("residency_file_units");
  const auto& dir = scratch.path;
  const unit_id units = 4;
  const model m(units, 40000, 11);
  const model_files files(m, dir);
  const auto& tensors = files.tensors;
  cache::residency_options o;
  o.budget_bytes = 2 * (40000 + 512);
  o.file_staging_bytes = 2 * 8192;  // slots of 8 KiB: many per unit, the slots reused
  SECTION("without a broker") {}
  SECTION("copies in pieces under a broker's tokens: the next slot is read while they wait") {
    lris::sched::broker_options bo;
    bo.min_capacity = 4096;
    bo.ceilings["host:0 h2d"] = 0.001;
    o.broker = std::make_shared<lris::sched::bandwidth_broker>(bo);
    o.piece_bytes = 2048;  // four pieces per slot, two in flight at most
  }
  cache::residency_manager<host_backend, cache::lru> rm(be, o);
  for (unit_id u = 0; u < units; ++u) rm.add_file_unit("unit" + std::to_string(u), tensors[u]);
  CHECK(rm.stats().pinned_host_bytes == 0);
  auto s = be.make_stream();
  for (int round = 0; round < 3; ++round) {
    for (unit_id u = 0; u < units; ++u) {
      auto l = rm.acquire(u, s);
      be.synchronize(s);
      CHECK(m.matches(l));
      rm.release(std::move(l), s);
    }
  }
  const auto st = rm.stats();
  // Every unit that came in was read whole: its tensors' bytes (not the alignment between).
  CHECK(st.file_read_bytes == 40000 * ((st.miss_bytes + st.prefetched_bytes) / rm.unit_bytes(0)));
  CHECK(st.file_read_seconds > 0);
  CHECK(st.high_water_bytes <= o.budget_bytes);
  // Asleep and awake: the resident ones are read again.
  rm.sleep();
  rm.wake();
  for (unit_id u = 0; u < units; ++u) {
    auto l = rm.acquire(u, s);
    be.synchronize(s);
    CHECK(m.matches(l));
    rm.release(std::move(l), s);
  }
  CHECK(rm.stats().woken_bytes > 0);

  // A file cut short after the units were added: the acquire names the file, the tensor and
  // the offset; the unit is not in, the others still work, and it comes in once the file is
  // whole again.
  for (const unit_id u : {0u, 1u}) rm.release(rm.acquire(u, s), s);  // 2 and 3 leave (LRU)
  be.synchronize(s);
  std::filesystem::resize_file(dir / "f1", tensors[2][1].offset + 100);
  const unit_id cut = 2;  // its tensor t1 lies in f1 ((2 + 1) % 2), past the cut
  REQUIRE(tensors[cut][1].path == dir / "f1");
  bool threw = false;
  try {
    rm.release(rm.acquire(cut, s), s);
  } catch (const lris::io_error& e) {
    threw = true;
    CHECK_THAT(e.what(), Catch::Contains("unit \"unit2\", tensor \"t1\"") &&
                             Catch::Contains((dir / "f1").string()) &&
                             Catch::Contains("past the end of the file"));
  }
  CHECK(threw);
  CHECK_FALSE(rm.resident(cut));
  {
    auto l = rm.acquire(0, s);  // unit 0 reads f0 and the start of f1: still whole
    be.synchronize(s);
    CHECK(m.matches(l));
    rm.release(std::move(l), s);
  }
  files.write(1);
  {
    auto l = rm.acquire(cut, s);
    be.synchronize(s);
    CHECK(m.matches(l));
    rm.release(std::move(l), s);
  }
}

TEST_CASE("residency: a cancelled acquire leaves its unit out; the next brings it in whole",
          "[cache][residency][errors]") {
  host_backend be;
  const scratch_dir scratch("residency_cancel");
  const unit_id units = 4;
  const model m(units, 40000, 5);
  const model_files files(m, scratch.path);
  cache::residency_options o;
  o.budget_bytes = 2 * (40000 + 512);
  o.file_staging_bytes = 2 * 4096;  // ten pieces per unit: a stop is polled before each
  cache::residency_manager<host_backend, cache::lru> rm(be, o);
  for (unit_id u = 0; u < units; ++u) rm.add_file_unit("unit" + std::to_string(u), files.tensors[u]);
  auto s = be.make_stream();
  int polls = 0;
  const auto stop_after = [&polls](int n) {
    polls = 0;
    return [&polls, n] { return ++polls > n; };
  };
  const auto whole = [&](unit_id u) {
    auto l = rm.acquire(u, s, [] { return false; });
    be.synchronize(s);
    CHECK(m.matches(l));
    rm.release(std::move(l), s);
  };

  // Stopped before anything is read.
  CHECK_THROWS_MATCHES(rm.acquire(1, s, stop_after(0)), lris::cancelled,
                       what_contains("acquire of unit \"unit1\" cancelled with 0 of its"));
  CHECK_FALSE(rm.resident(1));
  CHECK(rm.stats().file_read_bytes == 0);
  // Stopped part of the way in (in a read or before a later piece).
  CHECK_THROWS_MATCHES(rm.acquire(1, s, stop_after(3)), lris::cancelled,
                       what_contains("unit \"unit1\""));
  CHECK_FALSE(rm.resident(1));
  const auto read = rm.stats().file_read_bytes;
  CHECK(read > 0);
  CHECK(read < 40000);
  CHECK(rm.stats().high_water_bytes <= o.budget_bytes);
  whole(1);
  whole(2);

  // Units ahead in a declared order are read by the prefetch thread, not by the acquire: its
  // stop does not reach them.
  rm.declare_order({0, 1, 2, 3}, true, 40000 + 512);
  {
    auto l = rm.acquire(2, s, stop_after(0));
    be.synchronize(s);
    CHECK(m.matches(l));
    rm.release(std::move(l), s);
  }
  whole(3);
  whole(0);

  // Units in pinned host memory, one copy each: stopped before it.
  cache::residency_manager<host_backend, cache::lru> pinned(be, {.budget_bytes = 1 << 20});
  m.add_to(pinned);
  CHECK_THROWS_AS(pinned.acquire(0, s, stop_after(0)), lris::cancelled);
  CHECK_FALSE(pinned.resident(0));
  {
    auto l = pinned.acquire(0, s, stop_after(1));  // polled once: goes through
    be.synchronize(s);
    CHECK(m.matches(l));
    pinned.release(std::move(l), s);
  }
  // A stop during the prefetch that follows a hit ends the prefetch; the lease is good.
  pinned.declare_order({0, 1, 2, 3}, true, 40000 + 512);
  {
    auto l = pinned.acquire(0, s, stop_after(0));
    be.synchronize(s);
    CHECK(m.matches(l));
    CHECK_FALSE(pinned.resident(1));
    pinned.release(std::move(l), s);
  }
  {
    auto l = pinned.acquire(1, s);
    be.synchronize(s);
    CHECK(m.matches(l));
    pinned.release(std::move(l), s);
  }
}

// Polls `done` for up to ten seconds.
template <class F>
bool eventually(F done) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

TEST_CASE("residency: the prefetch thread brings in what the tokens or the files hold back, "
          "with no acquire meanwhile", "[cache][residency]") {
  host_backend be;
  const unit_id units = 4;
  const std::size_t unit_bytes = 64 * 1024;
  const model m(units, unit_bytes, 9);
  auto s = be.make_stream();
  const std::vector<unit_id> order = {0, 1, 2, 3};
  const auto next_is_ahead = [&](auto& rm) {
    rm.declare_order(order, true, unit_bytes + 512);
    rm.release(rm.acquire(0, s), s);
    // Unit 1 comes in whole while nobody calls the manager.
    REQUIRE(eventually([&] { return rm.stats().prefetched_bytes == rm.unit_bytes(1); }));
    const auto before = rm.stats();
    auto l = rm.acquire(1, s);
    be.synchronize(s);
    CHECK(m.matches(l));
    rm.release(std::move(l), s);
    const auto d = rm.stats() - before;
    CHECK(d.miss_bytes == 0);
    CHECK(d.prefetch_hit_bytes == rm.unit_bytes(1));
    return d;
  };

  SECTION("a unit larger than the link's tokens") {
    lris::sched::broker_options bo;
    bo.min_capacity = 16 * 1024;  // a quarter of a unit in flight at most
    bo.ceilings["host:0 h2d"] = 0.001;
    auto broker = std::make_shared<lris::sched::bandwidth_broker>(bo);
    cache::residency_options o;
    o.budget_bytes = 3 * (unit_bytes + 512);
    o.broker = broker;
    o.piece_bytes = 4 * 1024;
    cache::residency_manager<host_backend> rm(be, o);
    m.add_to(rm);
    next_is_ahead(rm);
  }
  SECTION("units kept in files: read off the caller's thread") {
    const scratch_dir scratch("residency_prefetch_thread");
    const model_files files(m, scratch.path);
    cache::residency_options o;
    o.budget_bytes = 3 * (unit_bytes + 512);
    o.file_staging_bytes = 2 * 16384;  // four reads per unit
    cache::residency_manager<host_backend> rm(be, o);
    for (unit_id u = 0; u < units; ++u) rm.add_file_unit("unit" + std::to_string(u), files.tensors[u]);
    next_is_ahead(rm);  // unit 1 was read while nobody called the manager
    CHECK(rm.stats().file_read_bytes >= 2 * unit_bytes);
  }
}

TEST_CASE("residency: an acquire that finds the prefetch thread reading its unit waits for "
          "that read", "[cache][residency]") {
  host_backend be;
  const std::size_t unit_bytes = 4 << 20;  // a read long enough to be caught in
  const model m(2, unit_bytes, 13);
  const scratch_dir scratch("residency_read_once");
  const model_files files(m, scratch.path);
  for (int round = 0; round < 20; ++round) {
    cache::residency_options o;
    o.budget_bytes = 2 * (unit_bytes + 512);
    o.file_staging_bytes = 2 * (unit_bytes + 4096);  // a unit in one read
    cache::residency_manager<host_backend> rm(be, o);
    for (unit_id u = 0; u < 2; ++u) rm.add_file_unit("unit" + std::to_string(u), files.tensors[u]);
    rm.declare_order({0, 1}, true, unit_bytes + 512);
    auto s = be.make_stream();
    rm.release(rm.acquire(0, s), s);  // the prefetch thread starts reading unit 1
    // Soon after: before that read, during it, or after it.
    std::this_thread::sleep_for(std::chrono::microseconds(100 * round));
    auto l = rm.acquire(1, s);
    be.synchronize(s);
    CHECK(m.matches(l));
    rm.release(std::move(l), s);
    CHECK(rm.stats().file_read_bytes == 2 * unit_bytes);  // every byte read once
  }
}

TEST_CASE("residency: units kept in files are checked when added", "[cache][residency][errors]") {
  host_backend be;
  const scratch_dir scratch("residency_file_errors");
  const auto& dir = scratch.path;
  std::ofstream(dir / "small", std::ios::binary).write("0123456789", 10);
  cache::residency_manager<host_backend> rm(be, {.budget_bytes = 1 << 20});
  const std::vector<cache::file_tensor> missing = {{"w", dir / "none", 0, 4}};
  CHECK_THROWS_AS(rm.add_file_unit("a", missing), lris::io_error);
  const std::vector<cache::file_tensor> past = {{"w", dir / "small", 8, 4}};
  CHECK_THROWS_WITH(rm.add_file_unit("a", past),
                    Catch::Contains("tensor \"w\": 4 bytes at offset 8 reach past the end of") &&
                        Catch::Contains("(10 bytes)"));
  const std::vector<cache::file_tensor> big = {{"w", dir / "small", 0, 2 << 20}};
  CHECK_THROWS_WITH(rm.add_file_unit("a", big), Catch::Contains("more than the budget"));
  const std::vector<cache::file_tensor> twice = {{"w", dir / "small", 0, 4}, {"w", dir / "small", 4, 4}};
  CHECK_THROWS_WITH(rm.add_file_unit("a", twice), Catch::Contains("two tensors called \"w\""));
  const std::vector<cache::file_tensor> ok = {{"w", dir / "small", 2, 4}};
  rm.add_file_unit("a", ok);
  CHECK_THROWS_WITH(rm.add_file_unit("a", ok), Catch::Contains("a unit called \"a\" exists"));
  CHECK(rm.units() == 1);
}
