// bandwidth_monitor on a fake clock: a steady rate, a step, idle decay, utilization against
// the ceiling, external sources, concurrent records, and bad input; NVML where it is.
#include <catch2/catch.hpp>

#include "support/what_contains.hpp"

#include <atomic>
#include <chrono>
#include <cmath>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <lris/error.hpp>
#include <lris/sched/bandwidth_monitor.hpp>
#include <lris/sched/nvml_pcie.hpp>

using lris::sched::bandwidth_monitor;
using namespace std::chrono_literals;

namespace {

struct fake_clock {
  std::chrono::nanoseconds t{0};
  lris::sched::monitor_options options(double alpha = 0.25) {
    lris::sched::monitor_options o;
    o.alpha = alpha;
    o.clock = [this] { return t; };
    return o;
  }
};

}  // namespace

TEST_CASE("monitor: a steady rate, then a step, then idle", "[sched]") {
  fake_clock clock;
  bandwidth_monitor m(clock.options());
  const auto link = m.add_resource("cuda:0 h2d", 50.0);
  // 10 GB/s: 1 MB every 100 us, for 1 s.
  for (int i = 0; i < 10000; ++i) {
    clock.t += 100us;
    m.record(link, 1'000'000);
  }
  auto r = m.reading(link);
  CHECK(r.name == "cuda:0 h2d");
  CHECK(r.gbps == Approx(10.0).epsilon(0.01));
  CHECK(r.utilization == Approx(0.2).epsilon(0.01));
  CHECK(r.bytes == 10'000'000'000ull);
  // 20 GB/s for 5 windows: the average moves 1 - 0.75^5 of the way.
  for (int i = 0; i < 500; ++i) {
    clock.t += 100us;
    m.record(link, 2'000'000);
  }
  clock.t += 1ns;  // the last window has ended
  r = m.reading(link);
  const double moved = 1 - std::pow(0.75, 5);
  CHECK(r.gbps == Approx(10 + 10 * moved).epsilon(0.02));
  // Idle for 4 windows: the average decays by 0.75 per window.
  const double before = r.gbps;
  clock.t += 40ms;
  CHECK(m.reading(link).gbps == Approx(before * std::pow(0.75, 4)).epsilon(0.02));
  // A resource of unknown ceiling reports no utilization.
  const auto disk = m.add_resource("nvme0n1", 0);
  clock.t += 10ms;
  m.record(disk, 30'000'000);
  clock.t += 10ms;
  CHECK(m.reading(disk).utilization == 0);
  CHECK(m.reading(disk).gbps == Approx(0.25 * 3.0));
  CHECK(m.readings().size() == 2);
}

TEST_CASE("monitor: records from many threads all count", "[sched]") {
  bandwidth_monitor m;
  const auto host = m.add_resource("host", 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) m.record(host, 4096);
    });
  }
  for (auto& t : threads) t.join();
  CHECK(m.reading(host).bytes == 8ull * 10000 * 4096);
}

TEST_CASE("monitor: bad input is refused, naming it", "[sched][errors]") {
  using lris::test::what_contains;
  lris::sched::monitor_options o;
  o.alpha = 0;
  CHECK_THROWS_MATCHES(bandwidth_monitor(o), lris::invalid_argument, what_contains("alpha 0"));
  o.alpha = 0.5;
  o.window = 0ns;
  CHECK_THROWS_MATCHES(bandwidth_monitor(o), lris::invalid_argument, what_contains("window of 0"));
  bandwidth_monitor m;
  CHECK_THROWS_MATCHES(m.add_resource("x", -1), lris::invalid_argument, what_contains("resource x"));
  CHECK_THROWS_MATCHES(m.record(3, 1), lris::invalid_argument, what_contains("no resource 3"));
  CHECK_THROWS_MATCHES((void)m.reading(0), lris::invalid_argument, what_contains("no resource 0"));
}

TEST_CASE("monitor: an external source is sampled by its own thread and counts in utilization",
          "[sched]") {
  fake_clock clock;
  auto o = clock.options();
  o.external_period = 1ms;
  std::atomic<int> samples{0};
  std::atomic<bool> fail{false};
  {
    bandwidth_monitor m(o);
    const auto own = m.add_resource("host", 10.0);
    const auto link = m.add_resource("cuda:0 h2d", 50.0, [&]() -> std::optional<double> {
      ++samples;
      if (fail) throw std::runtime_error("driver gone");
      return 30.0;
    });
    const auto none = m.add_resource("cuda:0 d2h", 50.0, [] { return std::optional<double>{}; });
    CHECK(samples == 0);  // not sampled before anyone reads
    auto r = m.reading(link);  // starts the sampler
    for (int i = 0; i < 2000 && !r.external; ++i) {
      std::this_thread::sleep_for(1ms);
      r = m.reading(link);
    }
    REQUIRE(r.external);
    CHECK(r.external_gbps == Approx(30.0));
    CHECK(r.gbps == 0);
    CHECK(r.utilization == Approx(0.6));  // the busier of the two over the ceiling
    CHECK_FALSE(m.reading(own).external);
    CHECK_FALSE(m.reading(none).external);  // no sample to be had
    // More own traffic than the external measure: the larger counts.
    for (int i = 0; i < 3000; ++i) {  // 300 ms: the average settles
      clock.t += 100us;
      m.record(link, 4'500'000);  // 45 GB/s
    }
    r = m.reading(link);
    CHECK(r.utilization == Approx(r.gbps / 50.0));
    CHECK(r.gbps > 40);
    // A source that throws has no sample, and the sampler goes on.
    fail = true;
    for (int i = 0; i < 2000 && m.reading(link).external; ++i) std::this_thread::sleep_for(1ms);
    CHECK_FALSE(m.reading(link).external);
  }  // the destructor stops the sampler
  const int after = samples;
  std::this_thread::sleep_for(5ms);
  CHECK(samples == after);
}

TEST_CASE("nvml: loaded when the driver is there, else says why", "[sched]") {
  const lris::sched::nvml_pcie nvml;
  if (!nvml.available()) {
    CHECK_FALSE(nvml.why().empty());
    CHECK_FALSE(nvml.read(0).has_value());
    CHECK_FALSE(nvml.read_gbps("0000:01:00.0", true).has_value());
    CHECK_FALSE(nvml.link("0000:01:00.0", "0000:02:00.0").has_value());
    return;
  }
  CHECK(nvml.why().empty());
  const auto r = nvml.read(0);
  REQUIRE(r.has_value());
  CHECK(r->to_device_gbps >= 0);
  CHECK(r->from_device_gbps >= 0);
  CHECK_FALSE(nvml.read(1000).has_value());
  CHECK_FALSE(nvml.read_gbps("ffff:ff:1f.7", true).has_value());  // no such GPU
  CHECK_FALSE(nvml.link("ffff:ff:1f.7", "ffff:ff:1f.6").has_value());
}

TEST_CASE("nvml: PCIe levels are described in words", "[sched]") {
  CHECK(std::string(lris::sched::describe_pcie_level(10)) == "one PCIe switch");
  CHECK(std::string(lris::sched::describe_pcie_level(50)) == "the CPUs' interconnect");
  CHECK(std::string(lris::sched::describe_pcie_level(-1)) == "an unknown path");
  CHECK(std::string(lris::sched::describe_pcie_level(7)) == "an unknown path");
}
