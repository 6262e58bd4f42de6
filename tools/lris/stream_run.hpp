#pragma once
// lris stream: a synthetic transformer, bigger than the device budget, streamed layer by layer
// through a residency manager; each layer's compute is a chain of matrix products. Measures a
// pass against its physical bound max(C, X): C the pass's compute with every weight resident,
// X the bytes a pass must stream (the model less what the Belady oracle keeps) at the link's
// ceiling measured in the same run. With --files the layers stay in a file, read through the io
// engine each time one comes in, and the bound is the slower of the link and the file's read
// rate measured in the same run (cold: the page cache dropped before each pass).

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <lris/cache/lru.hpp>
#include <lris/cache/next_use.hpp>
#include <lris/cache/residency_manager.hpp>
#include <lris/cache/static_priority.hpp>
#include <lris/error.hpp>
#include <lris/io/engine.hpp>
#include <lris/io/file.hpp>
#include <lris/pool/far_memory.hpp>

#include "measure.hpp"

namespace lris::tool {

struct stream_options {
  std::string device = "host";
  std::uint64_t hidden = 0, intermediate = 0, kv_dim = 0;  // 0: the device's defaults
  std::uint64_t model_bytes = 0;
  std::vector<std::uint64_t> budgets;
  std::uint64_t lookahead_bytes = 0;  // 0: two layers
  std::uint64_t tokens = 0;           // 0: by mode
  std::string mode = "transfer";      // transfer | compute
  std::vector<std::string> policies = {"static", "lru"};
  int passes = 3;
  bool broker = true;
  bool json = false;
  std::string cublas;  // a path to libcublas, else found by the loader
  std::string files;   // a directory: the layers stay in a file there (empty: pinned memory)
  std::optional<pool::far_memory_options> far;  // the layers stay in emulated far memory
  bool cold = false;   // with files: the page cache dropped before every timed pass
  bool graph = false;  // also time the pass captured as graphs and replayed
};

/// One weight matrix of a layer: out x in, bf16, row-major.
struct weight_shape {
  std::string name;
  std::uint64_t out = 0, in = 0;
  [[nodiscard]] std::uint64_t bytes() const { return out * in * 2; }
};

/// A decoder layer's matrices (grouped-query attention and a gated MLP).
inline std::vector<weight_shape> layer_shapes(const stream_options& o) {
  return {{"q_proj", o.hidden, o.hidden},       {"k_proj", o.kv_dim, o.hidden},
          {"v_proj", o.kv_dim, o.hidden},       {"o_proj", o.hidden, o.hidden},
          {"gate_proj", o.intermediate, o.hidden}, {"up_proj", o.intermediate, o.hidden},
          {"down_proj", o.hidden, o.intermediate}};
}

/// What a backend gives the driver: its compute and its memory probe.
template <class Backend>
struct stream_device {
  Backend backend;
  std::string name;
  /// Queues one layer's products for `tokens` tokens on `s`, reading the weights at `w` (one
  /// per layer_shapes).
  std::function<void(const std::vector<std::byte*>& w, std::uint64_t tokens,
                     typename Backend::stream& s)> compute;
  std::uint64_t max_tokens = 1;
  /// Device bytes in use now (the driver's view, e.g. cudaMemGetInfo), or -1 when it cannot
  /// tell (the host backend: counted bytes are reported instead).
  std::function<std::int64_t()> used_device_bytes;
  /// Host -> device ceiling in GB/s (pinned memory, one large copy), measured now.
  std::function<double()> link_ceiling;
};

namespace stream_detail {

// The seconds between two timed events recorded on `s` around `f()`.
template <class Backend, class F>
double timed(Backend& be, typename Backend::stream& s, F&& f) {
  auto a = be.make_timed_event(), b = be.make_timed_event();
  be.record(a, s);
  f();
  be.record(b, s);
  be.synchronize(b);
  return be.elapsed_seconds(a, b);
}

// `pass(true)` captured as graphs (residency_manager::capture) and replayed `passes` times,
// timed; then replayed once more after `check` is cleared, and its bytes checked. Null where
// the backend cannot capture.
template <class Backend, class Manager, class Pass, class Wrong>
nlohmann::json replay_pass(Backend& be, Manager& rm, typename Backend::stream& s, Pass& pass,
                           int passes, std::byte* check, std::size_t check_bytes, Wrong& wrong) {
  if constexpr (graph_backend<Backend>) {
    auto g = rm.capture(s, [&] { pass(true); });
    rm.replay(g, s);  // the first launch uploads the graph
    be.synchronize(s);
    const auto before = rm.stats();
    std::vector<double> seconds;
    for (int p = 0; p < passes; ++p) seconds.push_back(timed(be, s, [&] { rm.replay(g, s); }));
    const auto st = rm.stats() - before;
    std::memset(check, 0, check_bytes);
    rm.replay(g, s);
    be.synchronize(s);
    return {{"graphs", g.graphs()},
            {"pass_seconds", std::accumulate(seconds.begin(), seconds.end(), 0.0) / passes},
            {"streamed_bytes", static_cast<double>(st.replayed_bytes) / passes},
            {"bytes_checked_wrong", wrong()}};
  } else {
    return nullptr;
  }
}

inline std::byte pattern(std::size_t layer, std::size_t i) {
  return static_cast<std::byte>((layer * 131 + i * 7 + 1) & 0xff);
}

// The layers in one file of o.files, laid out as the units are (tensor after tensor, layer
// after layer), every tensor's bytes its pattern. Written once (through a temporary file, then
// renamed) and reused while its name and size match.
inline std::filesystem::path layer_file(const stream_options& o,
                                        const std::vector<weight_shape>& shapes,
                                        std::uint64_t layers) {
  std::uint64_t layer_bytes = 0;
  for (const auto& w : shapes) layer_bytes += w.bytes();
  std::filesystem::create_directories(o.files);
  const auto path = std::filesystem::path(o.files) /
                    fmt::format("lris-stream-{}-layers-{}-{}-{}.bin", layers, o.hidden,
                                o.intermediate, o.kv_dim);
  std::error_code ec;
  if (std::filesystem::file_size(path, ec) == layers * layer_bytes && !ec) return path;
  auto tmp = path;
  tmp += ".partial";
  {
    io::file out(tmp, io::open_mode::create);
    std::vector<std::byte> buf(std::size_t{16} << 20);
    std::uint64_t at = 0;
    for (std::uint64_t l = 0; l < layers; ++l) {
      for (std::size_t t = 0; t < shapes.size(); ++t) {
        std::memset(buf.data(), static_cast<int>(pattern(l, t)), buf.size());
        for (std::uint64_t done = 0; done < shapes[t].bytes();) {
          const std::size_t n = std::min<std::uint64_t>(buf.size(), shapes[t].bytes() - done);
          const ssize_t w = ::pwrite(out.fd(), buf.data(), n, static_cast<off_t>(at + done));
          if (w <= 0) {
            throw io_error(w < 0 ? errno : EIO,
                           fmt::format("lris stream: writing {} bytes at offset {} of {}", n,
                                       at + done, tmp.string()));
          }
          done += static_cast<std::uint64_t>(w);
        }
        at += shapes[t].bytes();
      }
    }
    out.sync();
  }
  std::filesystem::rename(tmp, path);
  return path;
}

// The file's read rate through the io engine into pinned memory, its first `bytes` in pieces
// of 64 MiB (cold after make_cold when `cold`): the most units kept in it can come in at.
template <class Backend>
double file_read_gbps(Backend& be, const std::filesystem::path& path, std::uint64_t bytes,
                      bool cold) {
  if (cold) make_cold(path.string());
  const std::size_t piece = std::size_t{64} << 20;
  auto* buf = static_cast<std::byte*>(be.allocate_pinned(piece));
  io::io_engine engine;
  const io::file f(path);
  const auto t0 = std::chrono::steady_clock::now();
  try {
    for (std::uint64_t at = 0; at < bytes; at += piece) {
      engine.read(f, at, {buf, static_cast<std::size_t>(std::min<std::uint64_t>(piece, bytes - at))});
    }
  } catch (...) {
    be.deallocate_pinned(buf, piece);
    throw;
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  be.deallocate_pinned(buf, piece);
  return static_cast<double>(bytes) / s / 1e9;
}

}  // namespace stream_detail

/// Runs every budget x policy and prints (or returns as JSON) the results. Exit code.
template <class Backend>
int run_stream(const stream_options& o, stream_device<Backend>& dev) {
  using namespace stream_detail;
  Backend& be = dev.backend;
  const auto shapes = layer_shapes(o);
  std::uint64_t layer_bytes = 0;
  for (const auto& w : shapes) layer_bytes += w.bytes();
  const std::uint64_t layers = std::max<std::uint64_t>(2, o.model_bytes / layer_bytes);
  const std::uint64_t model_bytes = layers * layer_bytes;
  const std::uint64_t lookahead = o.lookahead_bytes != 0 ? o.lookahead_bytes : 2 * layer_bytes;
  auto s = be.make_stream();

  // The resident compute of one layer (weights of the same shapes, resident), and the link.
  std::vector<std::byte*> resident;
  for (const auto& w : shapes) {
    auto* p = static_cast<std::byte*>(be.allocate_device(w.bytes()));
    resident.push_back(p);
  }
  const double ceiling = dev.link_ceiling();
  auto layer_seconds = [&](std::uint64_t tokens) {
    dev.compute(resident, tokens, s);  // warm-up (a library's first calls)
    be.synchronize(s);
    std::vector<double> v;
    for (int i = 0; i < 5; ++i) v.push_back(timed(be, s, [&] { dev.compute(resident, tokens, s); }));
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  // Compute-bound: tokens enough that a layer's compute takes 1.3x its copy at the ceiling.
  std::uint64_t tokens = o.tokens;
  if (tokens == 0 && o.mode == "compute") {
    const double copy = static_cast<double>(layer_bytes) / (ceiling * 1e9);
    tokens = std::min<std::uint64_t>(64, dev.max_tokens);
    while (tokens < dev.max_tokens && layer_seconds(tokens) < 1.3 * copy) {
      tokens = std::min(dev.max_tokens, tokens * 2);
    }
  } else if (tokens == 0) {
    tokens = std::min<std::uint64_t>(16, dev.max_tokens);
  }
  if (tokens > dev.max_tokens) {
    throw invalid_argument(fmt::format("lris stream: --tokens {} is more than {} (this device's "
                                       "activation buffers)", tokens, dev.max_tokens));
  }
  const double compute_pass = layer_seconds(tokens) * static_cast<double>(layers);
  for (std::size_t i = 0; i < shapes.size(); ++i) be.deallocate_device(resident[i], shapes[i].bytes());

  // Kept in a file: the bound is the slower of the link and the file's read rate.
  std::filesystem::path file;
  double file_ceiling = 0;
  if (!o.files.empty()) {
    file = layer_file(o, shapes, layers);
    file_ceiling = file_read_gbps(be, file, std::min<std::uint64_t>(model_bytes, std::uint64_t{8} << 30), o.cold);
  }
  // Kept in far memory: each read of a layer pays the latency, its share of the cap and the
  // faults' retries; the bound is the slower of the link and the cap.
  std::vector<std::byte> far_region;
  std::optional<pool::far_memory> far;
  if (o.far) {
    far_region.resize(static_cast<std::size_t>(model_bytes));
    std::uint64_t at = 0;
    for (std::uint64_t l = 0; l < layers; ++l) {
      for (std::size_t t = 0; t < shapes.size(); ++t) {
        std::memset(far_region.data() + at, static_cast<int>(pattern(l, t)), shapes[t].bytes());
        at += shapes[t].bytes();
      }
    }
    far.emplace(std::span<const std::byte>(far_region), *o.far);
  }
  double bound_gbps = file.empty() ? ceiling : std::min(ceiling, file_ceiling);
  if (o.far && o.far->gbps > 0) bound_gbps = std::min(bound_gbps, o.far->gbps);

  if (!o.json) {
    fmt::print("lris stream on {}: {} layers of {:.1f} MB ({} x {} hidden, {} intermediate, {} kv), "
               "model {:.2f} GB\n", dev.name, layers, layer_bytes / 1e6, shapes.size(), o.hidden,
               o.intermediate, o.kv_dim, model_bytes / 1e9);
    fmt::print("  mode {}: {} tokens; compute of a pass with every weight resident C = {:.4f} s; "
               "link ceiling {:.1f} GB/s (pinned -> device, measured now)\n", o.mode, tokens,
               compute_pass, ceiling);
    if (o.far) {
      fmt::print("  layers kept in emulated far memory: {} us added to each read, {}, {:.4f} of "
                 "reads fault (retried): the bound is {:.2f} GB/s\n",
                 std::chrono::duration<double, std::micro>(o.far->latency).count(),
                 o.far->gbps > 0 ? fmt::format("capped at {:.2f} GB/s", o.far->gbps)
                                 : std::string("no cap"),
                 o.far->fault_rate, bound_gbps);
    }
    if (!file.empty()) {
      fmt::print("  layers kept in {} ({}), read at {:.2f} GB/s through the io engine (measured "
                 "now): the bound is {:.2f} GB/s\n", file.string(),
                 o.cold ? "cold: the page cache dropped before each pass" : "warm", file_ceiling,
                 bound_gbps);
    }
  }

  // Every unit in pinned host memory once, shared by the runs: drafts filled with a pattern.
  nlohmann::json runs = nlohmann::json::array();
  bool all_ok = true;
  for (const std::uint64_t budget : o.budgets) {
    for (const std::string& policy_name : o.policies) {
      const std::int64_t used_before = dev.used_device_bytes();
      auto run_one = [&](auto policy) -> nlohmann::json {
        using Policy = decltype(policy);
        cache::residency_options ro;
        ro.budget_bytes = budget;
        ro.broker = o.broker ? default_context()->broker() : nullptr;
        cache::residency_manager<Backend, Policy> rm(be, ro, std::move(policy));
        const bool counted = used_before < 0;  // the device cannot tell: counted bytes
        std::int64_t peak = counted ? -1 : dev.used_device_bytes() - used_before;
        const std::int64_t manager_used = peak;  // the budget's block, before any unit
        std::vector<cache::unit_id> order;
        std::vector<typename cache::residency_manager<Backend, Policy>::tensor_size> sizes;
        for (const auto& w : shapes) sizes.push_back({w.name, w.bytes()});
        for (std::uint64_t l = 0; l < layers; ++l) {
          if (far) {  // its tensors' bytes in far memory, read each time it comes in
            std::vector<cache::placed_tensor> pt;
            std::uint64_t at = l * layer_bytes;
            for (const auto& w : shapes) {
              pt.push_back({w.name, at, w.bytes()});
              at += w.bytes();
            }
            order.push_back(rm.add_far_unit(fmt::format("layers.{}", l), *far, pt));
            continue;
          }
          if (!file.empty()) {  // its tensors' bytes in the file, read each time it comes in
            std::vector<cache::file_tensor> ft;
            std::uint64_t at = l * layer_bytes;
            for (const auto& w : shapes) {
              ft.push_back({w.name, file, at, w.bytes()});
              at += w.bytes();
            }
            order.push_back(rm.add_file_unit(fmt::format("layers.{}", l), ft));
            continue;
          }
          auto d = rm.draft_unit(fmt::format("layers.{}", l), sizes);
          for (std::size_t t = 0; t < shapes.size(); ++t) {
            std::byte* p = d.tensor(t);
            std::memset(p, static_cast<int>(pattern(l, t)), shapes[t].bytes());
          }
          order.push_back(rm.add_unit(std::move(d)));
        }
        rm.declare_order(order, true, lookahead);
        // Device memory the driver takes for the units' pinned host memory (its mapping),
        // beside the budget; -1 where the device cannot tell.
        const std::int64_t units_used = counted ? -1 : dev.used_device_bytes() - used_before;
        const std::size_t check_bytes = 16 * layers * shapes.size();
        auto* check = static_cast<std::byte*>(be.allocate_pinned(check_bytes));
        struct pinned_free {
          Backend& be;
          void* p;
          std::size_t n;
          ~pinned_free() { be.deallocate_pinned(p, n); }
        } check_owner{be, check, check_bytes};
        std::vector<std::byte*> w(shapes.size());
        // Check bytes that differ from the pattern the last checked pass should have copied.
        const auto wrong_bytes = [&] {
          std::uint64_t n = 0;
          for (std::uint64_t l = 0; l < layers; ++l) {
            for (std::size_t t = 0; t < shapes.size(); ++t) {
              for (std::size_t i = 0; i < 16; ++i) {
                n += check[16 * (l * shapes.size() + t) + i] != pattern(l, t) ? 1 : 0;
              }
            }
          }
          return n;
        };
        auto pass = [&](bool verify) {
          for (std::uint64_t l = 0; l < layers; ++l) {
            auto lease = rm.acquire(order[l], s);
            for (std::size_t t = 0; t < shapes.size(); ++t) w[t] = lease.tensor(t);
            dev.compute(w, tokens, s);
            if (verify) {  // the last 16 bytes of every tensor, back to the host
              for (std::size_t t = 0; t < shapes.size(); ++t) {
                be.copy_async(check + 16 * (l * shapes.size() + t), w[t] + shapes[t].bytes() - 16,
                              16, copy_kind::device_to_host, s);
              }
            }
            rm.release(std::move(lease), s);
          }
        };
        pass(false);  // a cold start: the budget fills
        be.synchronize(s);
        const auto before = rm.stats();
        const std::uint64_t belady_before = rm.belady_hit_bytes();
        const std::uint64_t budget_belady_before = rm.belady_hit_bytes(0);
        std::vector<double> seconds;
        for (int p = 0; p < o.passes; ++p) {
          if (o.cold && !file.empty()) make_cold(file.string());
          seconds.push_back(timed(be, s, [&] { pass(false); }));
          if (!counted) peak = std::max(peak, dev.used_device_bytes() - used_before);
        }
        const auto st = rm.stats() - before;
        const std::uint64_t belady_after = rm.belady_hit_bytes();
        const std::uint64_t budget_belady_after = rm.belady_hit_bytes(0);
        // The same pass captured as graphs, replayed: timed, then every tensor's bytes checked.
        nlohmann::json graph_run;
        if (o.graph) graph_run = replay_pass(be, rm, s, pass, o.passes, check, check_bytes, wrong_bytes);
        pass(true);  // untimed: every tensor's bytes checked
        be.synchronize(s);
        // Sleep and wake: the budget's memory given back (the units stay in pinned host
        // memory), then taken again and the resident units copied back, until the stream has
        // them all.
        rm.declare_order({}, false, 0);  // the acquires below only wait: nothing comes ahead
        const auto before_sleep = rm.stats();
        const auto t_sleep = std::chrono::steady_clock::now();
        rm.sleep();
        const auto t_slept = std::chrono::steady_clock::now();
        const std::int64_t asleep_used = counted ? -1 : dev.used_device_bytes() - used_before;
        const auto t_wake = std::chrono::steady_clock::now();
        rm.wake();  // returns once the budget's memory is taken and the copies are queued
        const double wake_call_s =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t_wake).count();
        for (const cache::unit_id u : order) {
          if (rm.resident(u)) rm.release(rm.acquire(u, s), s);
        }
        be.synchronize(s);
        const double wake_s =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t_wake).count();
        const double sleep_s = std::chrono::duration<double>(t_slept - t_sleep).count();
        const std::uint64_t woken = rm.stats().woken_bytes - before_sleep.woken_bytes;
        const std::uint64_t file_read = rm.stats().file_read_bytes - before_sleep.file_read_bytes;
        // Again with a second between sleep and wake, as when the memory served other work
        // meanwhile: the driver clears memory given back for a while after, and a wake at once
        // shares the copy engines with it.
        rm.sleep();
        std::this_thread::sleep_for(std::chrono::seconds(1));
        const auto t_wake2 = std::chrono::steady_clock::now();
        rm.wake();
        for (const cache::unit_id u : order) {
          if (rm.resident(u)) rm.release(rm.acquire(u, s), s);
        }
        be.synchronize(s);
        const double wake2_s =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t_wake2).count();
        const std::uint64_t wrong = wrong_bytes();
        const double passes = o.passes;
        const double t_pass = std::accumulate(seconds.begin(), seconds.end(), 0.0) / passes;
        const double streamed = static_cast<double>(st.miss_bytes + st.prefetched_bytes) / passes;
        const double hits = static_cast<double>(st.hit_bytes) / passes;
        const double belady = static_cast<double>(belady_after - belady_before) / passes;
        // The physical bound: the bytes no policy of this budget avoids streaming, at the ceiling.
        const double budget_belady =
            static_cast<double>(budget_belady_after - budget_belady_before) / passes;
        const double bound_x =
            (static_cast<double>(model_bytes) - budget_belady) / (bound_gbps * 1e9);
        const double bound = std::max(compute_pass, bound_x);
        const double e = bound / t_pass;
        const std::uint64_t peak_bytes = counted ? st.high_water_bytes : static_cast<std::uint64_t>(peak);
        // What the driver takes on the device for mapping the units' pinned host memory (any
        // pinned memory costs it, about 1/512 of it): measured when the units were added.
        const std::uint64_t driver_bytes =
            counted ? 0 : static_cast<std::uint64_t>(std::max<std::int64_t>(0, units_used - manager_used));
        nlohmann::json r{{"policy", policy_name},
                         {"budget_bytes", budget},
                         {"peak_device_bytes", peak_bytes},
                         {"peak_device_bytes_measured", !counted},
                         {"driver_pinned_mapping_bytes", driver_bytes},
                         {"model_bytes", model_bytes},
                         {"layer_bytes", layer_bytes},
                         {"layers", layers},
                         {"lookahead_bytes", lookahead},
                         {"pinned_host_bytes", st.pinned_host_bytes},
                         {"streamed_bytes", streamed},
                         {"hit_bytes", hits},
                         {"belady_hit_bytes", belady},
                         {"hit_ratio_to_belady", belady > 0 ? hits / belady : 1.0},
                         {"belady_budget_hit_bytes", budget_belady},
                         {"device_bytes_after_manager", manager_used},
                         {"device_bytes_after_units", units_used},
                         {"hit_ratio_to_budget_belady", budget_belady > 0 ? hits / budget_belady : 1.0},
                         {"pass_seconds", t_pass},
                         {"compute_seconds", compute_pass},
                         {"transfer_bound_seconds", bound_x},
                         {"efficiency", e},
                         {"stall_fraction", 1 - e},
                         {"stall_seconds_per_pass", st.stall_seconds / passes},
                         {"link_gbps", streamed / t_pass / 1e9},
                         {"link_ceiling_gbps", ceiling},
                         {"link_ratio", streamed / t_pass / 1e9 / ceiling},
                         {"files", !file.empty()},
                         {"cold", o.cold && !file.empty()},
                         {"file_read_ceiling_gbps", file_ceiling},
                         {"file_read_bytes", static_cast<double>(st.file_read_bytes) / passes},
                         {"file_read_seconds", st.file_read_seconds / passes},
                         {"bound_gbps", bound_gbps},
                         {"bound_ratio", streamed / t_pass / 1e9 / bound_gbps},
                         {"wake_file_read_bytes", file_read},
                         {"broker", o.broker},
                         {"sleep_seconds", sleep_s},
                         {"device_bytes_asleep", asleep_used},
                         {"woken_bytes", woken},
                         {"wake_seconds", wake_s},
                         {"wake_call_seconds", wake_call_s},
                         {"wake_gbps", woken / wake_s / 1e9},
                         {"wake_ratio", woken / wake_s / 1e9 / bound_gbps},
                         {"wake_after_pause_seconds", wake2_s},
                         {"wake_after_pause_gbps", woken / wake2_s / 1e9},
                         {"wake_after_pause_ratio", woken / wake2_s / 1e9 / bound_gbps},
                         {"bytes_checked_wrong", wrong}};
        if (o.graph) {
          graph_run["efficiency"] = bound / graph_run["pass_seconds"].get<double>();
          graph_run["link_gbps"] = graph_run["streamed_bytes"].get<double>() /
                                   graph_run["pass_seconds"].get<double>() / 1e9;
          graph_run["bound_ratio"] = graph_run["link_gbps"].get<double>() / bound_gbps;
          all_ok = all_ok && graph_run["bytes_checked_wrong"].get<std::uint64_t>() == 0;
          r["graph"] = std::move(graph_run);
        }
        all_ok = all_ok && wrong == 0 && peak_bytes - driver_bytes <= budget;
        return r;
      };
      nlohmann::json r;
      const pool::far_memory_stats far_before = far ? far->stats() : pool::far_memory_stats{};
      if (policy_name == "lru") {
        r = run_one(cache::lru{});
      } else if (policy_name == "next_use") {
        std::vector<cache::unit_id> cycle(layers);
        for (std::uint64_t l = 0; l < layers; ++l) cycle[l] = static_cast<cache::unit_id>(l);
        r = run_one(cache::next_use::from_order(cycle, true, layers));
      } else {
        r = run_one(cache::static_priority{});
      }
      if (far) {  // what the run's reads of far memory went through
        const pool::far_memory_stats now = far->stats();
        r["far"] = {{"reads", now.reads - far_before.reads},
                    {"bytes", now.bytes - far_before.bytes},
                    {"faults", now.faults - far_before.faults},
                    {"failed", now.failed - far_before.failed},
                    {"waited_seconds", now.waited_seconds - far_before.waited_seconds}};
      }
      if (!o.json) {
        fmt::print("  budget {:.2f} GB, {:<6}: pass {:.4f} s against max(C, X) {:.4f} s: E {:.3f} "
                   "(stall {:.3f}); streamed {:.2f} GB/pass at {:.1f} GB/s ({:.3f} of the "
                   "bound); kept {:.2f} GB/pass, {:.3f} of Belady's {:.2f} GB; device peak "
                   "{:.2f} GB ({}); pinned host {:.3f}x the model{}\n",
                   budget / 1e9, policy_name, r["pass_seconds"].get<double>(),
                   std::max(compute_pass, r["transfer_bound_seconds"].get<double>()),
                   r["efficiency"].get<double>(), r["stall_fraction"].get<double>(),
                   r["streamed_bytes"].get<double>() / 1e9, r["link_gbps"].get<double>(),
                   r["bound_ratio"].get<double>(), r["hit_bytes"].get<double>() / 1e9,
                   r["hit_ratio_to_belady"].get<double>(),
                   r["belady_hit_bytes"].get<double>() / 1e9,
                   r["peak_device_bytes"].get<std::uint64_t>() / 1e9,
                   r["peak_device_bytes_measured"].get<bool>()
                       ? fmt::format("measured; {:.3f} GB of it the driver's, for the pinned "
                                     "host memory", r["driver_pinned_mapping_bytes"].get<std::uint64_t>() / 1e9)
                       : std::string("counted"),
                   static_cast<double>(r["pinned_host_bytes"].get<std::uint64_t>()) / model_bytes,
                   r["bytes_checked_wrong"].get<std::uint64_t>() == 0 ? "" : "; WRONG BYTES");
        fmt::print("    sleep {:.3f} s; wake at once: {:.2f} GB back in {:.3f} s, {:.1f} GB/s ({:.3f} "
                   "of the bound); wake 1 s after sleep: {:.3f} s, {:.1f} GB/s ({:.3f})\n",
                   r["sleep_seconds"].get<double>(),
                   static_cast<double>(r["woken_bytes"].get<std::uint64_t>()) / 1e9,
                   r["wake_seconds"].get<double>(), r["wake_gbps"].get<double>(),
                   r["wake_ratio"].get<double>(), r["wake_after_pause_seconds"].get<double>(),
                   r["wake_after_pause_gbps"].get<double>(),
                   r["wake_after_pause_ratio"].get<double>());
      }
      if (!o.json && r.contains("graph")) {
        const auto& g = r["graph"];
        fmt::print("    captured as {} graph{}, replayed: pass {:.4f} s, E {:.3f}; streamed {:.2f} "
                   "GB/pass at {:.1f} GB/s ({:.3f} of the bound){}\n",
                   g["graphs"].get<std::size_t>(), g["graphs"].get<std::size_t>() > 1 ? "s" : "",
                   g["pass_seconds"].get<double>(), g["efficiency"].get<double>(),
                   g["streamed_bytes"].get<double>() / 1e9, g["link_gbps"].get<double>(),
                   g["bound_ratio"].get<double>(),
                   g["bytes_checked_wrong"].get<std::uint64_t>() == 0 ? "" : "; WRONG BYTES");
      }
      if (!o.json && r["files"].get<bool>()) {
        const double rs = r["file_read_seconds"].get<double>();
        fmt::print("    reads: {:.2f} GB/pass, {:.3f} s of reading per pass (summed over threads), "
                   "{:.1f} GB/s while reading\n", r["file_read_bytes"].get<double>() / 1e9, rs,
                   rs > 0 ? r["file_read_bytes"].get<double>() / rs / 1e9 : 0.0);
      }
      if (!o.json && r.contains("far")) {
        const auto& f = r["far"];
        fmt::print("    far memory: {} reads of {:.2f} GB, {} faults retried ({} failed), {:.3f} s "
                   "waited for latency, cap and backoff (summed over readers)\n",
                   f["reads"].get<std::uint64_t>(), f["bytes"].get<std::uint64_t>() / 1e9,
                   f["faults"].get<std::uint64_t>(), f["failed"].get<std::uint64_t>(),
                   f["waited_seconds"].get<double>());
      }
      runs.push_back(std::move(r));
    }
  }
  if (o.json) {
    nlohmann::json out{{"device", dev.name},       {"mode", o.mode},
                       {"tokens", tokens},       {"hidden", o.hidden},
                       {"intermediate", o.intermediate}, {"kv_dim", o.kv_dim},
                       {"passes", o.passes},       {"link_ceiling_gbps", ceiling},
                       {"compute_seconds", compute_pass}, {"runs", runs}};
    fmt::print("{}\n", out.dump(2));
  }
  return all_ok ? 0 : 1;
}

}  // namespace lris::tool
