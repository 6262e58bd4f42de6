// lris::context: who owns threads, the default, fork(), CPUs the process may use.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstring>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include <lris/lris.hpp>

#include "support/what_contains.hpp"

namespace {
// The exit code of a child process, or -1 when it did not exit normally within 30 s (it is
// then killed): a hang fails the test instead of blocking it.
int exit_code_of(pid_t child) {
  int status = 0;
  pid_t got = 0;
  for (int i = 0; i < 3000 && got == 0; ++i) {
    got = ::waitpid(child, &status, WNOHANG);
    if (got == 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (got == 0) {
    ::kill(child, SIGKILL);
    ::waitpid(child, &status, 0);
    return -1;
  }
  return got == child && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Every thread of `pool` kept in a task that sleeps until the holder is destroyed, so that a
// fork() finds none of them inside the allocator. A thread that has just started may be there
// (it sets itself up); the child of a fork then inherits the allocator's lock held, and
// AddressSanitizer's allocator of GCC 12 does not take its locks around fork() as glibc's
// malloc does: the child's first allocations waited forever.
class held_threads {
 public:
  explicit held_threads(lris::detail::thread_pool& pool) : state_(std::make_shared<state>()) {
    const unsigned n = pool.size();
    for (unsigned i = 0; i < n; ++i) {
      pool.submit([s = state_] {
        s->started.fetch_add(1);
        while (!s->released.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      });
    }
    while (state_->started.load() < n) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~held_threads() { state_->released = true; }
  held_threads(const held_threads&) = delete;
  held_threads& operator=(const held_threads&) = delete;

 private:
  struct state {
    std::atomic<unsigned> started{0};
    std::atomic<bool> released{false};
  };
  std::shared_ptr<state> state_;
};
}  // namespace

TEST_CASE("cgroup quotas are read as whole CPUs, rounded up", "[exec][cpus]") {
  using lris::detail::cpus_from_cfs;
  using lris::detail::cpus_from_cpu_max;
  CHECK(cpus_from_cpu_max("max 100000") == std::nullopt);
  CHECK(cpus_from_cpu_max("200000 100000") == 2u);
  CHECK(cpus_from_cpu_max("150000 100000\n") == 2u);
  CHECK(cpus_from_cpu_max("50000 100000") == 1u);
  CHECK(cpus_from_cpu_max("") == std::nullopt);
  CHECK(cpus_from_cpu_max("garbage") == std::nullopt);
  CHECK(cpus_from_cpu_max("12x 100000") == std::nullopt);
  CHECK(cpus_from_cfs("-1", "100000") == std::nullopt);
  CHECK(cpus_from_cfs("400000", "100000") == 4u);
  CHECK(cpus_from_cfs("", "") == std::nullopt);
}

TEST_CASE("pools follow the CPUs the process may use, not the machine's", "[exec][cpus]") {
  const unsigned cpus = lris::usable_cpus();
  CHECK(cpus >= 1);
  CHECK(cpus <= std::max(1u, std::thread::hardware_concurrency()));
  auto ctx = lris::context::make();
  CHECK(ctx->compute().size() == cpus);
  CHECK(ctx->options().threads == cpus);
  CHECK(ctx->io().size() >= 8);
  // Asked for explicitly.
  auto small = lris::context::make({.threads = 2, .background_threads = 1, .io_threads = 3});
  CHECK(small->compute().size() == 2);
  CHECK(small->compute().background_threads() == 1);
  CHECK(small->io().size() == 3);
}

TEST_CASE("pipelines run on their context's threads and broker", "[exec][context]") {
  auto ctx = lris::context::make({.threads = 3});
  lris::pipeline<lris::staged, lris::host_backend> p(
      lris::staged{.chunk_bytes = 1 << 20, .workers = 3}, lris::host_backend{0},
      lris::pinned_allocator<lris::host_backend>{}, lris::pipeline_config{.context = ctx});
  CHECK(p.context() == ctx);
  CHECK(p.broker() == ctx->broker());
  std::vector<std::byte> src(8 << 20, std::byte{7}), dst(src.size());
  lris::buffer<lris::device_allocator<lris::host_backend>, std::byte> dev(src.size());
  const auto st = p.copy(dev.span(), lris::as_host(src)).wait();
  CHECK(st.workers <= 3);
  p.copy(lris::as_host(dst), dev.span()).wait();
  CHECK(std::memcmp(dst.data(), src.data(), src.size()) == 0);
  // The default pipelines live in the default context.
  CHECK(lris::default_pipeline<lris::host_backend>().context().get() ==
        lris::default_context().get());
}

TEST_CASE("the context keeps the staging its pipelines share: one ring per setting",
          "[exec][context]") {
  using pipe = lris::pipeline<lris::auto_select, lris::host_backend>;
  using staging = lris::exec::staging<lris::host_backend, lris::pinned_allocator<lris::host_backend>>;
  auto ctx = lris::context::make({.threads = 2});
  lris::pipeline_config config{.context = ctx};
  std::weak_ptr<staging> kept;
  {
    pipe a({}, lris::host_backend{0}, {}, config), b({}, lris::host_backend{0}, {}, config);
    // One ring and one io engine; streams of their own, so that neither queues behind the other.
    CHECK(a.executor()->staged == b.executor()->staged);
    CHECK(&a.io() == &b.io());
    CHECK(a.executor() != b.executor());
    CHECK(a.reserve_staging(1 << 20, 2) == 2);
    kept = a.executor()->staged;
    auto other = config;
    other.max_staging_bytes = 64 << 20;
    pipe c({}, lris::host_backend{0}, {}, other);
    CHECK(c.executor()->staged != a.executor()->staged);
    CHECK(c.max_slot_bytes() == (64 << 20));
    pipe d({}, lris::host_backend{0}, {},
           lris::pipeline_config{.context = lris::context::make({.threads = 1})});
    CHECK(d.executor()->staged != a.executor()->staged);
    // An io make_queue hook (fault injection) is never shared.
    auto hooked = config;
    hooked.io.make_queue = [](unsigned) { return std::unique_ptr<lris::io::io_queue>(); };
    pipe e({}, lris::host_backend{0}, {}, hooked), f({}, lris::host_backend{0}, {}, hooked);
    CHECK(e.executor()->staged != f.executor()->staged);
  }
  // Every pipeline is gone; the context keeps the staging, and a new pipeline gets it with its
  // slots pinned already.
  REQUIRE_FALSE(kept.expired());
  pipe again({}, lris::host_backend{0}, {}, config);
  CHECK(again.executor()->staged == kept.lock());
  std::vector<std::byte> src(4 << 20, std::byte{9}), dst(src.size());
  lris::buffer<lris::device_allocator<lris::host_backend>, std::byte> dev(src.size());
  again.copy(dev.span(), lris::as_host(src)).wait();
  again.copy(lris::as_host(dst), dev.span()).wait();
  CHECK(std::memcmp(dst.data(), src.data(), src.size()) == 0);
  // The context lets go of it when it is destroyed.
  ctx.reset();
  config.context.reset();
  {
    pipe last = std::move(again);
  }
  CHECK(kept.expired());
}

TEST_CASE("a context dropped with transfers in flight lets them finish", "[exec][context]") {
  std::vector<std::byte> src(32 << 20, std::byte{3}), dst(src.size());
  lris::transfer t;
  {
    auto ctx = lris::context::make({.threads = 2});
    lris::pipeline<lris::auto_select, lris::host_backend> p(
        {}, lris::host_backend{0}, {}, lris::pipeline_config{.context = ctx});
    t = p.copy(lris::as_host(dst), lris::as_host(src));
  }  // the pipeline and the last outside reference to the context are gone
  t.wait();
  CHECK(std::memcmp(dst.data(), src.data(), src.size()) == 0);
}

TEST_CASE("the default context can be replaced, and the old one handed back", "[exec][context]") {
  auto first = lris::default_context();
  CHECK(first == lris::default_context());
  auto mine = lris::context::make({.threads = 2});
  auto previous = lris::set_default_context(mine);
  CHECK(previous == first);
  CHECK(lris::default_context() == mine);
  CHECK(lris::detail::default_thread_pool().get() == &mine->compute());
  lris::set_default_context(previous);
  CHECK(lris::default_context() == first);
}

TEST_CASE("the child of a fork gets a clear error from a context made before it",
          "[exec][fork]") {
  auto ctx = lris::context::make({.threads = 2});
  auto before = lris::default_context();
  std::optional<held_threads> held[4];
  held[0].emplace(ctx->compute());
  held[1].emplace(ctx->io());
  held[2].emplace(before->compute());
  held[3].emplace(before->io());
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // Exit codes tell the parent what happened; Catch2 is not used in the child.
    int code = 0;
    try {
      ctx->compute().submit([] {});
      code = 1;  // no error: the task would never run
    } catch (const lris::error& e) {
      if (std::strstr(e.what(), "child forked") == nullptr) code = 2;
    }
    try {
      lris::pipeline<lris::auto_select, lris::host_backend> p(
          {}, lris::host_backend{0}, {}, lris::pipeline_config{.context = ctx});
      code = code ? code : 3;
    } catch (const lris::error&) {
    }
    // The default is made anew in the child, and works.
    auto fresh = lris::default_context();
    if (fresh == before) code = code ? code : 4;
    std::vector<std::byte> a(4 << 20, std::byte{1}), b(a.size());
    try {
      lris::copy(lris::as_host(b), lris::as_host(a)).wait();
      if (std::memcmp(a.data(), b.data(), a.size()) != 0) code = code ? code : 5;
    } catch (...) {
      code = code ? code : 6;
    }
    // Destroying what the child inherited must not wait for the parent's threads.
    ctx.reset();
    std::_Exit(code);
  }
  for (auto& h : held) h.reset();
  CHECK(exit_code_of(child) == 0);
  // The parent's contexts are untouched.
  std::atomic<bool> ran{false};
  ctx->compute().submit([&] { ran = true; });
  while (!ran) std::this_thread::yield();
}

TEST_CASE("the default context's profile comes from the profile file", "[exec][context]") {
  auto ctx = lris::context::make({.threads = 1, .profile_path = "/nonexistent/profile.json"});
  CHECK(ctx->profile("host:0").source == "defaults");
}

TEST_CASE("process exit with transfers in flight, in any order of static destruction",
          "[exec][context]") {
  for (int order = 0; order < 2; ++order) {
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      static std::vector<std::byte> src(64 << 20, std::byte{1}), dst(src.size());
      static std::vector<lris::transfer> handles_first;  // destroyed after the context
      static auto ctx = lris::context::make({.threads = 2});
      static std::vector<lris::transfer> handles_last;    // destroyed before it
      static lris::pipeline<lris::staged, lris::host_backend> p(
          lris::staged{.chunk_bytes = 1 << 20, .workers = 2}, lris::host_backend{0}, {},
          lris::pipeline_config{.context = ctx});
      auto& handles = order == 0 ? handles_first : handles_last;
      handles.push_back(p.copy(lris::as_host(dst), lris::as_host(src)));
      handles.push_back(lris::copy(lris::as_host(src), lris::as_host(dst)));  // the default's
      std::exit(0);  // static destructors run, the transfers still going
    }
    INFO("order " << order);
    CHECK(exit_code_of(child) == 0);
  }
}
