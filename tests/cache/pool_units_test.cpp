// add_pool_units: a residency manager's units kept in a host pool, brought in from it with no
// copy of their own in host memory, every byte checked; a unit whose tensors another unit's
// interleave is refused, naming both. add_far_unit: units read through far memory's latency
// and faults each time they come in.
#include <catch2/catch.hpp>

#include "support/random_bytes.hpp"
#include "support/safetensors_file.hpp"
#include "support/what_contains.hpp"

#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <lris/backends/host_backend.hpp>
#include <lris/cache/pool_units.hpp>
#include <lris/cache/residency_manager.hpp>
#include <lris/formats/checkpoint.hpp>
#include <lris/pool/far_memory.hpp>
#include <lris/pool/host_pool.hpp>
#include <lris/pool/populate.hpp>
#include <lris/transfer/copy.hpp>

namespace fs = std::filesystem;
using lris::host_backend;
using lris::test::what_contains;
namespace cache = lris::cache;

namespace {

std::string layer_of(std::string_view name) {  // "layers.3.w" -> "layers.3"
  const auto dot = name.find('.', name.find('.') + 1);
  return dot == std::string_view::npos ? std::string() : std::string(name.substr(0, dot));
}

struct model_file {
  fs::path path;
  std::vector<lris::test::raw_tensor> tensors;
  explicit model_file(const std::vector<std::string>& names) {
    path = fs::temp_directory_path() / fmt::format("lris-pool-units-{}.safetensors", ::getpid());
    unsigned seed = 1;
    for (const auto& n : names) {
      tensors.push_back(lris::test::random_tensor(n, lris::dtype::BF16, {96, 128}, seed++));
    }
    lris::test::write_file(path, tensors);
  }
  ~model_file() { fs::remove(path); }
};

}  // namespace

TEST_CASE("pool units: brought in from the pool, no copy of their own", "[cache][pool]") {
  std::vector<std::string> names;
  for (int l = 0; l < 6; ++l) {
    names.push_back(fmt::format("layers.{}.a", l));
    names.push_back(fmt::format("layers.{}.b", l));
  }
  names.push_back("norm");  // in no unit
  const model_file m(names);
  auto pool = lris::pool::host_pool::create(fmt::format("test-{}-units", ::getpid()), 8 << 20);
  (void)lris::pool::populate(pool, lris::default_pipeline<host_backend>(),
                             lris::safetensors::checkpoint(m.path));
  host_backend be;
  auto s = be.make_stream();
  const std::uint64_t layer = 2 * ((96 * 128 * 2 + 4095) / 4096 * 4096);
  {
    cache::residency_manager<host_backend> rm(be, {.budget_bytes = 3 * layer});
    const auto ids = cache::add_pool_units(rm, pool, layer_of);
    REQUIRE(ids.size() == 6);
    CHECK(rm.stats().pinned_host_bytes == 0);  // the pool's memory, not the manager's
    rm.declare_order(ids, true, layer);
    for (int pass = 0; pass < 3; ++pass) {
      for (std::size_t u = 0; u < ids.size(); ++u) {
        auto l = rm.acquire(ids[u], s);
        be.synchronize(s);
        for (int k = 0; k < 2; ++k) {
          const auto& t = m.tensors[2 * u + k];
          REQUIRE(std::memcmp(l.tensor(t.name), t.data.data(), t.data.size()) == 0);
        }
        rm.release(std::move(l), s);
      }
    }
    CHECK(rm.stats().evictions > 0);
    CHECK(rm.unit_bytes(ids[0]) == layer);
  }
  // The manager is gone; the pool's memory is the pool's still.
  CHECK(pool.find("layers.5.b"));
  pool.verify("layers.5.b");
}

TEST_CASE("pool units: a unit interleaved with another is refused", "[cache][pool]") {
  const model_file m({"layers.0.a", "layers.1.a", "layers.0.b"});
  auto pool = lris::pool::host_pool::create(fmt::format("test-{}-interleaved", ::getpid()), 1 << 20);
  (void)lris::pool::populate(pool, lris::default_pipeline<host_backend>(),
                             lris::safetensors::checkpoint(m.path));
  host_backend be;
  cache::residency_manager<host_backend> rm(be, {.budget_bytes = 1 << 20});
  CHECK_THROWS_MATCHES(cache::add_pool_units(rm, pool, layer_of), lris::invalid_argument,
                       what_contains("a tensor of unit \"layers.1\" at offset 24576, between "
                                     "tensors of unit \"layers.0\""));
  CHECK(rm.units() == 0);  // nothing added
  std::vector<cache::placed_tensor> bad{{"w", 100, 10}};
  CHECK_THROWS_MATCHES(rm.add_host_unit("u", pool.data(), 4096, bad), lris::invalid_argument,
                       what_contains("not a multiple of the alignment, 256"));
  std::vector<cache::placed_tensor> past{{"w", 0, 5000}};
  CHECK_THROWS_MATCHES(rm.add_host_unit("u", pool.data(), 4096, past), lris::invalid_argument,
                       what_contains("past its end"));
}

TEST_CASE("far units: read through far memory's costs each time they come in", "[cache][pool]") {
  const auto bytes = lris::test::random_bytes(6 * 3 * 8192, 21);
  using namespace std::chrono_literals;
  lris::pool::far_memory far(bytes, {.latency = 50us, .fault_rate = 0.2, .max_retries = 20,
                                     .backoff = 1us, .seed = 3});
  host_backend be;
  auto s = be.make_stream();
  cache::residency_manager<host_backend> rm(be, {.budget_bytes = 3 * 2 * 8192,
                                                 .file_staging_bytes = 4 * 8192});
  std::vector<cache::unit_id> ids;
  for (int u = 0; u < 6; ++u) {
    const std::uint64_t at = static_cast<std::uint64_t>(u) * 3 * 8192;
    const std::vector<cache::placed_tensor> t{{"a", at, 8192}, {"b", at + 8192 + 4096, 4096}};
    ids.push_back(rm.add_far_unit(fmt::format("u{}", u), far, t));
  }
  rm.declare_order(ids, true, 2 * 8192);
  for (int pass = 0; pass < 3; ++pass) {
    for (int u = 0; u < 6; ++u) {
      auto l = rm.acquire(ids[u], s);
      be.synchronize(s);
      const std::uint64_t at = static_cast<std::uint64_t>(u) * 3 * 8192;
      REQUIRE(std::memcmp(l.tensor("a"), bytes.data() + at, 8192) == 0);
      REQUIRE(std::memcmp(l.tensor("b"), bytes.data() + at + 8192 + 4096, 4096) == 0);
      rm.release(std::move(l), s);
    }
  }
  CHECK(rm.stats().file_read_bytes >= 6 * 3 * (8192 + 4096) / 2);
  CHECK(far.stats().faults > 0);  // retried: every byte above came right
  CHECK(far.stats().failed == 0);
  const std::vector<cache::placed_tensor> past{{"a", bytes.size() - 10, 100}};
  CHECK_THROWS_MATCHES(rm.add_far_unit("bad", far, past), lris::invalid_argument,
                       what_contains("reach past the end of the far memory"));
}
