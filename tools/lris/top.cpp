// lris top: every shared bandwidth broker resource (shared semaphores in /dev/shm: capacity,
// bytes in flight, achieved GB/s over the refresh, holders and waiters per process and
// priority) and every host pool on the machine, refreshed in place like top; --json prints one
// sample.
#include <unistd.h>

#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <lris/error.hpp>
#include <lris/pool/host_pool.hpp>
#include <lris/priority.hpp>
#include <lris/sched/shared_semaphore.hpp>
#include <lris/system/format_bytes.hpp>

#include "commands.hpp"

namespace lris::tool {

namespace {

struct top_cli {
  double interval = 1.0;
  int count = 0;  // 0: until interrupted
  bool json = false;
};

using snapshot = sched::shared_semaphore_snapshot;

std::map<std::string, snapshot> sample() {
  std::map<std::string, snapshot> out;
  for (const auto& n : sched::shared_semaphore::list()) {
    if (auto s = sched::shared_semaphore::inspect(n)) out.emplace(n, std::move(*s));
  }
  return out;
}

// Per process: bytes held, and bytes waited for per priority.
struct by_process {
  std::uint64_t held = 0;
  std::uint64_t waiting[priority_count] = {};
  unsigned waiters[priority_count] = {};
};

std::map<std::int32_t, by_process> processes(const snapshot& s) {
  std::map<std::int32_t, by_process> out;
  for (const auto& h : s.holders) out[h.pid].held += h.bytes;
  for (const auto& w : s.waiters) {
    const auto p = std::min<std::uint32_t>(w.priority, priority_count - 1);
    out[w.pid].waiting[p] += w.bytes;
    ++out[w.pid].waiters[p];
  }
  return out;
}

nlohmann::json to_json(const std::map<std::string, snapshot>& now,
                       const std::map<std::string, snapshot>& before, double seconds,
                       const std::vector<pool::pool_info>& pools) {
  nlohmann::json out{{"interval_seconds", seconds}, {"resources", nlohmann::json::array()},
                     {"pools", nlohmann::json::array()}};
  for (const auto& [name, s] : now) {
    const auto b = before.find(name);
    const std::uint64_t moved = b == before.end() ? 0 : s.granted_bytes - b->second.granted_bytes;
    nlohmann::json r{{"name", name},
                     {"capacity", s.capacity},
                     {"in_flight", s.in_flight},
                     {"utilization", s.capacity ? static_cast<double>(s.in_flight) / s.capacity : 0.0},
                     {"gbps", seconds > 0 ? static_cast<double>(moved) / seconds / 1e9 : 0.0},
                     {"grants", s.grants},
                     {"processes", nlohmann::json::array()}};
    for (const auto& [pid, p] : processes(s)) {
      nlohmann::json e{{"pid", pid}, {"held", p.held}};
      for (std::size_t k = 0; k < priority_count; ++k) {
        const std::string n(to_string(static_cast<priority>(k)));
        e[fmt::format("waiting_{}", n)] = p.waiting[k];
        e[fmt::format("waiters_{}", n)] = p.waiters[k];
      }
      r["processes"].push_back(e);
    }
    out["resources"].push_back(r);
  }
  for (const auto& i : pools) {
    out["pools"].push_back({{"name", i.name}, {"data_bytes", i.data_bytes},
                            {"used_bytes", i.used_bytes}, {"tensors", i.tensors},
                            {"filling", i.filling}, {"users", i.users},
                            {"numa_node", i.numa_node}, {"persistent", i.persistent}});
  }
  return out;
}

std::string text(const nlohmann::json& j) {
  std::string out = fmt::format("lris top: every {:.1f} s\n\nshared broker resources ({}):\n",
                                j["interval_seconds"].get<double>(), j["resources"].size());
  if (j["resources"].empty()) {
    out += "  none (processes share one with LRIS_SHARED_BROKER=NAME)\n";
  }
  for (const auto& r : j["resources"]) {
    out += fmt::format("  {:<32} {:>8.2f} GB/s  {:>5.1f}% of {} in flight  {} grants\n",
                       r["name"].get<std::string>(), r["gbps"].get<double>(),
                       100 * r["utilization"].get<double>(),
                       format_bytes(r["capacity"].get<std::uint64_t>()), r["grants"].get<std::uint64_t>());
    for (const auto& p : r["processes"]) {
      out += fmt::format("    pid {:<8} holds {:>10}  waits: critical {} ({}), normal {} ({}), "
                         "background {} ({})\n", p["pid"].get<int>(),
                         format_bytes(p["held"].get<std::uint64_t>()),
                         p["waiters_critical"].get<unsigned>(),
                         format_bytes(p["waiting_critical"].get<std::uint64_t>()),
                         p["waiters_normal"].get<unsigned>(),
                         format_bytes(p["waiting_normal"].get<std::uint64_t>()),
                         p["waiters_background"].get<unsigned>(),
                         format_bytes(p["waiting_background"].get<std::uint64_t>()));
    }
  }
  out += fmt::format("\nhost pools ({}):\n", j["pools"].size());
  if (j["pools"].empty()) out += "  none (lris pool create NAME FILE makes one)\n";
  for (const auto& p : j["pools"]) {
    out += fmt::format("  {:<24} {:>10} of {:>10}  {} tensors, {} filling, {} users{}\n",
                       p["name"].get<std::string>(), format_bytes(p["used_bytes"].get<std::uint64_t>()),
                       format_bytes(p["data_bytes"].get<std::uint64_t>()),
                       p["tensors"].get<unsigned>(), p["filling"].get<unsigned>(),
                       p["users"].get<unsigned>(), p["persistent"].get<bool>() ? ", persistent" : "");
  }
  return out;
}

int run_top(const top_cli& c) {
  if (!(c.interval > 0)) {
    throw invalid_argument(fmt::format("top --interval {}: give a time above 0 s", c.interval));
  }
  const bool tty = ::isatty(STDOUT_FILENO) == 1 && !c.json;
  auto before = sample();
  for (int n = 0; c.count == 0 || n < (c.json ? 1 : c.count); ++n) {
    const auto start = std::chrono::steady_clock::now();
    std::this_thread::sleep_for(std::chrono::duration<double>(c.interval));
    auto now = sample();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const auto j = to_json(now, before, seconds, pool::host_pool::list());
    if (c.json) {
      fmt::print("{}\n", j.dump(2));
      return 0;
    }
    fmt::print("{}{}", tty ? "\x1b[H\x1b[2J" : (n ? "\n" : ""), text(j));
    std::fflush(stdout);
    before = std::move(now);
  }
  return 0;
}

}  // namespace

command add_top(CLI::App& app) {
  auto c = std::make_shared<top_cli>();
  app.add_option("--interval", c->interval, "seconds between samples")->capture_default_str();
  app.add_option("--count", c->count, "samples to print, then stop (0: until interrupted)");
  app.add_flag("--json", c->json, "print one sample (rates over one interval) as JSON");
  return [c] { return run_top(*c); };
}

}  // namespace lris::tool
