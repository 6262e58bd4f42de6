// lris bench --contention. Each mode runs `background` threads, each with its own pipeline (so
// its own streams), copying pinned host memory to device memory in a loop, while one more
// pipeline times a critical transfer every few milliseconds. Uncoordinated: pipelines without a
// broker, every copy one DMA. Coordinated: pipelines sharing a broker budgeted from the
// link's ceiling measured in this run; background work at background priority, the critical
// transfer at critical priority. Aggregate throughput counts the bytes of copies completed
// inside the timed window.
#include "contention_bench.hpp"

#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include <lris/lris.hpp>
#if LRIS_HAS_CUDA()
#include <lris/cuda.hpp>
#endif

#include "measure.hpp"

extern char** environ;

namespace lris::tool {

namespace {

using clock_type = std::chrono::steady_clock;

// CPU time of this process (every thread), in seconds.
double cpu_seconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  auto sec = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return sec(u.ru_utime) + sec(u.ru_stime);
}

long long now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now().time_since_epoch())
      .count();
}

// Pinned and device memory of one size, copied in the benchmark's direction.
template <class Backend>
struct pair_buffers {
  pair_buffers(Backend& be, std::size_t n, bool to_device_)
      : pinned(n, pinned_allocator<Backend>(be)), device(n, device_allocator<Backend>(be)),
        to_device(to_device_) {
    std::memset(pinned.data(), 0x42, n);
  }
  template <class Pipe>
  auto copy(Pipe& p, const transfer_options& o = {}) {
    return to_device ? p.copy(device.span(), pinned.span(), o) : p.copy(pinned.span(), device.span(), o);
  }
  buffer<pinned_allocator<Backend>> pinned;
  buffer<device_allocator<Backend>> device;
  bool to_device;
};

template <class Backend>
std::shared_ptr<pipeline<direct, Backend>> make_pipe(Backend be,
                                                     const std::shared_ptr<sched::bandwidth_broker>& s) {
  pipeline_config c;
  c.coordinated = s != nullptr;
  c.broker = s;
  return std::make_shared<pipeline<direct, Backend>>(direct{}, be, pinned_allocator<Backend>(be),
                                                     std::move(c));
}

// Background threads copying until `stop`; counts bytes of copies completed in [from, to).
template <class Backend>
class background_load {
 public:
  background_load(Backend be, const std::shared_ptr<sched::bandwidth_broker>& s, unsigned n,
                  std::size_t bytes, bool to_device)
      : from_(0), to_(0) {
    for (unsigned i = 0; i < n; ++i) {
      bufs_.push_back(std::make_unique<pair_buffers<Backend>>(be, bytes, to_device));
      pipes_.push_back(make_pipe(be, s));
    }
    for (unsigned i = 0; i < n; ++i) {
      threads_.emplace_back([this, i, bytes] {
        auto& b = *bufs_[i];
        while (!stop_.load()) {
          b.copy(*pipes_[i], {.priority = sched::priority::background}).wait();
          const long long t = now_ns();
          if (t >= from_.load() && t < to_.load()) {
            bytes_ += bytes;
            std::lock_guard lock(mutex_);
            done_ns_.push_back(t);
          }
        }
      });
    }
  }
  void window(long long from, long long to) {
    from_ = from;
    to_ = to;
  }
  std::uint64_t stop() {
    stop_ = true;
    for (auto& t : threads_) t.join();
    threads_.clear();
    return bytes_.load();
  }
  ~background_load() {
    if (!threads_.empty()) stop();
  }
  /// When each copy counted was complete (after stop()).
  const std::vector<long long>& done_ns() const { return done_ns_; }

 private:
  std::vector<std::unique_ptr<pair_buffers<Backend>>> bufs_;
  std::vector<std::shared_ptr<pipeline<direct, Backend>>> pipes_;
  std::vector<std::thread> threads_;
  std::atomic<bool> stop_{false};
  std::atomic<long long> from_, to_;
  std::atomic<std::uint64_t> bytes_{0};
  std::mutex mutex_;
  std::vector<long long> done_ns_;
};

struct latency_run {
  std::vector<double> ms;  // sorted
  std::uint64_t bytes = 0;
  double seconds = 0;
  sched::throttle_counts throttle;
  std::uint64_t token_waits = 0;
  std::uint64_t batched = 0;  // transfers that took the fallback path
  double p(double q) const {
    if (ms.empty()) return 0;
    const auto i = static_cast<std::size_t>(q * static_cast<double>(ms.size() - 1) + 0.5);
    return ms[std::min(i, ms.size() - 1)];
  }
};

// `samples` critical transfers, each after a random pause of 1-3 ms.
template <class Backend>
latency_run time_critical(pipeline<direct, Backend>& p, pair_buffers<Backend>& b, unsigned samples) {
  latency_run r;
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> pause_us(1000, 3000);
  const auto start = clock_type::now();
  for (unsigned i = 0; i < samples; ++i) {
    std::this_thread::sleep_for(std::chrono::microseconds(pause_us(rng)));
    const auto t0 = clock_type::now();
    const transfer_stats st =
        b.copy(p, {.priority = sched::priority::critical}).wait();
    r.ms.push_back(std::chrono::duration<double, std::milli>(clock_type::now() - t0).count());
    r.bytes += st.bytes;
    r.throttle += st.throttle;
    r.token_waits += st.token_waits;
    if (st.path == transfer_path::batched) ++r.batched;
  }
  r.seconds = std::chrono::duration<double>(clock_type::now() - start).count();
  std::sort(r.ms.begin(), r.ms.end());
  return r;
}

nlohmann::json latency_json(const latency_run& r) {
  return {{"p50_ms", r.p(0.5)},         {"p99_ms", r.p(0.99)},
          {"max_ms", r.ms.empty() ? 0 : r.ms.back()},
          {"samples", r.ms.size()},     {"token_waits", r.token_waits},
          {"fallback_transfers", r.batched},
          {"throttle", {{"none", r.throttle[sched::throttle_action::none]},
                        {"smaller_chunks", r.throttle[sched::throttle_action::smaller_chunks]},
                        {"delay_background", r.throttle[sched::throttle_action::delay_background]},
                        {"fallback_path", r.throttle[sched::throttle_action::fallback_path]}}}};
}


// Removes the shared segments of every resource a pipeline of `be` registers.
template <class Backend>
void remove_shared(const std::string& name, const Backend& be) {
  const std::string key = fmt::format("{}:{}", Backend::name, be.device());
  for (const auto& r : {sched::host_resource(), sched::link_resource(key, true),
                        sched::link_resource(key, false)}) {
    sched::bandwidth_broker::remove_shared(name, r);
  }
}

// A broker budgeting `be`'s link to the device with `ceiling` GB/s.
// The broker's options that the benchmark's options override.
sched::broker_options base_options(const contention_options& o) {
  sched::broker_options so;
  if (o.in_flight.count() > 0) so.in_flight = o.in_flight;
  if (o.spin.count() >= 0) so.spin = o.spin;
  return so;
}

template <class Backend>
std::shared_ptr<sched::bandwidth_broker> make_broker(const Backend& be, double ceiling,
                                                 const contention_options& o,
                                                 const std::string& shared = "",
                                                 const sched::throttle_options& throttle = {}) {
  sched::broker_options so = base_options(o);
  so.ceilings[sched::link_resource(fmt::format("{}:{}", Backend::name, be.device()), o.to_device)] =
      ceiling;
  so.shared_name = shared;
  so.throttle = throttle;
  return std::make_shared<sched::bandwidth_broker>(std::move(so));
}

// One mode in this process: background load (if any) and the critical transfers.
template <class Backend>
nlohmann::json run_mode(Backend be, const std::shared_ptr<sched::bandwidth_broker>& s,
                        const contention_options& o, pair_buffers<Backend>& crit, bool loaded,
                        latency_run* out = nullptr) {
  auto pipe = make_pipe(be, s);
  (void)crit.copy(*pipe).wait();  // streams and events made
  std::unique_ptr<background_load<Backend>> bg;
  if (loaded) {
    bg = std::make_unique<background_load<Backend>>(be, s, o.background, o.background_bytes,
                                                    o.to_device);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // saturated before timing
  }
  const long long from = now_ns();
  const double cpu_from = cpu_seconds();
  if (bg) bg->window(from, std::numeric_limits<long long>::max());
  latency_run r = time_critical(*pipe, crit, o.samples);
  const long long to = now_ns();
  const double cpu = cpu_seconds() - cpu_from;
  if (bg) bg->window(from, to);
  const std::uint64_t bg_bytes = bg ? bg->stop() : 0;
  const double secs = (to - from) / 1e9;
  nlohmann::json j = latency_json(r);
  j["background_bytes"] = bg_bytes;
  j["aggregate_gbps"] = (bg_bytes + r.bytes) / secs / 1e9;
  j["cpu_cores"] = cpu / secs;  // CPU time of every thread over the window, in cores
  if (out) *out = std::move(r);
  return j;
}

// The same with the background load in a second process (this program, `--contention-child`).
template <class Backend>
nlohmann::json run_two_process(Backend be, const std::string& shared, double ceiling,
                               const contention_options& o, pair_buffers<Backend>& crit) {
  std::shared_ptr<sched::bandwidth_broker> s;
  if (!shared.empty()) {
    remove_shared(shared, be);  // a segment left by an earlier run keeps its capacity
    s = make_broker(be, ceiling, o, shared);  // the segment's creator: its capacity holds
  }
  auto pipe = make_pipe(be, s);
  (void)crit.copy(*pipe).wait();
  // The child starts timing 1.5 s from now (its start-up: a GPU context) and runs long enough
  // to cover every sample.
  const long long start = now_ns() + 1'500'000'000LL;
  const double seconds = o.samples * 0.02 + 1.0;
  const std::string self = "/proc/self/exe";
  std::vector<std::string> args{"lris", "bench", "--contention-child", std::string(Backend::name),
                                "--contention-shared", shared.empty() ? "-" : shared,
                                "--contention-ceiling", fmt::format("{}", ceiling),
                                "--contention-start", std::to_string(start),
                                "--contention-seconds", fmt::format("{}", seconds),
                                "--contention-direction", o.to_device ? "h2d" : "d2h"};
  if (o.spin.count() >= 0) {
    args.insert(args.end(), {"--contention-spin-us", std::to_string(o.spin.count())});
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int fds[2];
  if (::pipe(fds) != 0) throw io_error(errno, "pipe for the contention child");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&fa, fds[0]);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, self.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    throw io_error(rc, "cannot start the contention child process");
  }
  while (now_ns() < start + 100'000'000LL) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  const long long from = now_ns();
  const double cpu_from = cpu_seconds();
  latency_run r = time_critical(*pipe, crit, o.samples);
  const long long to = now_ns();
  const double cpu = cpu_seconds() - cpu_from;
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<std::size_t>(n));
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  LRIS_EXPECTS(WIFEXITED(status) && WEXITSTATUS(status) == 0,
               "the contention child process failed (status {}): {}", status, out);
  const auto child = nlohmann::json::parse(out);
  // The child's copies completed inside this process's window.
  std::uint64_t child_bytes = 0;
  for (long long t : child.at("done_ns")) {
    if (t >= from && t < to) child_bytes += child.at("bytes_each").get<std::uint64_t>();
  }
  const double secs = (to - from) / 1e9;
  const double child_gbps = child_bytes / secs / 1e9;
  nlohmann::json j = latency_json(r);
  j["background_gbps"] = child_gbps;
  j["cpu_cores"] = cpu / secs;  // this process's: the critical copies only
  j["aggregate_gbps"] = child_gbps + r.bytes / secs / 1e9;
  j["child_covered_window"] = from >= start && to <= start + static_cast<long long>(seconds * 1e9);
  if (s) j["resources"] = status_json(*s);
  return j;
}

// One DMA of the buffers, in their direction.
template <class Backend>
double raw_gbps(Backend& be, pair_buffers<Backend>& b) {
  auto stream = be.make_stream();
  const std::size_t n = b.pinned.size();
  return measure_gbps(n, [&] {
    if (b.to_device) {
      be.copy_async(b.device.data(), b.pinned.data(), n, copy_kind::host_to_device, stream);
    } else {
      be.copy_async(b.pinned.data(), b.device.data(), n, copy_kind::device_to_host, stream);
    }
    be.synchronize(stream);
  });
}

template <class Backend>
nlohmann::json run_all(Backend be, const contention_options& o) {
  pair_buffers<Backend> crit(be, o.critical_bytes, o.to_device);
  const double ceiling = raw_gbps(be, crit);
  auto say = [&](const char* what) {
    if (o.tty) fmt::print(stderr, "lris bench --contention: {}...\n", what);
  };
  nlohmann::json j{{"backend", fmt::format("{}:{}", Backend::name, be.device())},
                   {"critical_bytes", o.critical_bytes},
                   {"background_bytes_each", o.background_bytes},
                   {"background_transfers", o.background},
                   {"link_ceiling_gbps", ceiling},
                   {"in_flight_us", base_options(o).in_flight.count()},
                   {"spin_us", base_options(o).spin.count()},
                   {"direction", o.to_device ? "pinned -> device" : "device -> pinned"},
                   {"ceiling_note", "one DMA of the critical buffer, in the direction, this run"}};
  // One mode with its own broker, destroyed at the end of the mode: nothing of it (its
  // thread, its monitor's sampling of the driver) runs on into the next mode.
  auto coordinated = [&](const sched::throttle_options& t, bool loaded) {
    auto sch = make_broker(be, ceiling, o, "", t);
    nlohmann::json m = run_mode(be, sch, o, crit, loaded);
    if (loaded) m["resources"] = status_json(*sch);
    return m;
  };
  say("critical transfers alone");
  j["alone_uncoordinated"] = run_mode(be, nullptr, o, crit, false);
  j["alone_coordinated"] = coordinated({}, false);
  say("with background transfers, uncoordinated");
  j["uncoordinated"] = run_mode(be, nullptr, o, crit, true);
  say("with background transfers, coordinated (default options: throttle off)");
  j["coordinated"] = coordinated({}, true);
  say("with background transfers, coordinated, throttle on");
  sched::throttle_options on;
  on.enabled = true;
  j["coordinated_throttle"] = coordinated(on, true);
  sched::throttle_options fallback = on;
  fallback.fallback = true;
  say("with background transfers, coordinated, throttle and path fallback on");
  j["coordinated_fallback"] = coordinated(fallback, true);
  if (o.two_process) {
    say("two processes, uncoordinated");
    j["two_process_uncoordinated"] = run_two_process(be, "", ceiling, o, crit);
    say("two processes, coordinated through shared memory");
    const std::string name = fmt::format("lris-contention-{}", ::getpid());
    j["two_process_coordinated"] = run_two_process(be, name, ceiling, o, crit);
    remove_shared(name, be);
  }
  const double alone = j["alone_coordinated"]["p99_ms"].get<double>();
  const double alone_raw = j["alone_uncoordinated"]["p99_ms"].get<double>();
  auto ratios = [&](const char* mode, const char* base) {
    if (!j.contains(mode) || !j.contains(base)) return;
    j["summary"][mode] = {
        {"p99_vs_alone", j[mode]["p99_ms"].get<double>() / alone},
        {"p99_vs_alone_uncoordinated", j[mode]["p99_ms"].get<double>() / alone_raw},
        {"aggregate_vs_uncoordinated",
         j[mode]["aggregate_gbps"].get<double>() / j[base]["aggregate_gbps"].get<double>()}};
  };
  ratios("uncoordinated", "uncoordinated");
  ratios("coordinated", "uncoordinated");
  ratios("coordinated_throttle", "uncoordinated");
  ratios("coordinated_fallback", "uncoordinated");
  ratios("two_process_uncoordinated", "two_process_uncoordinated");
  ratios("two_process_coordinated", "two_process_uncoordinated");
  return j;
}

template <class Backend>
int child_run(Backend be, const contention_options& o, const std::string& shared, double ceiling,
              long long start, double seconds) {
  std::shared_ptr<sched::bandwidth_broker> s;
  if (!shared.empty()) s = make_broker(be, ceiling, o, shared);
  const std::size_t bytes = o.background_bytes;
  background_load<Backend> bg(be, s, o.background, bytes, o.to_device);
  const long long end = start + static_cast<long long>(seconds * 1e9);
  bg.window(start, end);
  while (now_ns() < end) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  (void)bg.stop();
  fmt::print("{}\n", nlohmann::json{{"bytes_each", bytes}, {"done_ns", bg.done_ns()}}.dump());
  return 0;
}

}  // namespace

nlohmann::json status_json(sched::bandwidth_broker& s) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& r : s.status()) {
    nlohmann::json e{{"name", r.name},
                     {"capacity_bytes", r.capacity},
                     {"ceiling_gbps", r.ceiling_gbps},
                     {"bytes", r.bytes},
                     {"gbps", r.gbps},
                     {"utilization", r.utilization},
                     {"shared", r.shared},
                     {"congested_episodes", r.throttle.congested_episodes}};
    if (r.external) e["driver_gbps"] = r.external_gbps;  // NVML's PCIe counters
    for (std::size_t a = 0; a < sched::throttle_action_count; ++a) {
      e["decisions"][std::string(to_string(static_cast<sched::throttle_action>(a)))] =
          r.throttle.decisions[a];
    }
    for (std::size_t p = 0; p < sched::priority_count; ++p) {
      const auto name = std::string(to_string(static_cast<sched::priority>(p)));
      e["grants"][name] = r.grants[p];
      e["waits"][name] = r.waits[p];
    }
    j.push_back(std::move(e));
  }
  return j;
}

nlohmann::json contention_bench(const contention_options& o) {
#if LRIS_HAS_CUDA()
  if (cuda_backend::device_count() > 0) return run_all(cuda_backend(0), o);
#endif
  return run_all(host_backend{}, o);
}

int contention_child(const contention_options& o, const std::string& backend,
                     const std::string& shared, double ceiling, long long start_ns,
                     double seconds) {
#if LRIS_HAS_CUDA()
  if (backend == cuda_backend::name) {
    return child_run(cuda_backend(0), o, shared, ceiling, start_ns, seconds);
  }
#endif
  LRIS_EXPECTS(backend == host_backend::name, "--contention-child: unknown backend {}", backend);
  return child_run(host_backend{}, o, shared, ceiling, start_ns, seconds);
}

}  // namespace lris::tool
