// lris demo: in under a minute, what LRIS does on this machine. Runs anywhere: without a GPU,
// the host backend stands in for one.
#include <xxhash.h>

#include <fcntl.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <cstring>
#include <memory>
#include <random>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <lris/lris.hpp>
#if LRIS_HAS_CUDA()
#include <lris/cuda.hpp>
#endif

#include "commands.hpp"
#include "measure.hpp"

namespace lris::tool {

namespace {

struct demo_options {
  std::string size = "1G";
  bool json = false;
};

double seconds_of(const std::function<void()>& f) {
  const auto t = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// Fills with pseudo-random words in parallel: a checksum over zeros would prove little.
void fill_random(std::byte* p, std::size_t n) {
  const auto pool_owner = detail::default_thread_pool();
  auto& pool = *pool_owner;
  const std::size_t piece = std::size_t{16} << 20;
  detail::parallel_for(pool, (n + piece - 1) / piece, pool.size() + 1, [&](std::size_t i) {
    std::mt19937_64 rng(0x1f2e3d4c + i);
    const std::size_t off = i * piece, len = std::min(piece, n - off);
    for (std::size_t k = 0; k + 8 <= len; k += 8) {
      const std::uint64_t v = rng();
      std::memcpy(p + off + k, &v, 8);
    }
    for (std::size_t k = len & ~std::size_t{7}; k < len; ++k) p[off + k] = std::byte(rng());
  });
}

// Runs `t`'s transfer with a progress bar and returns its stats.
template <class Start>
transfer_stats with_progress(const std::string& label, bool show, Start start) {
  progress_bar bar(label);
  transfer_options o;
  if (show) {
    o.on_progress = [&](std::uint64_t done, std::uint64_t total) {
      bar.update(static_cast<double>(done) / static_cast<double>(total));
      return true;
    };
  }
  transfer_stats st = start(o).wait();
  bar.done();
  return st;
}

// Steps 3 and 4 on `be`: pageable host -> device -> host through the pinned staging ring with
// progress bars, then a transfer cancelled halfway. True when the round trip is intact.
template <class Backend>
bool device_steps(Backend be, const std::byte* src, buffer<pageable_allocator>& dst,
                  std::size_t n, XXH64_hash_t want, bool text, nlohmann::json& out) {
  buffer<device_allocator<Backend>> dev(n, device_allocator<Backend>(be));
  // The host backend's "device" memory faults in on first touch; keep that out of the rates.
  if constexpr (std::is_same_v<Backend, host_backend>) prefault(dev.data(), n);
  auto& pipe = default_pipeline<Backend>(be.device());
  const auto host_src = as_host<const std::byte>(src, n);
  // The first staged transfer of a pipeline also pins its ring slots (page-locking memory is
  // slow); show that cost apart from the steady rate.
  const transfer_stats first = with_progress("pageable -> device, first", text, [&](auto& opt) {
    return pipe.copy(dev.span(), host_src, opt);
  });
  const transfer_stats up = with_progress("pageable -> device", text, [&](auto& opt) {
    return pipe.copy(dev.span(), host_src, opt);
  });
  std::memset(dst.data(), 0, n);
  const transfer_stats down = with_progress("device -> pageable", text, [&](auto& opt) {
    return pipe.copy(dst.span(), dev.span(), opt);
  });
  const bool ok = XXH64(dst.data(), n, 0) == want;
  if (text) {
    fmt::print("3. Host -> device -> host through the pinned staging ring ({} backend)\n",
               up.backend);
    fmt::print("   up:   {:6.1f} GB/s  {} path, {} chunks of {}, {} workers, {} streams, {} ring "
               "slots\n",
               up.gbps(), to_string(up.path), up.chunks, format_bytes(up.chunk_bytes), up.workers,
               up.streams, up.ring_slots);
    fmt::print("   first transfer {:6.1f} GB/s: it also pinned the ring's {} of staging memory\n",
               first.gbps(), format_bytes(static_cast<std::uint64_t>(first.ring_slots) *
                                          first.chunk_bytes));
    fmt::print("   down: {:6.1f} GB/s  {} path; round trip checksum {}\n\n", down.gbps(),
               to_string(down.path), ok ? "ok" : "MISMATCH");
  }
  out["device_backend"] = std::string(Backend::name);
  out["h2d"] = {{"gbps", up.gbps()}, {"path", to_string(up.path)}};
  out["d2h"] = {{"gbps", down.gbps()}, {"path", to_string(down.path)}, {"verified", ok}};

  // Cancellation: stop a transfer halfway; what arrived is whole, the rest untouched.
  transfer_options half;
  half.chunk_bytes = std::max<std::size_t>(n / 64, 4096);
  half.on_progress = [](std::uint64_t done, std::uint64_t total) { return done * 2 < total; };
  auto t = pipe.copy(dev.span(), host_src, half);
  std::uint64_t delivered = 0;
  try {
    (void)t.wait();
    delivered = n;
  } catch (const cancelled&) {
    delivered = t.bytes_done();
  }
  if (text) {
    fmt::print("4. Cancelled a transfer from its progress callback at {:.0f}%: {} of {} "
               "delivered, the pipeline is ready for the next one.\n\n",
               100.0 * static_cast<double>(delivered) / static_cast<double>(n),
               format_bytes(delivered), format_bytes(n));
  }
  out["cancelled_at"] = static_cast<double>(delivered) / static_cast<double>(n);

  // Files: device -> file, then file -> device from a cold page cache, through the io engine.
  // The current directory is usually on a disk; /tmp is often tmpfs, where O_DIRECT is refused.
  const auto path = std::filesystem::current_path() / ".lris-demo.bin";
  bool file_ok = false;
  try {
    io::file f(path, io::open_mode::create);
    const transfer_stats saved = pipe.write(f, 0, dev.span()).wait();
    f.sync();
    ::posix_fadvise(f.fd(), 0, 0, POSIX_FADV_DONTNEED);  // cold, as far as this process can
    std::memset(dst.data(), 0, n);
    pipe.copy(dev.span(), dst.span()).wait();  // overwrite the device copy with zeros
    const transfer_stats loaded = with_progress("file -> device", text, [&](auto& opt) {
      return pipe.read(dev.span(), f, 0, opt);
    });
    pipe.copy(dst.span(), dev.span()).wait();
    file_ok = XXH64(dst.data(), n, 0) == want;
    if (text) {
      fmt::print("5. Device -> file -> device through the io engine ({})\n", path.string());
      fmt::print("   saved:  {:6.1f} GB/s  {}\n", saved.gbps(), saved.io);
      fmt::print("   loaded: {:6.1f} GB/s  {}; checksum {}\n\n", loaded.gbps(), loaded.io,
                 file_ok ? "ok" : "MISMATCH");
    }
    out["file"] = {{"path", path.string()}, {"save_gbps", saved.gbps()}, {"save_io", saved.io},
                   {"load_gbps", loaded.gbps()}, {"load_io", loaded.io}, {"verified", file_ok}};
  } catch (const std::exception& e) {
    // A read-only or full directory is the machine, not LRIS: say so and go on.
    if (text) fmt::print("5. Files: skipped, {}\n\n", e.what());
    out["file"] = {{"skipped", e.what()}};
    file_ok = true;
  }
  std::error_code ec;
  std::filesystem::remove(path, ec);
  return ok && file_ok;
}

// The GPU the demo uses, or why the host backend stands in for one.
std::string gpu_line() {
#if LRIS_HAS_CUDA()
  const auto status = cuda::runtime_status();
  if (status.usable()) {
    const auto d = cuda::list_devices().at(0);
    return fmt::format("{} ({}, PCIe Gen{} x{}), through cuda_backend", d.name,
                       format_bytes(d.total_memory_bytes), d.current_link.generation,
                       d.current_link.width);
  }
  return fmt::format("none usable ({}), so the host backend stands in for one\n         (same "
                     "pipelines, streams and staging ring; \"device\" memory is host memory).",
                     status.reason);
#else
  return "none used: this build has no GPU backend, so the host backend stands in for one\n"
         "         (same pipelines, streams and staging ring; \"device\" memory is host memory).";
#endif
}

bool run_device_steps(const std::byte* src, buffer<pageable_allocator>& dst, std::size_t n,
                      XXH64_hash_t want, bool text, nlohmann::json& out) {
#if LRIS_HAS_CUDA()
  if (cuda::runtime_status().usable()) return device_steps(cuda_backend(0), src, dst, n, want, text, out);
#endif
  return device_steps(host_backend{}, src, dst, n, want, text, out);
}

}  // namespace

command add_demo(CLI::App& app) {
  auto o = std::make_shared<demo_options>();
  app.add_option("--size", o->size, "bytes to move in each step (default 1G, less when memory "
                 "is short)");
  app.add_flag("--json", o->json, "machine-readable output");
  return [o] {
    nlohmann::json out;
    const bool text = !o->json;
    auto say = [&]<class... A>(fmt::format_string<A...> f, A&&... a) {
      if (text) fmt::print(f, std::forward<A>(a)...);
    };
    const host_info info = probe_host();
    std::size_t n = parse_size(o->size);
    // Four buffers must fit in a quarter of the available memory.
    if (info.memory.available_bytes && n * 4 > info.memory.available_bytes / 4) {
      n = std::max<std::size_t>(std::size_t{16} << 20,
                                (info.memory.available_bytes / 16) & ~((std::size_t{1} << 20) - 1));
    }
    LRIS_EXPECTS(n >= 4096, "demo: --size {} is too small (at least 4K)", o->size);

    say("LRIS {} demo: moving {} between memories on this machine.\n\n", LRIS_VERSION_STRING,
        format_bytes(n));
    say("Machine: {}, {} threads, {} memory ({} available), {} NUMA node(s), THP {}, io_uring {}\n",
        info.cpu.model_name, info.cpu.allowed_threads, format_bytes(info.memory.total_bytes),
        format_bytes(info.memory.available_bytes), std::max<std::size_t>(1, info.numa.nodes.size()),
        info.huge_pages.thp_enabled, info.io_uring.available ? "available" : "unavailable");
    say("GPU:     {}\n\n", gpu_line());
    out["bytes"] = n;
    out["cpu"] = info.cpu.model_name;
    out["threads"] = info.cpu.allowed_threads;

    // 1. Memory: huge pages where the machine gives them.
    huge_page_allocator huge;
    const huge_allocation src_alloc = huge.allocate_reporting(n);
    std::unique_ptr<void, std::function<void(void*)>> src_guard(
        src_alloc.ptr, [&](void* p) { huge.deallocate(p, n); });
    auto* src = static_cast<std::byte*>(src_alloc.ptr);
    buffer<pageable_allocator> dst(n);
    say("1. Allocated the source with huge_page_allocator: got {} pages.\n",
        to_string(src_alloc.kind));
    out["source_pages"] = std::string(to_string(src_alloc.kind));

    fill_random(src, n);
    prefault(dst.data(), n);
    const XXH64_hash_t want = XXH64(src, n, 0);
    say("   Filled it with random data, XXH64 {:016x}.\n\n", want);

    // 2. Host copy: one memcpy against LRIS's parallel copy engine.
    const double t_memcpy = std::min(seconds_of([&] { std::memcpy(dst.data(), src, n); }),
                                     seconds_of([&] { std::memcpy(dst.data(), src, n); }));
    std::memset(dst.data(), 0, n);
    transfer_stats h2h;
    for (int i = 0; i < 2; ++i) {  // the second run is warm (threads started)
      h2h = lris::copy(dst.span(), as_host<const std::byte>(src, n)).wait();
    }
    const bool h2h_ok = XXH64(dst.data(), n, 0) == want;
    const double memcpy_gbps = n / t_memcpy / 1e9;
    say("2. Host -> host copy\n");
    say("   memcpy, one thread:        {:6.1f} GB/s\n", memcpy_gbps);
    say("   lris::copy ({} path, {} workers, {} chunks): {:6.1f} GB/s = {:.1f}x, checksum {}\n\n",
        to_string(h2h.path), h2h.workers, h2h.chunks, h2h.gbps(), h2h.gbps() / memcpy_gbps,
        h2h_ok ? "ok" : "MISMATCH");
    out["memcpy_gbps"] = memcpy_gbps;
    out["h2h"] = {{"gbps", h2h.gbps()}, {"path", to_string(h2h.path)}, {"verified", h2h_ok}};

    const bool round_ok = run_device_steps(src, dst, n, want, text, out);

    const bool ok = h2h_ok && round_ok;
    say("{}\nNext: `lris bench` for the full table, `lris calibrate` to tune auto_select to "
        "this machine,\n      `lris info` for the details.\n",
        ok ? "Every byte arrived intact." : "ERROR: data did not arrive intact.");
    out["ok"] = ok;
    if (o->json) fmt::print("{}\n", out.dump(2));
    return ok ? 0 : 1;
  };
}

}  // namespace lris::tool
