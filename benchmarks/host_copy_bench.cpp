// Host copy paths: the staged engine against one-thread memcpy and against the raw threaded
// memcpy ceiling; huge pages against normal pages. Prints the ratios at the end, all from this
// one run.
#include <benchmark/benchmark.h>

#include <sys/mman.h>

#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include <lris/lris.hpp>

#include "../tools/common/raw_copy_team.hpp"

namespace {

const std::size_t bytes = std::size_t{1} << 30;
unsigned threads() { return std::max(1u, std::thread::hardware_concurrency()); }

// Two 1 GiB buffers, touched once; shared by the copy benchmarks.
struct pair_of_buffers {
  lris::buffer<lris::page_aligned_allocator> src{bytes}, dst{bytes};
  pair_of_buffers() {
    std::memset(src.data(), 0x42, bytes);
    std::memset(dst.data(), 0, bytes);
  }
};
pair_of_buffers& buffers() {
  static pair_of_buffers b;
  return b;
}

void set_rate(benchmark::State& state, std::size_t n) {
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(n));
}

void memcpy_one_thread(benchmark::State& state) {
  auto& b = buffers();
  for (auto _ : state) {
    std::memcpy(b.dst.data(), b.src.data(), bytes);
    benchmark::ClobberMemory();
  }
  set_rate(state, bytes);
}

// The ceiling: plain memcpy on a team of N started threads, one contiguous slice each.
void memcpy_raw_threads(benchmark::State& state) {
  auto& b = buffers();
  lris::tool::raw_copy_team team(static_cast<unsigned>(state.range(0)));
  for (auto _ : state) {
    team.copy(b.dst.data(), b.src.data(), bytes);
    benchmark::ClobberMemory();
  }
  set_rate(state, bytes);
}

void lris_staged(benchmark::State& state) {
  auto& b = buffers();
  lris::pipeline<lris::staged, lris::host_backend> p;
  const lris::transfer_options o{.chunk_bytes = static_cast<std::size_t>(state.range(1)) << 20,
                                 .workers = static_cast<unsigned>(state.range(0))};
  for (auto _ : state) {
    auto st = p.copy(b.dst.span(), b.src.span(), o).wait();
    benchmark::DoNotOptimize(st);
  }
  set_rate(state, bytes);
}

void lris_copy_auto(benchmark::State& state) {
  auto& b = buffers();
  for (auto _ : state) benchmark::DoNotOptimize(lris::copy(b.dst.span(), b.src.span()).wait());
  set_rate(state, bytes);
}

// Huge pages against normal pages: allocate, first touch (page faults) and one staged copy.
// Fault cost is where huge pages matter most: 512x fewer faults for 2 MiB pages.
template <class Allocator>
void alloc_touch_copy(benchmark::State& state) {
  auto& b = buffers();
  const std::size_t n = std::size_t{256} << 20;
  lris::pipeline<lris::staged, lris::host_backend> p;
  for (auto _ : state) {
    lris::buffer<Allocator> dst(n);
    p.copy(dst.span(), b.src.span().subspan(0, n), {.workers = threads()}).wait();
    benchmark::DoNotOptimize(dst.data());
  }
  set_rate(state, n);
}

// Keeps each run's rate so that ratios can be printed after all runs.
class ratio_reporter : public benchmark::ConsoleReporter {
 public:
  std::map<std::string, double> gbps;
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const auto& r : runs) {
      auto it = r.counters.find("bytes_per_second");
      if (it != r.counters.end()) gbps[r.benchmark_name()] = it->second.value / 1e9;
    }
    ConsoleReporter::ReportRuns(runs);
  }
};

}  // namespace

int main(int argc, char** argv) {
  const auto t = static_cast<std::int64_t>(threads());
  benchmark::RegisterBenchmark("memcpy_one_thread", memcpy_one_thread)->UseRealTime()->Unit(benchmark::kMillisecond);
  auto* raw = benchmark::RegisterBenchmark("memcpy_raw_threads", memcpy_raw_threads);
  for (std::int64_t n = 2; n < t; n *= 2) raw->Arg(n);
  raw->Arg(t)->UseRealTime()->Unit(benchmark::kMillisecond);
  auto* st = benchmark::RegisterBenchmark("lris_staged", lris_staged);
  for (std::int64_t chunk : {1, 4, 16}) st->Args({t, chunk});
  if (t > 8) st->Args({8, 4});
  st->UseRealTime()->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("lris_copy_auto", lris_copy_auto)->UseRealTime()->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("alloc_touch_copy/normal_pages",
                               alloc_touch_copy<lris::page_aligned_allocator>)->UseRealTime()->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("alloc_touch_copy/huge_pages",
                               alloc_touch_copy<lris::huge_page_allocator>)->UseRealTime()->Unit(benchmark::kMillisecond);

  benchmark::Initialize(&argc, argv);
  ratio_reporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);

  auto& g = reporter.gbps;
  auto best_of = [&](const std::string& prefix) {
    double best = 0;
    std::string name;
    for (auto& [k, v] : g) {
      if (k.rfind(prefix, 0) == 0 && v > best) best = v, name = k;
    }
    return std::pair{best, name};
  };
  const auto [one, one_name] = best_of("memcpy_one_thread");
  const auto [ceiling, ceiling_name] = best_of("memcpy_raw_threads");
  const auto [staged_gbps, staged_name] = best_of("lris_staged");
  const auto [auto_gbps, auto_name] = best_of("lris_copy_auto");
  const auto [normal, normal_name] = best_of("alloc_touch_copy/normal_pages");
  const auto [huge, huge_name] = best_of("alloc_touch_copy/huge_pages");
  fmt::print("\nRatios from this run ({} hardware threads, 1 GiB pageable -> pageable):\n", t);
  if (one > 0 && staged_gbps > 0) {
    fmt::print("  {} / memcpy one thread      = {:.2f}x  ({:.1f} vs {:.1f} GB/s)\n", staged_name,
               staged_gbps / one, staged_gbps, one);
  }
  if (ceiling > 0 && staged_gbps > 0) {
    fmt::print("  {} / raw threaded ceiling   = {:.2f}   ({} {:.1f} GB/s)\n", staged_name,
               staged_gbps / ceiling, ceiling_name, ceiling);
  }
  if (one > 0 && auto_gbps > 0) {
    fmt::print("  lris::copy (auto) / memcpy one thread = {:.2f}x\n", auto_gbps / one);
  }
  if (normal > 0 && huge > 0) {
    fmt::print("  allocate+touch+copy 256 MiB, huge / normal pages = {:.2f}x ({:.1f} vs {:.1f} GB/s)\n",
               huge / normal, huge, normal);
  }
  benchmark::Shutdown();
  return 0;
}
