// lris bench: every transfer path at several sizes, each with its ratio to the ceiling measured
// in the same run.
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <lris/lris.hpp>

#include "../common/raw_copy_team.hpp"
#include "bench_table.hpp"
#include "contention_bench.hpp"
#include "commands.hpp"
#include "disk_bench.hpp"
#include "measure.hpp"

namespace lris::tool {

namespace {

struct bench_options {
  std::vector<std::string> sizes{"64K", "1M", "16M", "256M", "1G"};
  bool json = false;
  double seconds = 0.05;
  std::string disk;           // run the disk tables in this directory
  std::string disk_file;
  std::string disk_size = "4G";
  int disk_repeats = 3;
  bool disk_only = false;
  bool verbose = false;
  bool contention = false;
  unsigned contention_samples = 200;
  unsigned contention_in_flight_us = 0;
  std::string contention_direction = "h2d";
  long long contention_spin_us = -1;
  // The second process of the two-process contention modes (internal).
  std::string child_backend, child_shared;
  double child_ceiling = 0, child_seconds = 0;
  long long child_start = 0;
};

// Host buffers for every row, sized for the largest transfer, touched before timing.
struct host_buffers {
  explicit host_buffers(std::size_t n)
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
  ~host_buffers() {
    backend.deallocate_device(dev, bytes);
    backend.deallocate_pinned(pinned, bytes);
  }
  host_backend backend;
  std::size_t bytes;
  std::unique_ptr<std::byte[]> src, dst;
  void* dev;
  void* pinned;
};

bench_table host_bench(const std::vector<std::size_t>& sizes, unsigned threads, double seconds,
                       bool tty) {
  const std::size_t largest = sizes.back();
  if (tty) fmt::print(stderr, "lris bench: measuring the host memory-copy ceiling...\n");
  host_buffers b(largest);
  const ceiling c = measure_host_copy_ceiling(b.dst.get(), b.src.get(), largest, threads);
  bench_table t{"Host paths (host backend)",
                fmt::format("host memory copy {:.1f} GB/s: plain memcpy on a team of {} threads, "
                            "{}, measured in this run",
                            c.gbps, c.threads, size_label(largest)),
                sizes, {}};

  auto& hp = default_pipeline<host_backend>();
  pipeline<staged, host_backend> forced_staged;
  auto src = [&](std::size_t n) { return as_host(b.src.get(), n); };
  auto dst = [&](std::size_t n) { return as_host(b.dst.get(), n); };
  auto dev = [&](std::size_t n) {
    return device_span<host_backend>(static_cast<std::byte*>(b.dev), n);
  };
  auto pin = [&](std::size_t n) {
    return pinned_span<host_backend>(static_cast<std::byte*>(b.pinned), n);
  };
  // What N devices reading host memory by DMA share (a fan-out reads every byte N times).
  raw_copy_team readers(std::max(1u, std::thread::hardware_concurrency()));
  volatile std::uint64_t sink = 0;
  add_row(t, fmt::format("memory read, team of {} threads (sum)", readers.threads()), c.gbps,
          [&](std::size_t n) {
            sink = sink + readers.read(b.src.get(), n & ~std::size_t{7});
            return transfer_stats{};
          }, seconds, tty);
  add_row(t, "memcpy, 1 thread (baseline)", c.gbps, [&](std::size_t n) {
    std::memcpy(b.dst.get(), b.src.get(), n);
    return transfer_stats{};
  }, seconds, tty);
  add_row(t, "host -> host, lris::copy", c.gbps,
          [&](std::size_t n) { return lris::copy(dst(n), src(n)).wait(); }, seconds, tty);
  add_row(t, "host -> host, staged policy", c.gbps,
          [&](std::size_t n) { return forced_staged.copy(dst(n), src(n)).wait(); }, seconds, tty);
  add_row(t, "pageable -> device (host backend)", c.gbps,
          [&](std::size_t n) { return hp.copy(dev(n), src(n)).wait(); }, seconds, tty);
  add_row(t, "device -> pageable (host backend)", c.gbps,
          [&](std::size_t n) { return hp.copy(dst(n), dev(n)).wait(); }, seconds, tty);
  add_row(t, "pinned -> device (host backend)", c.gbps,
          [&](std::size_t n) { return hp.copy(dev(n), pin(n)).wait(); }, seconds, tty);
  return t;
}

}  // namespace

void add_row(bench_table& t, std::string name, double ceiling, const bench_op& op,
             double seconds, bool tty) {
  bench_row r{std::move(name), ceiling, {}, {}};
  for (std::size_t n : t.sizes) {
    if (tty) fmt::print(stderr, "\r  {:<46} {:>10}...", r.name, size_label(n));
    transfer_stats last;
    r.gbps.push_back(measure_gbps(n, [&] { last = op(n); }, 5, seconds));
    r.paths.emplace_back(last.policy.empty() ? "-" : to_string(last.path));
  }
  if (tty) fmt::print(stderr, "\r{:66}\r", "");
  t.rows.push_back(std::move(r));
}

// One letter per path for the table cells; "-" for rows that are not LRIS.
char path_letter(const std::string& path) {
  if (path == "packed") return 'k';
  return path.empty() ? '-' : path.front();
}

void print_table(const bench_table& t) {
  fmt::print("{}\nCeiling: {}.\nEach cell: GB/s, ratio to the ceiling, path (d direct, "
             "p parallel, s staged, b batched, k packed, - not LRIS).\n\n",
             t.title, t.ceiling_note);
  fmt::print("{:<46}", "transfer");
  for (std::size_t n : t.sizes) fmt::print("{:>18}", size_label(n));
  fmt::print("\n");
  for (const auto& r : t.rows) {
    fmt::print("{:<46}", r.name);
    for (std::size_t i = 0; i < t.sizes.size(); ++i) {
      fmt::print("{:>18}", fmt::format("{:.1f} {:.2f} {}", r.gbps[i], r.gbps[i] / r.ceiling,
                                       path_letter(r.paths[i])));
    }
    fmt::print("\n");
  }
  fmt::print("\n");
}

nlohmann::json table_json(const bench_table& t) {
  nlohmann::json j{{"title", t.title}, {"ceiling", t.ceiling_note}, {"rows", nlohmann::json::array()}};
  for (const auto& r : t.rows) {
    for (std::size_t i = 0; i < t.sizes.size(); ++i) {
      j["rows"].push_back({{"name", r.name}, {"path", r.paths[i]}, {"bytes", t.sizes[i]},
                           {"gbps", r.gbps[i]}, {"ceiling_gbps", r.ceiling},
                           {"ratio", r.gbps[i] / r.ceiling}});
    }
  }
  return j;
}

// The contention modes as a table: latency of the critical transfer and aggregate throughput.
void print_contention(const nlohmann::json& j) {
  fmt::print("Contention on {}: a critical {} transfer ({}) every 1-3 ms while {} "
             "background transfers of {} each saturate the link.\nCeiling: {:.1f} GB/s, {}.\n\n",
             j["backend"].get<std::string>(), size_label(j["critical_bytes"].get<std::size_t>()),
             j["direction"].get<std::string>(),
             j["background_transfers"].get<unsigned>(),
             size_label(j["background_bytes_each"].get<std::size_t>()),
             j["link_ceiling_gbps"].get<double>(), j["ceiling_note"].get<std::string>());
  fmt::print("{:<30}{:>9}{:>9}{:>11}{:>16}{:>18}{:>11}\n", "mode", "p50 ms", "p99 ms", "p99/alone",
             "aggregate GB/s", "vs uncoordinated", "CPU cores");
  const double alone = j["alone_coordinated"]["p99_ms"].get<double>();
  for (const char* mode : {"alone_uncoordinated", "alone_coordinated", "uncoordinated",
                           "coordinated", "coordinated_throttle", "coordinated_fallback",
                           "two_process_uncoordinated", "two_process_coordinated"}) {
    if (!j.contains(mode)) continue;
    const auto& m = j[mode];
    std::string vs = "-";
    if (j.contains("summary") && j["summary"].contains(mode)) {
      vs = fmt::format("{:.2f}", j["summary"][mode]["aggregate_vs_uncoordinated"].get<double>());
    }
    fmt::print("{:<30}{:>9.2f}{:>9.2f}{:>11.2f}{:>16.1f}{:>18}{:>11.2f}\n", mode,
               m["p50_ms"].get<double>(), m["p99_ms"].get<double>(),
               m["p99_ms"].get<double>() / alone, m["aggregate_gbps"].get<double>(), vs,
               m["cpu_cores"].get<double>());
  }
  fmt::print("\nCPU cores: this process's CPU time over the timed window (in the two-process modes, "
             "the critical copies' process only).\n"
             "The throttle's decisions are in --json (\"throttle\", \"resources\").\n");
}

command add_bench(CLI::App& app) {
  auto o = std::make_shared<bench_options>();
  app.add_option("--sizes", o->sizes, "transfer sizes (e.g. 64K 1M 1G)")->delimiter(',');
  app.add_option("--seconds", o->seconds, "minimum time per measurement")->check(CLI::PositiveNumber);
  app.add_flag("--json", o->json, "machine-readable output");
  app.add_option("--disk", o->disk, "also measure file reads and writes, with a test file in "
                 "this directory (on the disk to measure; not tmpfs)");
  app.add_option("--disk-file", o->disk_file, "read this existing file in the disk tables "
                 "(whole 4 KiB blocks of it) instead of writing a test file");
  app.add_option("--disk-size", o->disk_size, "size of the disk test file (default 4G)");
  app.add_option("--disk-repeats", o->disk_repeats, "runs per disk row; the median is shown")
      ->check(CLI::PositiveNumber);
  app.add_flag("--disk-only", o->disk_only, "only the disk tables");
  app.add_flag("--verbose", o->verbose, "progress and the io engine's choices on stderr, even "
               "when it is not a terminal");
  app.add_flag("--contention", o->contention, "instead of the tables: a critical 64 MiB "
               "transfer's latency while 4 background transfers saturate the same link "
               "direction, without and with the broker, in one process and in two");
  app.add_option("--contention-samples", o->contention_samples, "critical transfers per mode")
      ->check(CLI::PositiveNumber);
  app.add_option("--contention-in-flight-us", o->contention_in_flight_us,
                 "the broker's work in flight per resource, in microseconds (its budget is "
                 "the link's ceiling times this; default 250)")
      ->check(CLI::PositiveNumber);
  app.add_option("--contention-direction", o->contention_direction,
                 "h2d (pinned -> device, the default) or d2h (device -> pinned)")
      ->check(CLI::IsMember({"h2d", "d2h"}));
  app.add_option("--contention-spin-us", o->contention_spin_us,
                 "the broker's spin, in microseconds: how long waits for link tokens spin "
                 "before they sleep (default 1000; 0: never)");
  auto* child = app.add_option("--contention-child", o->child_backend)->group("");
  app.add_option("--contention-shared", o->child_shared)->group("");
  app.add_option("--contention-ceiling", o->child_ceiling)->group("");
  app.add_option("--contention-start", o->child_start)->group("");
  app.add_option("--contention-seconds", o->child_seconds)->group("");
  return [o, child] {
    contention_options c;
    c.samples = o->contention_samples;
    c.in_flight = std::chrono::microseconds(o->contention_in_flight_us);
    c.spin = std::chrono::microseconds(o->contention_spin_us);
    c.to_device = o->contention_direction == "h2d";
    if (child->count() > 0) {
      return contention_child(c, o->child_backend, o->child_shared == "-" ? "" : o->child_shared,
                              o->child_ceiling, o->child_start, o->child_seconds);
    }
    if (o->contention) {
      c.tty = o->verbose || (!o->json && ::isatty(STDERR_FILENO) == 1);
      const nlohmann::json j = contention_bench(c);
      if (o->json) {
        fmt::print("{}\n", nlohmann::json{{"contention", j}}.dump(2));
      } else {
        print_contention(j);
      }
      return 0;
    }
    std::vector<std::size_t> sizes;
    for (const auto& s : o->sizes) sizes.push_back(parse_size(s));
    std::sort(sizes.begin(), sizes.end());
    const host_info info = probe_host();
    const std::size_t largest = sizes.back();
    // Four buffers of the largest size must fit comfortably.
    if (info.memory.available_bytes && largest * 4 > info.memory.available_bytes / 2) {
      throw invalid_argument(fmt::format(
          "--sizes: {} needs {} of memory for its buffers but only {} is available",
          format_bytes(largest), format_bytes(largest * 4), format_bytes(info.memory.available_bytes)));
    }
    const bool tty = o->verbose || (!o->json && ::isatty(STDERR_FILENO) == 1);
    std::vector<bench_table> tables;
    if (!o->disk_only) {
      tables.push_back(host_bench(sizes, std::max(1u, info.cpu.allowed_threads), o->seconds, tty));
#if LRIS_HAS_CUDA()
      for (auto& t : cuda_bench(sizes, o->seconds, tty)) tables.push_back(std::move(t));
#endif
    }
    if (!o->disk.empty() || o->disk_only) {
      disk_bench_options d{o->disk, o->disk_file, parse_size(o->disk_size), o->disk_repeats};
      for (auto& t : disk_bench(d, tty)) tables.push_back(std::move(t));
    }
    if (o->json) {
      nlohmann::json j{{"tables", nlohmann::json::array()}};
      for (const auto& t : tables) j["tables"].push_back(table_json(t));
      // The process's broker, which coordinated every row: its tokens and decisions.
      j["broker"] = status_json(*default_context()->broker());
      fmt::print("{}\n", j.dump(2));
    } else {
      for (const auto& t : tables) print_table(t);
    }
    return 0;
  };
}

}  // namespace lris::tool
