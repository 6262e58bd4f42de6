// lris calibrate --disk DIR: writes a test checkpoint (one tensor) in DIR, then loads it into
// host memory with every candidate cold-read method in turn, the page cache emptied of it
// before each load, rounds interleaved (a virtual disk drifts from minute to minute); the
// method with the best median is saved for the storage device that holds DIR.
#include "calibrate_disk.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <lris/formats/load.hpp>
#include <lris/formats/safetensors_writer.hpp>
#include <lris/lris.hpp>

#include "measure.hpp"

namespace lris::tool {

namespace {

struct candidate {
  disk_profile how;
  std::vector<double> rates;  // GB/s, a round each
};

std::string describe(const disk_profile& d) {
  switch (d.method) {
    case cold_read_method::direct: return fmt::format("O_DIRECT, {} workers", d.workers);
    case cold_read_method::buffered: return fmt::format("buffered, {} workers", d.workers);
    case cold_read_method::both:
      return fmt::format("both, {} workers, every {}nd chunk buffered", d.workers, d.buffered_every);
  }
  return "?";
}

// The test file, removed however the calibration ends.
struct test_file {
  std::filesystem::path path;
  ~test_file() {
    std::error_code ec;
    std::filesystem::remove(path, ec);
  }
};

}  // namespace

int calibrate_disk(const disk_calibration_options& o) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(o.dir)) {
    throw invalid_argument(fmt::format("calibrate --disk: {} is not a directory", o.dir.string()));
  }
  if (o.bytes < (std::size_t{64} << 20)) {
    throw invalid_argument(fmt::format("calibrate --disk-bytes: {} is too small (at least 64M: "
                                       "smaller reads time the device's latency, not its "
                                       "bandwidth)", o.bytes));
  }
  const bool tty = !o.json;
  test_file file{o.dir / fmt::format("lris-calibrate-disk-{}.safetensors", ::getpid())};
  {
    // Bytes a device cannot compress or deduplicate (some virtual disks do).
    buffer<page_aligned_allocator> data(o.bytes);
    std::uint64_t x = 0x9e3779b97f4a7c15ull;
    auto* words = reinterpret_cast<std::uint64_t*>(data.data());
    for (std::size_t i = 0; i < o.bytes / 8; ++i) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      words[i] = x;
    }
    if (tty) fmt::print(stderr, "  writing {} of test data to {}\n", size_label(o.bytes), file.path.string());
    const safetensors::tensor_view t{"data", dtype::U8, {o.bytes}, {data.data(), o.bytes}};
    (void)safetensors::save_file(file.path, {&t, 1});
  }
  const safetensors::checkpoint ck(file.path);
  const std::string disk = sched::storage_resource(ck.shards().front().file.fd());

  std::vector<candidate> methods;
  auto add = [&](cold_read_method how, unsigned workers) {
    candidate c;
    c.how.method = how;
    c.how.workers = workers;
    c.how.source = "a candidate of lris calibrate --disk";
    methods.push_back(std::move(c));
  };
  for (const unsigned w : {4u, 8u, 16u}) add(cold_read_method::direct, w);
  for (const unsigned w : {8u, 16u}) add(cold_read_method::buffered, w);
  for (const unsigned w : {8u, 16u}) add(cold_read_method::both, w);

  pipeline<auto_select, host_backend> p;
  std::string cold_note;
  for (int r = 0; r < o.rounds; ++r) {
    // Each round in another order: the first read after an eviction can be faster or slower.
    for (std::size_t k = 0; k < methods.size(); ++k) {
      candidate& m = methods[(k + static_cast<std::size_t>(r)) % methods.size()];
      cold_note = make_cold(file.path.string());
      safetensors::load_options lo;
      lo.transfer.cold_reads = m.how;
      const auto start = std::chrono::steady_clock::now();
      const auto loaded = safetensors::load(p, ck, lo, safetensors::load_target_memory::host);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      m.rates.push_back(static_cast<double>(loaded.report.file_bytes) / s / 1e9);
      if (tty) fmt::print(stderr, "  round {}: {:<45} {:6.2f} GB/s\n", r + 1, describe(m.how), m.rates.back());
    }
  }
  const auto best = std::max_element(methods.begin(), methods.end(), [](const candidate& a, const candidate& b) {
    return median(a.rates) < median(b.rates);
  });
  disk_profile chosen = best->how;
  chosen.read_gbps = median(best->rates);
  if (!o.dry_run) save_disk_profile(o.profile, disk, chosen);

  if (o.json) {
    nlohmann::json j{{"disk", disk},
                     {"dir", o.dir.string()},
                     {"bytes", o.bytes},
                     {"cold", cold_note},
                     {"chosen", {{"method", std::string(to_string(chosen.method))},
                                 {"workers", chosen.workers},
                                 {"buffered_every", chosen.buffered_every},
                                 {"read_gbps", chosen.read_gbps}}},
                     {"saved_to", o.dry_run ? "" : o.profile.string()}};
    for (const auto& m : methods) j["methods"][describe(m.how)] = m.rates;
    fmt::print("{}\n", j.dump(2));
    return 0;
  }
  fmt::print("Cold reads of {} ({}), {} per load, median of {}: {}\n", o.dir.string(), disk,
             size_label(o.bytes), o.rounds, cold_note);
  for (const auto& m : methods) {
    fmt::print("  {:<45} {:6.2f} GB/s{}\n", describe(m.how), median(m.rates),
               &m == &*best ? (o.dry_run ? "  (the best)" : "  (the best: saved)") : "");
  }
  fmt::print("{}\n", o.dry_run ? "(dry run: not saved)"
                               : fmt::format("Saved to {} as \"{}\"", o.profile.string(), disk));
  return 0;
}

}  // namespace lris::tool
