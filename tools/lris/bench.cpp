// lris bench: every transfer path at several sizes, each with its ratio to the ceiling measured
// in the same run.
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <lris/lris.hpp>

#include "commands.hpp"
#include "measure.hpp"

namespace lris::tool {

namespace {

struct row {
  std::string name;     // what is measured
  std::vector<std::string> paths;  // per size, the path LRIS took ("-" for baselines)
  std::vector<double> gbps;
};

struct bench_options {
  std::vector<std::string> sizes{"64K", "1M", "16M", "256M", "1G"};
  bool json = false;
  double seconds = 0.05;
};

// Host buffers for every row, sized for the largest transfer, touched before timing.
struct buffers {
  explicit buffers(std::size_t n)
      : bytes(n),
        src(std::make_unique<std::byte[]>(n)),
        dst(std::make_unique<std::byte[]>(n)),
        dev(backend.allocate_device(n)),
        pinned(backend.allocate_pinned(n)) {
    std::memset(src.get(), 0x3c, n);
    prefault(dst.get(), n);
    prefault(dev, n);
    prefault(pinned, n);
  }
  ~buffers() {
    backend.deallocate_device(dev, bytes);
    backend.deallocate_pinned(pinned, bytes);
  }
  host_backend backend;
  std::size_t bytes;
  std::unique_ptr<std::byte[]> src, dst;
  void* dev;
  void* pinned;
};

}  // namespace

command add_bench(CLI::App& app) {
  auto o = std::make_shared<bench_options>();
  app.add_option("--sizes", o->sizes, "transfer sizes (e.g. 64K 1M 1G)")->delimiter(',');
  app.add_option("--seconds", o->seconds, "minimum time per measurement")->check(CLI::PositiveNumber);
  app.add_flag("--json", o->json, "machine-readable output");
  return [o] {
    std::vector<std::size_t> sizes;
    for (const auto& s : o->sizes) sizes.push_back(parse_size(s));
    std::sort(sizes.begin(), sizes.end());
    const host_info info = probe_host();
    std::size_t largest = sizes.back();
    // Four buffers of the largest size must fit comfortably.
    if (info.memory.available_bytes && largest * 4 > info.memory.available_bytes / 2) {
      throw invalid_argument(fmt::format(
          "--sizes: {} needs {} of memory for its buffers but only {} is available",
          format_bytes(largest), format_bytes(largest * 4), format_bytes(info.memory.available_bytes)));
    }
    const unsigned threads = std::max(1u, info.cpu.allowed_threads);
    const bool tty = !o->json && ::isatty(STDERR_FILENO) == 1;
    if (tty) fmt::print(stderr, "lris bench: measuring the host memory-copy ceiling...\n");
    buffers b(largest);
    const ceiling c = measure_host_copy_ceiling(b.dst.get(), b.src.get(), largest, threads);

    auto& hp = default_pipeline<host_backend>();
    pipeline<staged, host_backend> forced_staged;
    using dev_span = device_span<host_backend>;
    using pin_span = pinned_span<host_backend>;
    auto src = [&](std::size_t n) { return as_host(b.src.get(), n); };
    auto dst = [&](std::size_t n) { return as_host(b.dst.get(), n); };
    auto dev = [&](std::size_t n) { return dev_span(static_cast<std::byte*>(b.dev), n); };
    auto pin = [&](std::size_t n) { return pin_span(static_cast<std::byte*>(b.pinned), n); };

    struct path_def {
      std::string name;
      std::function<transfer_stats(std::size_t)> run;  // returns the stats of one transfer
    };
    std::vector<path_def> paths = {
        {"memcpy, 1 thread (baseline)",
         [&](std::size_t n) {
           std::memcpy(b.dst.get(), b.src.get(), n);
           return transfer_stats{};
         }},
        {"host -> host, lris::copy",
         [&](std::size_t n) { return lris::copy(dst(n), src(n)).wait(); }},
        {"host -> host, staged policy",
         [&](std::size_t n) { return forced_staged.copy(dst(n), src(n)).wait(); }},
        {"pageable -> device (host backend)",
         [&](std::size_t n) { return hp.copy(dev(n), src(n)).wait(); }},
        {"device -> pageable (host backend)",
         [&](std::size_t n) { return hp.copy(dst(n), dev(n)).wait(); }},
        {"pinned -> device (host backend)",
         [&](std::size_t n) { return hp.copy(dev(n), pin(n)).wait(); }},
    };
    std::vector<row> rows;
    for (auto& p : paths) {
      row r{p.name, {}, {}};
      for (std::size_t n : sizes) {
        if (tty) fmt::print(stderr, "\r  {:<40} {:>10}...", p.name, size_label(n));
        transfer_stats last;
        r.gbps.push_back(measure_gbps(n, [&] { last = p.run(n); }, 5, o->seconds));
        r.paths.emplace_back(last.policy.empty() ? "-" : to_string(last.path));
      }
      rows.push_back(std::move(r));
    }

    if (o->json) {
      nlohmann::json j;
      j["ceiling"] = {{"what", "plain memcpy on a started thread team, one slice per thread, best thread count"},
                      {"gbps", c.gbps}, {"threads", c.threads}, {"bytes", largest}};
      j["rows"] = nlohmann::json::array();
      for (const auto& r : rows) {
        for (std::size_t i = 0; i < sizes.size(); ++i) {
          j["rows"].push_back({{"name", r.name}, {"path", r.paths[i]}, {"bytes", sizes[i]},
                               {"gbps", r.gbps[i]}, {"ratio", r.gbps[i] / c.gbps}});
        }
      }
      fmt::print("{}\n", j.dump(2));
      return 0;
    }
    if (tty) fmt::print(stderr, "\r{:60}\r", "");
    fmt::print("Ceiling: host memory copy {:.1f} GB/s (plain memcpy on a team of {} threads, {}), measured "
               "in this run.\nEach cell: GB/s, ratio to the ceiling, path (d direct, p parallel, "
               "s staged, - not LRIS).\n\n",
               c.gbps, c.threads, size_label(largest));
    fmt::print("{:<36}", "transfer");
    for (std::size_t n : sizes) fmt::print("{:>18}", size_label(n));
    fmt::print("\n");
    for (const auto& r : rows) {
      fmt::print("{:<36}", r.name);
      for (std::size_t i = 0; i < sizes.size(); ++i) {
        fmt::print("{:>18}", fmt::format("{:.1f} {:.2f} {}", r.gbps[i], r.gbps[i] / c.gbps,
                                         r.paths[i].substr(0, 1)));
      }
      fmt::print("\n");
    }
    return 0;
  };
}

}  // namespace lris::tool
