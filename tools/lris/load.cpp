// lris load FILE|DIR --device cuda:0|hip:0|host: loads a safetensors checkpoint with a progress
// bar and says how long it took, at what rate, and along which path. --cold evicts the files
// from the page cache first; --raw measures raw reads of the same files by several methods in
// the same run (rounds interleaved), the best of them the ceiling; --verify compares every
// loaded byte with the file. The device starts (its runtime context) before the first load is
// timed, and the time it took is reported apart.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <lris/formats/load.hpp>
#include <lris/formats/verify.hpp>
#include <lris/lris.hpp>
#include <lris/system/format_bytes.hpp>
#if LRIS_HAS_CUDA()
#include <lris/cuda.hpp>
#endif
#if LRIS_HAS_HIP()
#include <lris/hip.hpp>
#endif

#include "../common/raw_read.hpp"
#include "commands.hpp"
#include "load_fan_out.hpp"
#include "load_pool.hpp"
#include "measure.hpp"

namespace lris::tool {

namespace {

struct load_cli {
  std::string path;
  std::string pool;
  std::string device = "host";
  std::string select;
  std::string convert;
  bool verify = false;
  bool cold = false;
  bool raw = false;
  int repeats = 1;
  bool json = false;
  std::string devices;
  unsigned tp = 1;
  unsigned rank = 0;
  std::string tp_plan;
  std::string route = "automatic";
  std::string nccl;
  std::string chunk;          // bytes each read task takes at once ("16M"); empty: the default
  unsigned workers = 0;       // read tasks in flight; 0: the default
  unsigned queue_depth = 0;   // reads in flight per io queue; 0: the engine's
  std::optional<unsigned> populate_threads;  // faulting in a host load's pages; none: automatic
};

// The read settings --chunk, --workers and --queue-depth ask for (zero: the default's).
transfer_options read_settings(const load_cli& c) {
  transfer_options t;
  if (!c.chunk.empty()) {
    t.chunk_bytes = parse_size(c.chunk);
    if (t.chunk_bytes == 0 || t.chunk_bytes % 4096 != 0) {
      throw invalid_argument(fmt::format("--chunk {}: a multiple of 4 KiB, more than zero",
                                         c.chunk));
    }
  }
  t.workers = c.workers;
  const unsigned most = io::io_options{}.queue_depth;  // the depth of the engine's rings
  if (c.queue_depth > most) {
    throw invalid_argument(fmt::format("--queue-depth {}: at most {}, the depth of the io "
                                       "engine's rings", c.queue_depth, most));
  }
  t.io.queue_depth = c.queue_depth;
  return t;
}

// Raw reads of every file of the checkpoint, one after another, no LRIS code, by several
// methods: the ceiling is the best of them, named. O_DIRECT io_uring on one ring at two queue
// depths and on several rings; cold, buffered reads on several threads too, and both at once
// on the two halves of each file (warm, buffered reads would read the page cache, not the
// disk).
struct raw_reader {
  struct method {
    raw_read_method how;
    std::vector<double> rates;  // GB/s, a round each
  };
  std::vector<std::pair<std::filesystem::path, std::uint64_t>> files;  // whole 4 KiB blocks
  std::uint64_t bytes = 0;
  buffer<page_aligned_allocator> buf;
  std::vector<method> methods;

  raw_reader(const safetensors::checkpoint& ck, bool cold) {
    std::uint64_t largest = 0;
    for (const auto& s : ck.shards()) {
      const std::uint64_t n = s.header.file_bytes / 4096 * 4096;
      files.emplace_back(s.file.path(), n);
      bytes += n;
      largest = std::max(largest, n);
    }
    buf = buffer<page_aligned_allocator>(static_cast<std::size_t>(std::max<std::uint64_t>(largest, 4096)));
    prefault(buf.data(), buf.size());
    const unsigned threads = std::clamp(usable_cpus(), 1u, 16u);
    auto direct = [&](unsigned queues, unsigned depth) {
      raw_read_method m;
      m.direct_queues = queues;
      m.depth = depth;
      m.name = fmt::format("O_DIRECT io_uring, {} ring{} at queue depth {}, 1 MiB reads", queues,
                           queues > 1 ? "s" : "", depth);
      methods.push_back({std::move(m), {}});
    };
    direct(1, 32);
    direct(1, 128);
    direct(4, 32);
    if (cold) {
      raw_read_method b;
      b.buffered_threads = threads;
      b.name = fmt::format("buffered pread, {} threads, 8 MiB reads", threads);
      methods.push_back({std::move(b), {}});
      raw_read_method h;
      h.direct_queues = 2;
      h.depth = 32;
      h.buffered_threads = std::max(1u, threads / 2);
      h.direct_share = 0.5;
      h.name = fmt::format("both: O_DIRECT on 2 rings at queue depth 32 for the first half, "
                           "buffered pread on {} threads for the second", h.buffered_threads);
      methods.push_back({std::move(h), {}});
    }
  }
  // Seconds for every file by `m`.
  double seconds(const method& m) {
    double s = 0;
    for (const auto& [path, n] : files) {
      if (n > 0) s += raw_read(path, buf.data(), n, m.how);
    }
    return s;
  }
  // The method with the best median, and that median.
  [[nodiscard]] std::pair<const method*, double> best() const {
    const method* top = nullptr;
    double rate = 0;
    for (const auto& m : methods) {
      if (!m.rates.empty() && median(m.rates) > rate) {
        rate = median(m.rates);
        top = &m;
      }
    }
    return {top, rate};
  }
};

template <class Pipeline>
int run_load(const load_cli& c, const transfer_options& reads, Pipeline& p,
             safetensors::load_target_memory where) {
  const safetensors::checkpoint ck(c.path);
  safetensors::load_options o;
  o.select = c.select;
  o.transfer = reads;
  o.populate_threads = c.populate_threads;
  if (c.tp > 1) {
    // One rank's slices only: one process per device, each reading just its bytes.
    o.slice = [plan = tp_plan_of(c.tp_plan, c.tp), rank = c.rank, tp = c.tp](
                  const safetensors::tensor_info& t) { return plan.slice(t, rank, tp); };
  }
  if (!c.convert.empty()) {
    o.convert_to = dtype_from_string(c.convert);
    if (!o.convert_to) throw invalid_argument(fmt::format("--convert: \"{}\" is not a dtype", c.convert));
  }
  const bool tty = !c.json;
  // The device's runtime starts (its context is made: 0.1-0.2 s for CUDA on an H200) before
  // the first load is timed, as in a process that has used the device already (any PyTorch
  // process); the time is reported apart.
  double device_start = 0;
  {
    using Backend = typename Pipeline::backend_type;
    const auto t0 = std::chrono::steady_clock::now();
    buffer<device_allocator<Backend>> probe(256, device_allocator<Backend>(p.backend()));
    device_start = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  std::vector<double> lris_rates;
  std::optional<raw_reader> raw;
  if (c.raw) raw.emplace(ck, c.cold);
  std::string cold_note;
  safetensors::loaded_checkpoint last;
  double open_seconds = 0;  // of the last load
  for (int r = 0; r < std::max(1, c.repeats); ++r) {
    // The raw reads go first in even rounds and last in odd ones: on virtual disks the first
    // read after a drop can be faster or slower than the next.
    auto raw_round = [&] {
      if (!raw) return;
      for (auto& m : raw->methods) {
        if (c.cold) {
          for (const auto& s : ck.shards()) cold_note = make_cold(s.file.path().string());
        }
        m.rates.push_back(static_cast<double>(raw->bytes) / raw->seconds(m) / 1e9);
      }
    };
    if (r % 2 == 0) raw_round();
    if (c.cold) {
      for (const auto& s : ck.shards()) cold_note = make_cold(s.file.path().string());
    }
    progress_bar bar(fmt::format("loading {}", format_bytes(ck.data_bytes())));
    if (tty) {
      o.on_progress = [&](std::uint64_t done, std::uint64_t total) {
        bar.update(total ? static_cast<double>(done) / static_cast<double>(total) : 1.0);
        return true;
      };
    }
    // The whole call as a user waits for it, as the peers and lris.load are timed: the
    // checkpoint opened (its headers read, from the disk when cold), the tensors' memory
    // allocated, the reads.
    const auto start = std::chrono::steady_clock::now();
    const safetensors::checkpoint opened(c.path);
    open_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    last = safetensors::load(p, opened, o, where);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    bar.done();
    lris_rates.push_back(static_cast<double>(last.report.file_bytes) / seconds / 1e9);
    last.report.seconds = seconds;
    if (r % 2 == 1) raw_round();
  }
  const auto& rep = last.report;
  const double rate = median(lris_rates);
  const auto [raw_best, raw_rate] = raw ? raw->best() : std::pair<const raw_reader::method*, double>{};

  const std::size_t verified = c.verify ? safetensors::verify(p, ck, last) : 0;

  if (c.json) {
    nlohmann::json out{{"path", ck.path().string()},
                       {"device", c.device},
                       {"tensors", rep.tensors},
                       {"file_bytes", rep.file_bytes},
                       {"memory_bytes", rep.memory_bytes},
                       {"seconds", rep.seconds},
                       {"device_start_seconds", device_start},
                       {"open_seconds", open_seconds},
                       {"gbps", rate},
                       {"rounds", lris_rates},
                       {"route", rep.path},
                       {"io", rep.io},
                       {"chunks", rep.chunks},
                       {"chunk_bytes", rep.chunk_bytes},
                       {"workers", rep.workers},
                       {"staging_bytes", rep.staging_bytes},
                       {"populate_threads", rep.populate_threads},
                       {"populated_bytes", rep.populated_bytes},
                       {"converted", rep.converted},
                       {"io_bytes", rep.io_direct_bytes + rep.io_buffered_bytes},
                       {"cold", c.cold}};
    if (c.cold) out["cold_note"] = cold_note;
    if (c.verify) out["verified"] = verified;
    if (raw) {
      out["raw_gbps"] = raw_rate;
      out["raw_method"] = raw_best != nullptr ? raw_best->how.name : "";
      nlohmann::json methods = nlohmann::json::object();
      for (const auto& m : raw->methods) methods[m.how.name] = m.rates;
      out["raw_methods"] = methods;
      out["ratio"] = raw_rate > 0 ? rate / raw_rate : 0;
    }
    fmt::print("{}\n", out.dump(2));
    return 0;
  }
  fmt::print("loaded {} tensors, {} in {:.3f} s: {:.2f} GB/s{}\n", rep.tensors,
             format_bytes(rep.file_bytes), rep.seconds, rate,
             c.repeats > 1 ? fmt::format(" (median of {})", c.repeats) : "");
  fmt::print("  path: {}\n  io:   {}\n", rep.path, rep.io.empty() ? "-" : rep.io);
  fmt::print("  device start-up before the first load (not in the figures): {:.3f} s\n",
             device_start);
  if (rep.converted > 0) fmt::print("  converted {} tensors to {}\n", rep.converted, c.convert);
  if (c.cold) fmt::print("  cold: {}\n", cold_note);
  if (raw) {
    for (const auto& m : raw->methods) {
      fmt::print("  raw read, {}: {:.2f} GB/s{}\n", m.how.name, median(m.rates),
                 &m == raw_best ? " (the best: the ceiling)" : "");
    }
    fmt::print("  LRIS is {:.2f} of the best raw read\n", raw_rate > 0 ? rate / raw_rate : 0);
  }
  if (c.verify) fmt::print("  verified: every byte of {} tensors matches the file\n", verified);
  return 0;
}

int dispatch(const load_cli& c) {
  if (c.path.empty() == c.pool.empty()) {
    throw invalid_argument("load: give a checkpoint (FILE or DIR) or --pool NAME, one of them");
  }
  if (c.rank >= c.tp) {
    throw invalid_argument(fmt::format("load: --rank {} of --tp {}: ranks are 0 to {}", c.rank,
                                       c.tp, c.tp - 1));
  }
  const transfer_options reads = read_settings(c);  // refused before any device starts
  if (!c.nccl.empty() && c.route != "nccl") {
    throw invalid_argument("load: --nccl names the library of --route nccl, and the route is " +
                           c.route + " (the automatic route never takes NCCL)");
  }
  if (c.devices.empty() && (c.route != "automatic" || !c.nccl.empty())) {
    throw invalid_argument("load: --route and --nccl apply to --devices (a load onto several "
                           "devices)");
  }
  if (c.populate_threads && (c.device != "host" || !c.pool.empty() || !c.devices.empty())) {
    throw invalid_argument("load --populate-threads: applies to a load from files into host "
                           "memory (--device host)");
  }
  if (!c.devices.empty()) {
    if (c.raw || !c.convert.empty() || c.repeats != 1 || c.rank != 0 || c.device != "host") {
      throw invalid_argument("load --devices: --raw, --convert, --repeat, --rank and --device "
                             "apply to a load onto one device");
    }
    if (!c.pool.empty() && (c.cold || !c.select.empty() || !c.chunk.empty() || c.workers != 0 ||
                            c.queue_depth != 0)) {
      throw invalid_argument("load --pool --devices: --cold, --select, --chunk, --workers and "
                             "--queue-depth apply to files");
    }
    return load_fan_out({c.path, c.devices, c.tp, c.tp_plan, c.select, c.route, c.nccl,
                         c.verify, c.cold, c.json, c.pool, reads});
  }
  if (!c.pool.empty()) {
    if (c.cold || c.raw || !c.select.empty() || !c.convert.empty() || c.repeats != 1 ||
        !c.chunk.empty() || c.workers != 0 || c.queue_depth != 0) {
      throw invalid_argument("load --pool: --cold, --raw, --select, --convert, --repeat, "
                             "--chunk, --workers and --queue-depth apply to files, not to a "
                             "pool");
    }
    return load_from_pool({c.pool, c.device, c.verify, c.json, c.tp, c.rank, c.tp_plan});
  }
  const auto [kind, index] = parse_device(c.device);
  if (kind == "host") {
    pipeline<auto_select, host_backend> p;
    return run_load(c, reads, p, safetensors::load_target_memory::host);
  }
#if LRIS_HAS_CUDA()
  if (kind == "cuda") {
    pipeline<auto_select, cuda_backend> p(auto_select{}, cuda_backend(index));
    return run_load(c, reads, p, safetensors::load_target_memory::device);
  }
#endif
#if LRIS_HAS_HIP()
  if (kind == "hip") {
    pipeline<auto_select, hip_backend> p(auto_select{}, hip_backend(index));
    return run_load(c, reads, p, safetensors::load_target_memory::device);
  }
#endif
  throw invalid_argument(fmt::format(
      "--device \"{}\": not a device of this build (host{}{})", c.device,
      LRIS_HAS_CUDA() ? ", cuda:N" : "", LRIS_HAS_HIP() ? ", hip:N" : ""));
}

}  // namespace

command add_load(CLI::App& app) {
  auto c = std::make_shared<load_cli>();
  app.add_option("path", c->path, "a .safetensors file, or a model directory (sharded or not)");
  app.add_option("--pool", c->pool, "load the tensors of this host pool instead (lris pool "
                                    "create), no file read");
  app.add_option("--device", c->device, "where the tensors go: host, cuda:N or hip:N")
      ->capture_default_str();
  app.add_option("--devices", c->devices,
                 "load onto several devices at once, reading the files once: cuda:0,cuda:1 "
                 "(or host:0,host:1 on the host backend)");
  app.add_option("--route", c->route,
                 "with --devices: dma (each device from the pinned slots over its own link), "
                 "peer (each chunk into one device, the others copy it from there), nccl (each "
                 "chunk into one device, NCCL broadcasts it), or automatic (peer where every pair "
                 "of devices has NVLink, else dma; reported)")
      ->capture_default_str();
  app.add_option("--nccl", c->nccl, "with --devices: the NCCL library to load (default "
                                    "libnccl.so.2, librccl.so.1 for hip): a file name or path");
  app.add_option("--tp", c->tp, "tensor-parallel ranks: each device (with --devices: device i "
                                "is rank i mod N) gets only its slice of each split tensor")
      ->check(CLI::Range(1u, 1024u));
  app.add_option("--rank", c->rank, "with --tp and one device: the rank whose slices to load "
                                    "(one process per device)");
  app.add_option("--tp-plan", c->tp_plan,
                 "which tensors --tp splits, and how: a JSON file {\"pattern\": \"colwise\"|"
                 "\"rowwise\"|\"replicate\"|\"dim=N\"} as transformers' tp_plan (a config.json "
                 "with base_model_tp_plan too), or llama (the default)");
  app.add_option("--select", c->select, "only tensors whose name this regular expression finds");
  app.add_option("--convert", c->convert, "convert floating-point tensors to this dtype (F32, BF16, F16)");
  app.add_flag("--verify", c->verify, "compare every loaded byte with the file afterwards");
  app.add_flag("--cold", c->cold, "evict the files from the page cache before each load");
  app.add_flag("--raw", c->raw,
               "also time raw reads of the same files (O_DIRECT io_uring at several queue depths "
               "and rings; with --cold, buffered reads on several threads, and both at once): "
               "the best is the ceiling, named");
  app.add_option("--repeat", c->repeats, "loads (and raw reads) to take the median of")
      ->check(CLI::PositiveNumber);
  app.add_option("--chunk", c->chunk, "bytes each read task takes at once, a multiple of "
                                      "4 KiB (16M, 64M; default: 16M for reads that bypass "
                                      "the page cache; onto one device, rounded up to whole "
                                      "MiB)");
  app.add_option("--workers", c->workers, "read tasks in flight at once (default: by the "
                                          "disk's profile, else 8 for reads that bypass the "
                                          "page cache)");
  app.add_option("--queue-depth", c->queue_depth, "reads in flight on each io_uring queue, at "
                                                  "most the engine's 64 (default: 64)");
  app.add_option("--populate-threads", c->populate_threads,
                 "threads that fault in a host load's pages ahead of its reads from the disk "
                 "(0: none; default: one per 8 CPUs, 1 to 4)");
  app.add_flag("--json", c->json, "print JSON");
  return [c] { return dispatch(*c); };
}

}  // namespace lris::tool
