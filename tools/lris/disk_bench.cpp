// lris bench --disk: file <-> host and file <-> GPU against a raw O_DIRECT io_uring read (and
// write) of the same file measured in the same run, cold (page cache dropped before each
// read) and warm.
#include "disk_bench.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <random>
#include <vector>

#include <fmt/format.h>

#include <lris/lris.hpp>
#if LRIS_HAS_CUDA()
#include <lris/cuda.hpp>
#endif

#include "../common/raw_uring.hpp"
#include "measure.hpp"

namespace lris::tool {

namespace {

using clock = std::chrono::steady_clock;

double seconds_of(const std::function<void()>& f) {
  const auto t = clock::now();
  f();
  return std::chrono::duration<double>(clock::now() - t).count();
}

// Runs each of `ops` in turn, `n` rounds, the order rotated from round to round (cold before
// each when `cold`), and returns each op's median rate in GB/s.
std::vector<double> interleaved(std::uint64_t bytes, int n, bool cold,
                                const std::filesystem::path& path,
                                const std::vector<std::function<void()>>& ops) {
  std::vector<std::vector<double>> rates(ops.size());
  for (int i = 0; i < n; ++i) {
    // Each round starts with another op: on virtual disks the first read after a drop can
    // be systematically faster or slower than the next.
    for (std::size_t j = 0; j < ops.size(); ++j) {
      const std::size_t k = (static_cast<std::size_t>(i) + j) % ops.size();
      if (cold) make_cold(path);
      rates[k].push_back(bytes / seconds_of(ops[k]) / 1e9);
    }
  }
  std::vector<double> medians;
  for (auto& r : rates) {
    std::sort(r.begin(), r.end());
    medians.push_back(r[r.size() / 2]);
  }
  return medians;
}

// The median of `n` runs of `op` (each given a fresh cold cache when `cold`), as GB/s.
double median_gbps(std::uint64_t bytes, int n, bool cold, const std::filesystem::path& path,
                   const std::function<void()>& op) {
  return interleaved(bytes, n, cold, path, {op})[0];
}

bench_row row(std::string name, double ceiling, double gbps, std::string path) {
  return {std::move(name), ceiling, {std::move(path)}, {gbps}};
}

template <class Backend>
std::vector<bench_table> run(const disk_bench_options& o, Backend be, bool tty) {
  namespace fs = std::filesystem;
  const fs::path dir = o.directory.empty() ? fs::current_path() : fs::path(o.directory);
  const fs::path file = o.file.empty() ? dir / "lris-bench-disk.bin" : fs::path(o.file);
  const fs::path written = dir / "lris-bench-disk-write.bin";
  // A given file is read whole, up to a multiple of 4 KiB (the raw baseline reads O_DIRECT).
  const std::uint64_t bytes = o.file.empty() ? o.bytes : fs::file_size(file) / 4096 * 4096;
  auto say = [&](const std::string& s) {
    if (tty) fmt::print(stderr, "  {}\n", s);
  };

  // The test file: random bytes, written once and kept for the next run.
  buffer<page_aligned_allocator> host(bytes);
  std::error_code ec;
  if (o.file.empty() && (fs::file_size(file, ec) != bytes || ec)) {
    say(fmt::format("writing {} of random bytes to {}", size_label(bytes), file.string()));
    std::mt19937_64 rng(1);
    auto* w = reinterpret_cast<std::uint64_t*>(host.data());
    for (std::uint64_t i = 0; i < bytes / 8; ++i) w[i] = rng();
    io::file out(file, io::open_mode::write);
    io::io_engine().write(out, 0, {host.data(), bytes});
    out.sync();
  }
  const io::file f(file);
  const std::string cold_note = make_cold(file);

  // Raw read ceiling: the best queue depth.
  const std::size_t block = std::size_t{1} << 20;
  double raw = 0;
  unsigned best_depth = 0;
  for (unsigned depth : {4u, 8u, 16u, 32u, 64u, 128u}) {
    const double r = median_gbps(bytes, 1, true, file, [&] {
      raw_uring_io(file, host.data(), bytes, depth, block, false);
    });
    say(fmt::format("raw O_DIRECT read, queue depth {}: {:.2f} GB/s", depth, r));
    if (r > raw) {
      raw = r;
      best_depth = depth;
    }
  }
  pipeline<auto_select, Backend> pipe(auto_select{}, be);
  buffer<device_allocator<Backend>> dev(bytes, device_allocator<Backend>(be));
  std::string io_note;
  auto to_host = [&] {
    const auto st = pipe.read(host.span(), f, 0).wait();
    io_note = st.io;
  };
  auto to_device = [&] {
    const auto st = pipe.read(dev.span(), f, 0).wait();
    io_note = st.io;
  };
  // Cold runs interleaved (raw, LRIS to host, LRIS to device, again): all three see the disk
  // in the same state, which on shared or virtual disks drifts from minute to minute.
  const std::vector<double> cold = interleaved(
      bytes, o.repeats, true, file,
      {[&] { raw_uring_io(file, host.data(), bytes, best_depth, block, false); }, to_host,
       to_device});
  raw = cold[0];
  bench_table reads{fmt::format("Disk reads: {} of {}, {} backend",
                                size_label(bytes), file.string(), Backend::name),
                    fmt::format("raw sequential O_DIRECT io_uring read of the same file, 1 MiB "
                                "blocks, best queue depth ({}), cold, median of {} runs "
                                "interleaved with the LRIS cold rows: {:.2f} GB/s; {}",
                                best_depth, o.repeats, raw, cold_note),
                    {bytes},
                    {}};
  reads.rows.push_back(row(fmt::format("raw O_DIRECT io_uring read, QD {} (ceiling)", best_depth),
                           raw, raw, "-"));
  reads.rows.push_back(row("lris read_file -> host, cold", raw, cold[1], "direct"));
  reads.rows.push_back(row("lris read_file -> device, cold", raw, cold[2], "staged"));
  say(fmt::format("file -> device, cold: {}", io_note));
  // Warm: a buffered read puts the file in the page cache (O_DIRECT reads never do).
  {
    io::io_options buffered;
    buffered.direct = io::direct_mode::never;
    io::io_engine(buffered).read(f, 0, {host.data(), bytes});
  }
  say(fmt::format("warm: {:.0f}% of the file in the page cache",
                  100 * io::io_engine::resident_fraction(f, 0, bytes)));
  reads.rows.push_back(row("lris read_file -> host, warm", raw,
                           median_gbps(bytes, o.repeats, false, file, to_host), "direct"));
  say(fmt::format("file -> host, warm: {}", io_note));
  reads.rows.push_back(row("lris read_file -> device, warm", raw,
                           median_gbps(bytes, o.repeats, false, file, to_device), "staged"));
  say(fmt::format("file -> device, warm: {}", io_note));
  // The memory path the warm file path is measured against: pageable host -> device, staged.
  reads.rows.push_back(row("lris pageable -> device (no file), same bytes", raw,
                           median_gbps(bytes, o.repeats, false, file, [&] {
                             pipe.copy(dev.span(), host.span()).wait();
                           }),
                           "staged"));

  // Writes: the raw O_DIRECT write ceiling, then LRIS from host and from device memory, all
  // overwriting one file that a first, untimed write has allocated.
  raw_uring_io(written, host.data(), bytes, 32, block, true);
  io::file out(written, io::open_mode::read_write);
  const std::vector<double> w = interleaved(
      bytes, o.repeats, false, written,
      {[&] { raw_uring_io(written, host.data(), bytes, 32, block, true); },
       [&] { io_note = pipe.write(out, 0, host.span()).wait().io; },
       [&] { io_note = pipe.write(out, 0, dev.span()).wait().io; }});
  const double raw_write = w[0];
  bench_table writes{fmt::format("Disk writes: {} to {}", size_label(bytes), written.string()),
                     fmt::format("raw sequential O_DIRECT io_uring write of the same size, 1 MiB "
                                 "blocks, queue depth 32, median of {} runs interleaved with the "
                                 "LRIS rows: {:.2f} GB/s",
                                 o.repeats, raw_write),
                     {bytes},
                     {}};
  writes.rows.push_back(row("raw O_DIRECT io_uring write, QD 32 (ceiling)", raw_write, raw_write,
                            "-"));
  writes.rows.push_back(row("lris write_file host -> file", raw_write, w[1], "direct"));
  writes.rows.push_back(row("lris write_file device -> file", raw_write, w[2], "staged"));
  say(fmt::format("device -> file: {}", io_note));
  out.sync();
  fs::remove(written, ec);
  return {reads, writes};
}

}  // namespace

std::vector<bench_table> disk_bench(const disk_bench_options& o, bool tty) {
#if LRIS_HAS_CUDA()
  if (cuda_backend::device_count() > 0) return run(o, cuda_backend(0), tty);
#endif
  return run(o, host_backend{}, tty);
}

}  // namespace lris::tool
