// lris stream: a model bigger than the device budget streamed through the residency manager;
// see stream_run.hpp. On the host backend the layers' products are a CPU stand-in (each
// weight byte read once per token) and the sizes are small, so that it runs anywhere.
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <lris/lris.hpp>

#include "commands.hpp"
#include "measure.hpp"
#include "stream_run.hpp"

namespace lris::tool {

#if LRIS_HAS_CUDA()
int run_stream_cuda(stream_options o, int device);  // cuda_stream.cpp
#endif

namespace {

// One layer's stand-in products on the host stream: every weight byte summed once per token.
// Kept for as long as the run (a captured pass runs it again on each replay), one per set of
// weight addresses: as many as the places the budget gives a layer.
struct host_layer_work {
  std::vector<std::pair<const std::byte*, std::size_t>> weights;
  std::uint64_t tokens = 1;
  std::uint64_t* sink = nullptr;

  static void run(void* user) noexcept {
    const auto* w = static_cast<const host_layer_work*>(user);
    std::uint64_t sum = 0;
    for (std::uint64_t t = 0; t < w->tokens; ++t) {
      for (const auto& [p, n] : w->weights) {
        for (std::size_t i = 0; i < n; i += 8) {
          std::uint64_t v;
          std::memcpy(&v, p + i, 8);
          sum += v ^ t;
        }
      }
    }
    *w->sink += sum;
  }
};

// "LATENCY_US,GBPS[,FAULT_RATE]".
pool::far_memory_options parse_far(const std::string& text) {
  std::vector<double> v;
  std::size_t at = 0;
  while (at <= text.size()) {
    const std::size_t comma = std::min(text.find(',', at), text.size());
    const std::string item = text.substr(at, comma - at);
    std::size_t used = 0;
    double x = 0;
    try {
      x = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (item.empty() || used != item.size() || !(x >= 0)) {
      throw invalid_argument(fmt::format("--far \"{}\": \"{}\" is not a number of 0 or more "
                                         "(LATENCY_US,GBPS[,FAULT_RATE])", text, item));
    }
    v.push_back(x);
    at = comma + 1;
  }
  if (v.size() < 2 || v.size() > 3) {
    throw invalid_argument(fmt::format("--far \"{}\": give LATENCY_US,GBPS[,FAULT_RATE]", text));
  }
  pool::far_memory_options f;
  f.latency = std::chrono::nanoseconds(static_cast<std::int64_t>(v[0] * 1000));
  f.gbps = v[1];
  f.fault_rate = v.size() > 2 ? v[2] : 0;
  // The checks of far_memory itself, now, naming the option.
  try {
    const std::byte none{};
    (void)pool::far_memory(std::span<const std::byte>(&none, 1), f);
  } catch (const invalid_argument& e) {
    throw invalid_argument(fmt::format("--far \"{}\": {}", text, e.what()));
  }
  return f;
}

int run_host(stream_options o) {
  if (o.hidden == 0) o.hidden = 512;
  if (o.intermediate == 0) o.intermediate = 1792;
  if (o.kv_dim == 0) o.kv_dim = 128;
  if (o.model_bytes == 0) o.model_bytes = std::uint64_t{64} << 20;
  if (o.budgets.empty()) o.budgets = {std::uint64_t{40} << 20};
  auto sink = std::make_shared<std::uint64_t>(0);
  const auto shapes = layer_shapes(o);
  stream_device<host_backend> dev{host_backend{}, "host", {}, 64, {}, {}};
  using work_key = std::pair<std::vector<std::byte*>, std::uint64_t>;
  auto works = std::make_shared<std::map<work_key, host_layer_work>>();
  dev.compute = [&dev, sink, shapes, works](const std::vector<std::byte*>& w,
                                            std::uint64_t tokens, host_backend::stream& s) {
    auto [at, added] = works->try_emplace(work_key{w, tokens});
    host_layer_work& work = at->second;
    if (added) {
      for (std::size_t i = 0; i < w.size(); ++i) work.weights.emplace_back(w[i], shapes[i].bytes());
      work.tokens = tokens;
      work.sink = sink.get();
    }
    dev.backend.host_callback(s, &host_layer_work::run, &work);
  };
  dev.used_device_bytes = [] { return std::int64_t{-1}; };
  dev.link_ceiling = [&dev] {
    const std::size_t n = std::size_t{64} << 20;
    auto* src = static_cast<std::byte*>(dev.backend.allocate_pinned(n));
    auto* dst = static_cast<std::byte*>(dev.backend.allocate_device(n));
    std::memset(src, 1, n);
    std::memset(dst, 0, n);
    auto s = dev.backend.make_stream();
    const double gbps = measure_gbps(n, [&] {
      dev.backend.copy_async(dst, src, n, copy_kind::host_to_device, s);
      dev.backend.synchronize(s);
    });
    dev.backend.deallocate_device(dst, n);
    dev.backend.deallocate_pinned(src, n);
    return gbps;
  };
  return run_stream(o, dev);
}

int dispatch(const stream_options& o) {
  if (o.mode != "transfer" && o.mode != "compute") {
    throw invalid_argument(fmt::format("--mode \"{}\": transfer or compute", o.mode));
  }
  for (const auto& p : o.policies) {
    if (p != "static" && p != "lru" && p != "next_use") {
      throw invalid_argument(fmt::format("--policies: \"{}\" is not a policy (static, lru, "
                                         "next_use)", p));
    }
  }
  if (o.passes < 1) throw invalid_argument("--passes: at least 1");
  if (o.cold && o.files.empty()) throw invalid_argument("--cold: only with --files DIR");
  if (o.far && (!o.files.empty() || o.graph)) {
    throw invalid_argument("--far: not with --files or --graph (the layers are in far memory, "
                           "whose reads cannot be captured)");
  }
  if (o.graph && !o.files.empty()) {
    throw invalid_argument("--graph: not with --files (reads from files cannot be captured)");
  }
  const auto [kind, index] = parse_device(o.device);
  if (kind == "host") return run_host(o);
#if LRIS_HAS_CUDA()
  if (kind == "cuda") return run_stream_cuda(o, index);
#endif
  (void)index;
  throw invalid_argument(fmt::format("--device \"{}\": not a device of this build (host{})",
                                     o.device, LRIS_HAS_CUDA() ? ", cuda:N" : ""));
}

}  // namespace

command add_stream(CLI::App& app) {
  auto o = std::make_shared<stream_options>();
  auto model = std::make_shared<std::string>();
  auto budgets = std::make_shared<std::vector<std::string>>();
  auto lookahead = std::make_shared<std::string>();
  auto no_broker = std::make_shared<bool>(false);
  app.add_option("--device", o->device, "host or cuda:N")->capture_default_str();
  app.add_option("--model", *model, "bytes of layers (64G on a GPU, 64M on the host)");
  app.add_option("--budget", *budgets, "device budgets to run, e.g. 8G,16G,24G (24G; 40M on the host)")
      ->delimiter(',');
  app.add_option("--lookahead", *lookahead, "bytes brought in ahead of use (two layers)");
  app.add_option("--hidden", o->hidden, "hidden size (8192 on a GPU: a 70B-class decoder)");
  app.add_option("--intermediate", o->intermediate, "MLP size (28672 on a GPU)");
  app.add_option("--kv-dim", o->kv_dim, "keys' and values' width (1024 on a GPU)");
  app.add_option("--tokens", o->tokens, "tokens per layer's products (by mode when not given)");
  app.add_option("--mode", o->mode,
                 "transfer (little compute) or compute (each layer's products take 1.3x its copy)")
      ->capture_default_str();
  app.add_option("--policies", o->policies, "eviction policies to run side by side")
      ->delimiter(',')->capture_default_str();
  app.add_option("--passes", o->passes, "timed passes per run")->capture_default_str();
  app.add_flag("--no-broker", *no_broker, "copies take no bandwidth tokens");
  app.add_option("--cublas", o->cublas, "path of libcublas (else the loader's search)");
  app.add_option("--files", o->files,
                 "keep the layers in a file in this directory (written once), read through the "
                 "io engine each time a layer comes in: a model bigger than host memory");
  app.add_flag("--cold", o->cold, "with --files: drop the file from the page cache before each pass");
  app.add_flag("--graph", o->graph, "also capture the pass as graphs and time its replays");
  auto far = std::make_shared<std::string>();
  app.add_option("--far", *far,
                 "keep the layers in emulated far memory (CXL-like): LATENCY_US,GBPS[,FAULT_RATE], "
                 "e.g. 2,20,0.001: each read waits the latency, all share the cap (0: none), and "
                 "that share of reads fault and are retried with backoff");
  app.add_flag("--json", o->json, "print JSON");
  return [o, model, budgets, lookahead, no_broker, far] {
    stream_options run = *o;
    if (!far->empty()) run.far = parse_far(*far);
    if (!model->empty()) run.model_bytes = parse_size(*model);
    for (const auto& b : *budgets) run.budgets.push_back(parse_size(b));
    if (!lookahead->empty()) run.lookahead_bytes = parse_size(*lookahead);
    run.broker = !*no_broker;
    return dispatch(run);
  };
}

}  // namespace lris::tool
