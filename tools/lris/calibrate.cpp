// lris calibrate: measures where each path starts to pay off on this machine and saves the
// thresholds auto_select reads.
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

struct calibrate_options {
  std::string output;
  std::string large = "1G";
  bool json = false;
  bool dry_run = false;
};

// The smallest size from which `fast` beats `slow` by 10% at that size and every larger one;
// `sizes.back() * 2` when it never does.
std::size_t crossover(const std::vector<std::size_t>& sizes,
                      const std::function<double(std::size_t)>& slow,
                      const std::function<double(std::size_t)>& fast, nlohmann::json& log,
                      const char* what) {
  std::size_t threshold = sizes.back() * 2;
  for (auto it = sizes.rbegin(); it != sizes.rend(); ++it) {
    const double s = slow(*it), f = fast(*it);
    log[what].push_back({{"bytes", *it}, {"direct_gbps", s}, {"chunked_gbps", f}});
    if (f < s * 1.10) break;
    threshold = *it;
  }
  return threshold;
}

}  // namespace

command add_calibrate(CLI::App& app) {
  auto o = std::make_shared<calibrate_options>();
  app.add_option("--output", o->output, "profile file (default: $LRIS_PROFILE or "
                 "~/.config/lris/profile.json)");
  app.add_option("--large", o->large, "size used to tune workers, chunks and streams; larger "
                 "than the last-level cache (default 1G, less when memory is short)");
  app.add_flag("--json", o->json, "machine-readable output");
  app.add_flag("--dry-run", o->dry_run, "measure and print, but do not save");
  return [o] {
    const auto path = o->output.empty() ? default_profile_path() : std::filesystem::path(o->output);
    const host_info info = probe_host();
    std::size_t large = parse_size(o->large);
    LRIS_EXPECTS(large >= (std::size_t{16} << 20), "calibrate: --large {} is too small (at least 16M)",
                 o->large);
    // Three buffers of `large` must fit in a quarter of the available memory.
    if (info.memory.available_bytes && large * 3 > info.memory.available_bytes / 4) {
      large = std::max<std::size_t>(std::size_t{16} << 20,
                                    (info.memory.available_bytes / 12) & ~((std::size_t{1} << 20) - 1));
    }
    const unsigned threads = std::max(1u, info.cpu.allowed_threads);
    host_backend hb;
    auto src = std::make_unique<std::byte[]>(large);
    auto dst = std::make_unique<std::byte[]>(large);
    std::memset(src.get(), 0x5a, large);
    prefault(dst.get(), large);
    auto* dev = static_cast<std::byte*>(hb.allocate_device(large));
    std::unique_ptr<void, std::function<void(void*)>> dev_guard(
        dev, [&](void* p) { hb.deallocate_device(p, large); });
    prefault(dev, large);

    nlohmann::json log;
    transfer_profile prof;
    const bool tty = !o->json;
    auto say = [&](const std::string& s) {
      if (tty) fmt::print(stderr, "  {}\n", s);
    };
    pipeline<staged, host_backend> st;
    pipeline<direct, host_backend> di;
    auto h2h = [&](std::size_t n, const transfer_options& opt) {
      return measure_gbps(n, [&] { st.copy(as_host(dst.get(), n), as_host(src.get(), n), opt).wait(); });
    };
    auto h2d = [&](auto& p, std::size_t n, const transfer_options& opt) {
      return measure_gbps(n, [&] {
        p.copy(device_span<host_backend>(dev, n), as_host(src.get(), n), opt).wait();
      });
    };

    // 1. Workers for large host copies: the fewest within 5% of the best.
    std::vector<std::pair<unsigned, double>> by_workers;
    for (unsigned w = 1;; w = std::min(w * 2, threads)) {
      by_workers.emplace_back(w, h2h(large, {.chunk_bytes = std::size_t{4} << 20, .workers = w}));
      log["workers"].push_back({{"workers", w}, {"gbps", by_workers.back().second}});
      if (w >= threads) break;
    }
    const double best_w = std::max_element(by_workers.begin(), by_workers.end(),
                                           [](auto& a, auto& b) { return a.second < b.second; })->second;
    for (auto& [w, g] : by_workers) {
      if (g >= 0.95 * best_w) {
        prof.workers = w;
        break;
      }
    }
    say(fmt::format("workers: {} ({:.1f} GB/s at {})", prof.workers, best_w, size_label(large)));

    // 2. Chunk size with those workers.
    double best_c = 0;
    for (std::size_t c : {std::size_t{1} << 20, std::size_t{2} << 20, std::size_t{4} << 20,
                          std::size_t{8} << 20, std::size_t{16} << 20}) {
      const double g = h2h(large, {.chunk_bytes = c, .workers = prof.workers});
      log["chunk_bytes"].push_back({{"chunk_bytes", c}, {"gbps", g}});
      if (g > best_c * 1.02) {
        best_c = g;
        prof.chunk_bytes = c;
      }
    }
    say(fmt::format("chunk: {} ({:.1f} GB/s)", size_label(prof.chunk_bytes), best_c));

    // 3. Where splitting a host copy over threads starts to pay.
    std::vector<std::size_t> sizes;
    for (std::size_t n = 64 << 10; n <= std::min<std::size_t>(large, 64 << 20); n *= 4) sizes.push_back(n);
    prof.parallel_min_bytes = crossover(
        sizes,
        [&](std::size_t n) {
          return measure_gbps(n, [&] { std::memcpy(dst.get(), src.get(), n); });
        },
        [&](std::size_t n) {
          return h2h(n, {.chunk_bytes = std::max<std::size_t>(n / prof.workers, 64 << 10),
                         .workers = prof.workers});
        },
        log, "parallel_min_bytes");
    say(fmt::format("parallel host copies from {}", size_label(prof.parallel_min_bytes)));

    // 4. Streams and the staging crossover for pageable -> device.
    double best_s = 0;
    for (unsigned s : {1u, 2u, 4u}) {
      const double g = h2d(st, large, {.chunk_bytes = prof.chunk_bytes, .workers = prof.workers,
                                       .streams = s});
      log["streams"].push_back({{"streams", s}, {"gbps", g}});
      if (g > best_s * 1.02) {
        best_s = g;
        prof.streams = s;
      }
    }
    prof.staged_min_bytes = crossover(
        sizes, [&](std::size_t n) { return h2d(di, n, {}); },
        [&](std::size_t n) {
          return h2d(st, n, {.chunk_bytes = std::min(prof.chunk_bytes,
                                                     std::max<std::size_t>(n / prof.workers, 64 << 10)),
                             .workers = prof.workers, .streams = prof.streams});
        },
        log, "staged_min_bytes");
    say(fmt::format("streams: {}; staged pageable -> device from {}", prof.streams,
                    size_label(prof.staged_min_bytes)));
    prof.ring_depth = 2 * prof.workers;

    const std::string key = fmt::format("{}:{}", host_backend::name, hb.device());
    if (!o->dry_run) save_profile(path, key, prof);
    if (o->json) {
      nlohmann::json j{{"backend", key},
                       {"saved_to", o->dry_run ? "" : path.string()},
                       {"profile", {{"parallel_min_bytes", prof.parallel_min_bytes},
                                    {"staged_min_bytes", prof.staged_min_bytes},
                                    {"chunk_bytes", prof.chunk_bytes},
                                    {"workers", prof.workers},
                                    {"streams", prof.streams},
                                    {"ring_depth", prof.ring_depth}}},
                       {"measurements", log}};
      fmt::print("{}\n", j.dump(2));
    } else {
      fmt::print("Profile for {}:\n  parallel_min_bytes {}\n  staged_min_bytes   {}\n"
                 "  chunk_bytes        {}\n  workers            {}\n  streams            {}\n"
                 "  ring_depth         {}\n{}\n",
                 key, size_label(prof.parallel_min_bytes), size_label(prof.staged_min_bytes),
                 size_label(prof.chunk_bytes), prof.workers, prof.streams, prof.ring_depth,
                 o->dry_run ? "(dry run: not saved)" : fmt::format("Saved to {}", path.string()));
    }
    return 0;
  };
}

}  // namespace lris::tool
