// The nccl route of fanout::load on the host backend, through a stand-in for NCCL
// (fake_nccl.cpp, loaded at run time as NCCL is): every device's bytes arrive by broadcasts
// from each chunk's root in turn, the communicators are destroyed afterwards, and NCCL's
// failures (making the communicators, a broadcast, an asynchronous error) end the load with
// typed errors naming the device, the communicators aborted.
#include <catch2/catch.hpp>

#include "support/safetensors_file.hpp"
#include "support/scratch_dir.hpp"
#include "support/what_contains.hpp"

#include <dlfcn.h>

#include <chrono>
#include <filesystem>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <lris/fanout/fan_out_load.hpp>
#include <lris/lris.hpp>

using lris::dtype;
using lris::test::random_tensor;
using lris::test::what_contains;
namespace fo = lris::fanout;
namespace st = lris::safetensors;

namespace {

// The host backend with streams that have a runtime handle, as NCCL's need.
struct collective_host_backend : lris::host_backend {
  using host_backend::host_backend;
  class stream : public host_backend::stream {
   public:
    [[nodiscard]] void* native() const noexcept { return const_cast<stream*>(this); }
  };
  [[nodiscard]] stream make_stream() { return stream{}; }
};
static_assert(fo::detail::collective_backend<collective_host_backend>);
static_assert(!fo::detail::collective_backend<lris::host_backend>);

using pipeline = lris::pipeline<lris::auto_select, collective_host_backend>;

// The stand-in's controls, from the library the loader loads (the same handle).
struct fake {
  fake() : lib(dlopen(LRIS_FAKE_NCCL, RTLD_NOW | RTLD_LOCAL)) {
    REQUIRE(lib != nullptr);
    fail = reinterpret_cast<void (*)(int)>(dlsym(lib, "fake_nccl_fail"));
    count = reinterpret_cast<long (*)(int)>(dlsym(lib, "fake_nccl_count"));
    reinterpret_cast<void (*)()>(dlsym(lib, "fake_nccl_reset"))();
  }
  ~fake() {
    fail(0);
    dlclose(lib);
  }
  long inits() const { return count(0); }
  long broadcasts() const { return count(1); }
  long groups() const { return count(2); }
  long destroyed() const { return count(3); }
  long aborted() const { return count(4); }
  long most_groups_at_once() const { return count(5); }
  void* lib;
  void (*fail)(int) = nullptr;
  long (*count)(int) = nullptr;
};

std::vector<pipeline> pipelines(std::size_t n) {
  std::vector<pipeline> out;
  for (std::size_t d = 0; d < n; ++d) {
    out.emplace_back(lris::auto_select{}, collective_host_backend(static_cast<int>(d)));
  }
  return out;
}

std::filesystem::path model_file() {
  const std::vector<lris::test::raw_tensor> m = {
      random_tensor("model.layers.0.self_attn.q_proj.weight", dtype::BF16, {256, 128}, 1),
      random_tensor("model.layers.0.self_attn.o_proj.weight", dtype::F32, {128, 256}, 2),
      random_tensor("model.layers.0.mlp.down_proj.weight", dtype::F16, {64, 4096}, 3),
      random_tensor("model.norm.weight", dtype::F32, {128}, 4)};
  static const lris::test::scratch_dir dir("nccl_route_test_files");
  const auto path = dir.path() / "nccl_route_test.safetensors";
  lris::test::write_file(path, m);
  return path;
}

fo::fan_out_options nccl_options() {
  fo::fan_out_options o;
  o.path = fo::fan_path::nccl;
  o.nccl_library = LRIS_FAKE_NCCL;
  o.load.transfer.chunk_bytes = 16384;  // many chunks: every device is a root in turn
  o.load.transfer.workers = 1;
  return o;
}

}  // namespace

TEST_CASE("fanout::load: the nccl route broadcasts each chunk from its root in turn") {
  fake f;
  const st::checkpoint ck(model_file());
  const std::size_t devices = GENERATE(1u, 3u, 4u);
  auto p = pipelines(devices);
  auto o = nccl_options();
  o.verify = true;  // every device's bytes against the file
  o.tp = devices == 4 ? 2 : 1;
  o.plan = fo::sharding::llama();
  const auto r = fo::load(std::span(p), ck, o);
  CHECK(r.report.path == fo::fan_path::nccl);
  CHECK(r.report.route_reason == "asked for (nccl)");
  CHECK(r.report.nccl == std::string("NCCL 2.28.9 (") + LRIS_FAKE_NCCL + ")");
  CHECK(r.report.scratch_bytes > 0);
  CHECK(r.report.chunks > devices);
  for (std::size_t d = 0; d < devices; ++d) {
    CHECK(r.report.devices[d].verified == 4);
    CHECK_THAT(r.report.devices[d].path, Catch::Contains("broadcast to it by NCCL 2.28.9"));
  }
  CHECK(f.inits() == 1);
  CHECK(f.groups() == static_cast<long>(r.report.chunks));  // one group per chunk
  CHECK(f.broadcasts() == static_cast<long>(r.report.chunks * devices));
  CHECK(f.destroyed() == static_cast<long>(devices));  // once the load is done
  CHECK(f.aborted() == 0);
}

TEST_CASE("fanout::load: NCCL's failures on the nccl route are typed errors", "[errors]") {
  fake f;
  const st::checkpoint ck(model_file());
  auto p = pipelines(2);
  const auto o = nccl_options();
  SECTION("the communicators cannot be made") {
    f.fail(1);
    CHECK_THROWS_MATCHES(fo::load(std::span(p), ck, o), lris::device_error,
                         what_contains("nccl_route_test.safetensors") &&
                             what_contains("ncclCommInitAll for devices 0, 1 failed: unhandled "
                                           "cuda error (1): injected by the test"));
    CHECK(f.destroyed() + f.aborted() == 0);
  }
  SECTION("a broadcast is refused") {
    f.fail(2);
    CHECK_THROWS_MATCHES(fo::load(std::span(p), ck, o), lris::rank_error,
                         what_contains("device 0 (host:0, rank 0 of 1): chunk 0") &&
                             what_contains("broadcast from host:0") &&
                             what_contains("internal error (3)"));
    CHECK(f.aborted() == 2);
    CHECK(f.destroyed() == 0);
  }
  SECTION("a communicator reports an asynchronous error") {
    f.fail(3);
    CHECK_THROWS_MATCHES(fo::load(std::span(p), ck, o), lris::rank_error,
                         what_contains("device 0 (host:0, rank 0 of 1)") &&
                             what_contains("unhandled system error (2)") &&
                             !what_contains("injected by the test"));
    CHECK(f.aborted() == 2);
  }
  SECTION("the communicators are not made in time") {
    f.fail(4);
    auto slow = o;
    slow.timeout = std::chrono::milliseconds(200);
    const auto t0 = std::chrono::steady_clock::now();
    CHECK_THROWS_MATCHES(fo::load(std::span(p), ck, slow), lris::rank_timeout,
                         what_contains("NCCL's communicators were not made within 200 ms"));
    // The caller was not held for the set-up; the group made after it gave up goes away.
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(1400));
    for (int i = 0; i < 100 && f.destroyed() < 2; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    CHECK(f.destroyed() == 2);
  }
  // The pipelines and the loader work on afterwards.
  f.fail(0);
  const auto r = fo::load(std::span(p), ck, o);
  CHECK(r.report.path == fo::fan_path::nccl);
}

TEST_CASE("fanout::load: loads on the nccl route take turns") {
  fake f;
  const st::checkpoint ck(model_file());
  auto o = nccl_options();
  o.verify = true;
  // Two loads at once from two threads, each with pipelines of its own (one context): the
  // stand-in keeps no lock of its own, so running them together would race on it too.
  std::vector<std::thread> loads;
  std::vector<std::size_t> verified(2, 0);
  for (int k = 0; k < 2; ++k) {
    loads.emplace_back([&, k] {
      auto p = pipelines(2);
      verified[k] = fo::load(std::span(p), ck, o).report.devices[1].verified;
    });
  }
  for (auto& t : loads) t.join();
  CHECK(verified == std::vector<std::size_t>{4, 4});
  CHECK(f.inits() == 2);
  CHECK(f.most_groups_at_once() == 1);
}

TEST_CASE("nccl_library: the stand-in loads and names its version") {
  const fo::nccl_library lib("cuda", LRIS_FAKE_NCCL);
  REQUIRE(lib.available());
  CHECK(lib.describe() == std::string("NCCL 2.28.9 (") + LRIS_FAKE_NCCL + ")");
  CHECK_THROWS_MATCHES(fo::nccl_group(lib, {}), lris::invalid_argument,
                       what_contains("nccl_group: no device"));
}
