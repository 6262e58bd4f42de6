// lris calibrate: measures where each path starts to pay off on this machine and saves the
// thresholds auto_select reads, one profile per backend and device ("host:0", "cuda:0");
// with --disk DIR, the cold-read method of the storage device holding DIR instead
// (calibrate_disk.cpp).
#include <algorithm>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <lris/lris.hpp>
#if LRIS_HAS_CUDA()
#include <lris/cuda.hpp>
#endif

#include "calibrate_disk.hpp"
#include "commands.hpp"
#include "measure.hpp"

namespace lris::tool {

namespace {

struct calibrate_options {
  std::string output;
  std::string large = "1G";
  std::string disk;
  std::string disk_bytes = "2G";
  bool json = false;
  bool dry_run = false;
};

// What every step needs: host buffers of `large` bytes, the thread count, a log, a voice.
struct bench_context {
  std::byte* src;
  std::byte* dst;
  std::size_t large;
  unsigned threads;
  nlohmann::json& log;
  bool tty;
  void say(const std::string& s) const {
    if (tty) fmt::print(stderr, "  {}\n", s);
  }
};

// The smallest size from which `fast` beats `slow` by 10% at that size and every larger one;
// `sizes.back() * 2` when it never does.
std::size_t crossover(const std::vector<std::size_t>& sizes,
                      const std::function<double(std::size_t)>& slow,
                      const std::function<double(std::size_t)>& fast, nlohmann::json& log) {
  std::size_t threshold = sizes.back() * 2;
  for (auto it = sizes.rbegin(); it != sizes.rend(); ++it) {
    const double s = slow(*it), f = fast(*it);
    log.push_back({{"bytes", *it}, {"direct_gbps", s}, {"chunked_gbps", f}});
    if (f < s * 1.10) break;
    threshold = *it;
  }
  return threshold;
}

// The fewest of `candidates` within 5% of the best rate; logs every rate.
template <class T>
T fewest_near_best(const std::vector<T>& candidates, const std::function<double(T)>& rate,
                   nlohmann::json& log, const char* key, double* best_out = nullptr) {
  std::vector<double> rates;
  for (T c : candidates) {
    rates.push_back(rate(c));
    log.push_back({{key, c}, {"gbps", rates.back()}});
  }
  const double best = *std::max_element(rates.begin(), rates.end());
  if (best_out) *best_out = best;
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    if (rates[i] >= 0.95 * best) return candidates[i];
  }
  return candidates.back();
}

std::vector<unsigned> thread_counts(unsigned threads) {
  std::vector<unsigned> v;
  for (unsigned w = 1;; w = std::min(w * 2, threads)) {
    v.push_back(w);
    if (w >= threads) break;
  }
  return v;
}

std::vector<std::size_t> crossover_sizes(std::size_t large) {
  std::vector<std::size_t> sizes;
  for (std::size_t n = 64 << 10; n <= std::min<std::size_t>(large, 64 << 20); n *= 4) {
    sizes.push_back(n);
  }
  return sizes;
}

// Host <-> host: workers, chunk size, and where splitting a copy over threads pays.
void tune_host_copies(const bench_context& c, transfer_profile& prof) {
  pipeline<staged, host_backend> st;
  auto h2h = [&](std::size_t n, const transfer_options& opt) {
    return measure_gbps(n, [&] {
      st.copy(as_host(c.dst, n), as_host<const std::byte>(c.src, n), opt).wait();
    });
  };
  double best = 0;
  prof.workers = fewest_near_best<unsigned>(
      thread_counts(c.threads),
      [&](unsigned w) { return h2h(c.large, {.chunk_bytes = std::size_t{4} << 20, .workers = w}); },
      c.log["host_workers"], "workers", &best);
  c.say(fmt::format("host copies: {} workers ({:.1f} GB/s at {})", prof.workers, best,
                    size_label(c.large)));
  prof.chunk_bytes = fewest_near_best<std::size_t>(
      {std::size_t{16} << 20, std::size_t{8} << 20, std::size_t{4} << 20, std::size_t{2} << 20,
       std::size_t{1} << 20},
      [&](std::size_t ch) { return h2h(c.large, {.chunk_bytes = ch, .workers = prof.workers}); },
      c.log["host_chunk_bytes"], "chunk_bytes");
  prof.parallel_min_bytes = crossover(
      crossover_sizes(c.large),
      [&](std::size_t n) { return measure_gbps(n, [&] { std::memcpy(c.dst, c.src, n); }); },
      [&](std::size_t n) { return h2h(n, {.chunk_bytes = prof.chunk_bytes, .workers = prof.workers}); },
      c.log["parallel_min_bytes"]);
  c.say(fmt::format("host copies: chunks of {}, parallel from {}", size_label(prof.chunk_bytes),
                    size_label(prof.parallel_min_bytes)));
}

// Pageable <-> `be`'s device through the staging ring: workers, chunks, streams, and where
// staging beats handing pageable memory to the backend directly.
template <class Backend>
void tune_staging(const bench_context& c, Backend be, transfer_profile& prof) {
  buffer<device_allocator<Backend>> dev(c.large, device_allocator<Backend>(be));
  if constexpr (std::is_same_v<Backend, host_backend>) prefault(dev.data(), c.large);
  pipeline<staged, Backend> st(staged{}, be);
  pipeline<direct, Backend> di(direct{}, be);
  auto h2d = [&](auto& p, std::size_t n, const transfer_options& opt) {
    return measure_gbps(n, [&] {
      p.copy(dev.span().subspan(0, n), as_host<const std::byte>(c.src, n), opt).wait();
    });
  };
  const std::string key = fmt::format("{}:{}", Backend::name, be.device());
  auto& log = c.log[key];
  double best = 0;
  prof.workers = fewest_near_best<unsigned>(
      thread_counts(c.threads), [&](unsigned w) { return h2d(st, c.large, {.workers = w}); },
      log["workers"], "workers", &best);
  prof.chunk_bytes = fewest_near_best<std::size_t>(
      {std::size_t{16} << 20, std::size_t{8} << 20, std::size_t{4} << 20, std::size_t{2} << 20,
       std::size_t{1} << 20},
      [&](std::size_t ch) { return h2d(st, c.large, {.chunk_bytes = ch, .workers = prof.workers}); },
      log["chunk_bytes"], "chunk_bytes");
  prof.streams = fewest_near_best<unsigned>(
      {1u, 2u, 4u},
      [&](unsigned s) {
        return h2d(st, c.large, {.chunk_bytes = prof.chunk_bytes, .workers = prof.workers,
                                 .streams = s});
      },
      log["streams"], "streams");
  prof.staged_min_bytes = crossover(
      crossover_sizes(c.large), [&](std::size_t n) { return h2d(di, n, {}); },
      [&](std::size_t n) {
        return h2d(st, n, {.chunk_bytes = prof.chunk_bytes, .workers = prof.workers,
                           .streams = prof.streams});
      },
      log["staged_min_bytes"]);
  prof.ring_depth = 2 * prof.workers;
  c.say(fmt::format("{}: staged pageable -> device {:.1f} GB/s with {} workers, chunks of {}, "
                    "{} streams; staged from {}",
                    key, best, prof.workers, size_label(prof.chunk_bytes), prof.streams,
                    size_label(prof.staged_min_bytes)));
}

// Batches of pinned buffers to `be`'s device: the mean buffer size up to which one batched
// operation (a kernel on a GPU) beats one DMA per pair. Each size moves the same total.
template <class Backend>
void tune_batches(const bench_context& c, Backend be, transfer_profile& prof) {
  const std::size_t total = std::min<std::size_t>(c.large, std::size_t{256} << 20);
  buffer<pinned_allocator<Backend>> pinned(total, pinned_allocator<Backend>(be));
  buffer<device_allocator<Backend>> dev(total, device_allocator<Backend>(be));
  std::memset(pinned.data(), 0x3c, total);
  if constexpr (std::is_same_v<Backend, host_backend>) prefault(dev.data(), total);
  auto rate = [&](std::size_t item, std::size_t batch_max) {
    transfer_profile p = prof;
    p.batch_max_item_bytes = batch_max;
    pipeline<auto_select, Backend> pipe(auto_select(p), be);
    const std::size_t n = std::min<std::size_t>(total / item, 20000);
    std::vector<device_span<Backend>> d;
    std::vector<pinned_span<Backend>> s;
    for (std::size_t i = 0; i < n; ++i) {
      d.emplace_back(dev.data() + i * item, item, be.device());
      s.emplace_back(pinned.data() + i * item, item);
    }
    pipe.copy_batch(d, s).wait();  // warm: item arrays, streams
    return measure_gbps(n * item, [&] { pipe.copy_batch(d, s).wait(); });
  };
  const std::string key = fmt::format("{}:{}", Backend::name, be.device());
  auto& log = c.log[key]["batch_max_item_bytes"];
  std::size_t threshold = std::size_t{8} << 20;  // the batch wins at every size tried
  for (std::size_t item = 4096; item <= (std::size_t{4} << 20) && item <= total; item *= 4) {
    const double batched = rate(item, std::numeric_limits<std::size_t>::max());
    const double per_pair = rate(item, 0);
    log.push_back({{"bytes", item}, {"batched_gbps", batched}, {"per_pair_gbps", per_pair}});
    if (per_pair >= batched) {
      threshold = item;
      break;
    }
  }
  prof.batch_max_item_bytes = threshold;
  c.say(fmt::format("{}: batches of pinned buffers are one operation below {} per buffer", key,
                    size_label(threshold)));
}

// The DMA ceilings of `be`'s link, pinned memory to and from device memory, with the backend's
// own copies (no pipeline): what the brokers budget each direction of the link with.
template <class Backend>
void measure_link(const bench_context& c, Backend be, transfer_profile& prof) {
  const std::size_t n = std::min<std::size_t>(c.large, std::size_t{1} << 30);
  buffer<device_allocator<Backend>> dev(n, device_allocator<Backend>(be));
  buffer<pinned_allocator<Backend>> pin(n, pinned_allocator<Backend>(be));
  std::memset(pin.data(), 0x5a, n);
  auto stream = be.make_stream();
  auto dma = [&](void* d, const void* s, copy_kind k) {
    return measure_gbps(n, [&] {
      be.copy_async(d, s, n, k, stream);
      be.synchronize(stream);
    });
  };
  prof.h2d_gbps = dma(dev.data(), pin.data(), copy_kind::host_to_device);
  prof.d2h_gbps = dma(pin.data(), dev.data(), copy_kind::device_to_host);
  c.log[fmt::format("{}:{}", Backend::name, be.device())]["link"] = {
      {"h2d_gbps", prof.h2d_gbps}, {"d2h_gbps", prof.d2h_gbps}};
  c.say(fmt::format("{}:{}: DMA {:.1f} GB/s to the device, {:.1f} GB/s from it", Backend::name,
                    be.device(), prof.h2d_gbps, prof.d2h_gbps));
}

nlohmann::json to_json(const transfer_profile& p) {
  return {{"parallel_min_bytes", p.parallel_min_bytes}, {"staged_min_bytes", p.staged_min_bytes},
          {"batch_max_item_bytes", p.batch_max_item_bytes},
          {"chunk_bytes", p.chunk_bytes},               {"workers", p.workers},
          {"streams", p.streams},                       {"ring_depth", p.ring_depth},
          {"host_copy_gbps", p.host_copy_gbps},         {"h2d_gbps", p.h2d_gbps},
          {"d2h_gbps", p.d2h_gbps}};
}

}  // namespace

command add_calibrate(CLI::App& app) {
  auto o = std::make_shared<calibrate_options>();
  app.add_option("--output", o->output, "profile file (default: $LRIS_PROFILE or "
                 "~/.config/lris/profile.json)");
  app.add_option("--large", o->large, "size used to tune workers, chunks and streams; larger "
                 "than the last-level cache (default 1G, less when memory is short)");
  app.add_option("--disk", o->disk, "calibrate only the cold reads of the storage device that "
                 "holds this directory (a test file is written there, then removed)");
  app.add_option("--disk-bytes", o->disk_bytes, "size of that test file (default 2G)");
  app.add_flag("--json", o->json, "machine-readable output");
  app.add_flag("--dry-run", o->dry_run, "measure and print, but do not save");
  return [o] {
    const auto path = o->output.empty() ? default_profile_path() : std::filesystem::path(o->output);
    if (!o->disk.empty()) {
      return calibrate_disk({.dir = o->disk, .bytes = parse_size(o->disk_bytes), .rounds = 3,
                             .profile = path, .json = o->json, .dry_run = o->dry_run});
    }
    const host_info info = probe_host();
    std::size_t large = parse_size(o->large);
    LRIS_EXPECTS(large >= (std::size_t{16} << 20),
                 "calibrate: --large {} is too small (at least 16M)", o->large);
    // Three buffers of `large` must fit in a quarter of the available memory.
    if (info.memory.available_bytes && large * 3 > info.memory.available_bytes / 4) {
      large = std::max<std::size_t>(
          std::size_t{16} << 20, (info.memory.available_bytes / 12) & ~((std::size_t{1} << 20) - 1));
    }
    buffer<pageable_allocator> src(large), dst(large);
    std::memset(src.data(), 0x5a, large);
    prefault(dst.data(), large);
    nlohmann::json log;
    const bench_context c{src.data(), dst.data(), large, std::max(1u, info.cpu.allowed_threads),
                          log, !o->json};

    std::vector<std::pair<std::string, transfer_profile>> profiles;
    transfer_profile host;
    host.host_copy_gbps = measure_host_copy_ceiling(dst.data(), src.data(), large, c.threads).gbps;
    c.log["host_copy_gbps"] = host.host_copy_gbps;
    tune_host_copies(c, host);
    transfer_profile host_staging = host;
    tune_staging(c, host_backend{}, host_staging);
    // Host copies keep their own workers and chunks; the staging parts come from the ring runs.
    host.staged_min_bytes = host_staging.staged_min_bytes;
    host.streams = host_staging.streams;
    host.ring_depth = 2 * host.workers;
    tune_batches(c, host_backend{}, host);
    profiles.emplace_back("host:0", host);
#if LRIS_HAS_CUDA()
    for (int d = 0; d < cuda_backend::device_count(); ++d) {
      transfer_profile gpu = host;
      gpu.host_copy_gbps = 0;
      measure_link(c, cuda_backend(d), gpu);
      tune_staging(c, cuda_backend(d), gpu);
      tune_batches(c, cuda_backend(d), gpu);
      profiles.emplace_back(fmt::format("cuda:{}", d), gpu);
    }
#endif
    if (!o->dry_run) {
      for (const auto& [key, prof] : profiles) save_profile(path, key, prof);
    }
    if (o->json) {
      nlohmann::json j{{"saved_to", o->dry_run ? "" : path.string()}, {"measurements", log}};
      for (const auto& [key, prof] : profiles) j["profiles"][key] = to_json(prof);
      fmt::print("{}\n", j.dump(2));
      return 0;
    }
    for (const auto& [key, prof] : profiles) {
      fmt::print("Profile for {}:\n", key);
      const std::pair<const char*, std::string> rows[] = {
          {"parallel_min_bytes", size_label(prof.parallel_min_bytes)},
          {"staged_min_bytes", size_label(prof.staged_min_bytes)},
          {"batch_max_item_bytes", size_label(prof.batch_max_item_bytes)},
          {"chunk_bytes", size_label(prof.chunk_bytes)},
          {"workers", std::to_string(prof.workers)},
          {"streams", std::to_string(prof.streams)},
          {"ring_depth", std::to_string(prof.ring_depth)},
          {"host_copy_gbps", fmt::format("{:.1f}", prof.host_copy_gbps)},
          {"h2d_gbps", fmt::format("{:.1f}", prof.h2d_gbps)},
          {"d2h_gbps", fmt::format("{:.1f}", prof.d2h_gbps)}};
      for (const auto& [name, value] : rows) fmt::print("  {:<21}{}\n", name, value);
    }
    fmt::print("{}\n", o->dry_run ? "(dry run: not saved)" : fmt::format("Saved to {}", path.string()));
    return 0;
  };
}

}  // namespace lris::tool
