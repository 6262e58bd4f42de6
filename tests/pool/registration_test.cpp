// pool_registration: a pool's data registered in bounded segments, one process at a time, and a
// refusal that leaves nothing registered and says why.
#include <catch2/catch.hpp>

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <lris/backends/host_backend.hpp>
#include <lris/pool/host_pool.hpp>
#include <lris/pool/pool_registration.hpp>

using lris::pool::host_pool;
using lris::pool::pool_registration;

namespace {

std::string unique_name(const char* what) {
  return "test-" + std::to_string(::getpid()) + "-" + what;
}

// What every process's registrations did, in memory they share (made before the forks).
struct shared_counts {
  std::atomic<int> inside;      // registrations running now, in any process
  std::atomic<int> overlapped;  // times one began while another ran
  std::atomic<int> calls;
};

// A runtime that records its registrations, refuses the `fail_at`-th, and takes a while.
struct recording_backend {
  shared_counts* counts = nullptr;
  int fail_at = -1;
  std::vector<std::pair<void*, std::size_t>>* registered = nullptr;
  int made = 0;
  void register_host(void* p, std::size_t n) {
    if (counts->inside.fetch_add(1) != 0) counts->overlapped.fetch_add(1);
    counts->calls.fetch_add(1);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    counts->inside.fetch_sub(1);
    if (made++ == fail_at) throw std::runtime_error("the locked-memory limit is reached");
    registered->emplace_back(p, n);
  }
  void unregister_host(void* p) {
    for (auto it = registered->begin(); it != registered->end(); ++it) {
      if (it->first == p) {
        registered->erase(it);
        return;
      }
    }
    throw std::runtime_error("unregister of a range never registered");
  }
};

shared_counts* make_counts() {
  void* m = ::mmap(nullptr, sizeof(shared_counts), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  REQUIRE(m != MAP_FAILED);
  return new (m) shared_counts{};
}

}  // namespace

TEST_CASE("pool registration: bounded segments, undone when it goes", "[pool]") {
  host_pool pool = host_pool::create(unique_name("segments"), (10 << 20) + 100);
  shared_counts* counts = make_counts();
  std::vector<std::pair<void*, std::size_t>> registered;
  {
    pool_registration reg(pool, recording_backend{counts, -1, &registered}, 4 << 20);
    CHECK(reg.report().pinned);
    CHECK(reg.report().segments == 3);  // 4 + 4 + 2 MiB and a page
    CHECK(reg.report().bytes == (10 << 20) + 4096);
    REQUIRE(registered.size() == 3);
    CHECK(registered[0].first == pool.data());
    CHECK(registered[2].second == (2 << 20) + 4096);
  }
  CHECK(registered.empty());
  ::munmap(counts, sizeof(shared_counts));
}

TEST_CASE("pool registration: a refusal leaves nothing registered and says why", "[pool]") {
  host_pool pool = host_pool::create(unique_name("refused"), 16 << 20);
  shared_counts* counts = make_counts();
  std::vector<std::pair<void*, std::size_t>> registered;
  pool_registration reg(pool, recording_backend{counts, 2, &registered}, 4 << 20);
  CHECK_FALSE(reg.report().pinned);
  CHECK(registered.empty());  // the two made before were undone
  CHECK(reg.report().why.find("registering bytes [8388608, 12582912) of 16777216 failed after 2 "
                              "segments: the locked-memory limit is reached") != std::string::npos);
  ::munmap(counts, sizeof(shared_counts));
}

TEST_CASE("pool registration: a pool larger than what may be pinned is not tried", "[pool]") {
  host_pool pool = host_pool::create(unique_name("budget"), 8 << 20);
  shared_counts* counts = make_counts();
  std::vector<std::pair<void*, std::size_t>> registered;
  pool_registration reg(pool, recording_backend{counts, -1, &registered}, 4 << 20, 1 << 20);
  CHECK_FALSE(reg.report().pinned);
  CHECK(counts->calls.load() == 0);
  CHECK(reg.report().why.find("its 8388608 bytes are more than this process may pin (1048576 "
                              "bytes left") != std::string::npos);
  pool_registration fits(pool, recording_backend{counts, -1, &registered}, 4 << 20, 8 << 20);
  CHECK(fits.report().pinned);
  ::munmap(counts, sizeof(shared_counts));
}

TEST_CASE("pool registration: processes take turns", "[pool]") {
  const auto name = unique_name("turns");
  host_pool pool = host_pool::create(name, 8 << 20);
  shared_counts* counts = make_counts();
  std::vector<pid_t> children;
  for (int k = 0; k < 4; ++k) {
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      int code = 1;
      try {
        host_pool mine = host_pool::attach(name);
        std::vector<std::pair<void*, std::size_t>> registered;
        pool_registration reg(mine, recording_backend{counts, -1, &registered}, 1 << 20);
        code = reg.report().pinned && reg.report().segments == 8 ? 0 : 2;
      } catch (...) {
        code = 3;
      }
      ::_exit(code);
    }
    children.push_back(pid);
  }
  for (const pid_t pid : children) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));
  }
  CHECK(counts->calls.load() == 32);
  CHECK(counts->overlapped.load() == 0);  // never two registrations at once
  ::munmap(counts, sizeof(shared_counts));
}

TEST_CASE("pool registration: the host backend's registry", "[pool]") {
  host_pool pool = host_pool::create(unique_name("host"), 3 << 20);
  lris::host_backend be;
  {
    pool_registration reg(pool, be, 1 << 20);
    CHECK(reg.report().segments == 3);
    CHECK_THROWS(be.register_host(pool.data() + (1 << 20), 4096));  // registered: overlaps
  }
  be.register_host(pool.data(), 4096);  // gone with the registration
  be.unregister_host(pool.data());
}
