// shared_semaphore: one budget across handles and processes, priorities across them, tokens of
// a process killed while holding or waiting reclaimed, timeouts, and bad names.
#include <catch2/catch.hpp>

#include "support/what_contains.hpp"

#include <signal.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <lris/error.hpp>
#include <lris/sched/shared_semaphore.hpp>

using lris::sched::priority;
using lris::sched::shared_semaphore;
using lris::sched::shared_token;
using namespace std::chrono_literals;

namespace {

std::string unique_name(const char* what) {
  return "lris-test-" + std::to_string(::getpid()) + "-" + what;
}

// A child that opens the semaphore and then does `act`; the parent hears "ready" through a
// pipe before the function returns the child's pid.
template <class Act>
pid_t child(const std::string& name, Act act) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(fds[0]);
    shared_semaphore s(name, 1000);
    act(s, fds[1]);
    ::_exit(0);
  }
  ::close(fds[1]);
  char c = 0;
  REQUIRE(::read(fds[0], &c, 1) == 1);
  ::close(fds[0]);
  return pid;
}

void ready(int fd) {
  const char c = 'r';
  (void)!::write(fd, &c, 1);
}

}  // namespace

TEST_CASE("shared semaphore: one budget for every handle", "[sched]") {
  const auto name = unique_name("budget");
  shared_semaphore a(name, 1000);
  shared_semaphore b(name, 5);  // opened: the creator's capacity holds
  CHECK(b.capacity() == 1000);
  shared_token t = a.try_acquire(600);
  REQUIRE(t);
  CHECK_FALSE(b.try_acquire(500));
  shared_token u = b.try_acquire(400);
  CHECK(u);
  CHECK(a.in_flight() == 1000);
  t.release();
  CHECK(b.in_flight() == 400);
  const auto start = std::chrono::steady_clock::now();
  CHECK_FALSE(a.try_acquire_for(700, priority::normal, 30ms));
  CHECK(std::chrono::steady_clock::now() - start >= 30ms);
  u = shared_token{};
  CHECK(a.in_flight() == 0);

  // Spinning waiters: released during the spin, released after a short spin has ended, and a
  // spin longer than the timeout.
  t = a.acquire(900);
  std::thread spinner([&] { u = b.acquire(500, priority::critical, 1s); });
  std::this_thread::sleep_for(5ms);
  CHECK(a.in_flight() == 900);
  t.release();
  spinner.join();
  CHECK(u.bytes() == 500);
  std::thread sleeper([&] { t = b.acquire(600, priority::normal, 100us); });
  std::this_thread::sleep_for(20ms);
  CHECK(a.in_flight() == 500);
  u.release();
  sleeper.join();
  CHECK(t.bytes() == 600);
  const auto from = std::chrono::steady_clock::now();
  CHECK_FALSE(a.try_acquire_for(700, priority::normal, 10ms, 1s));
  CHECK(std::chrono::steady_clock::now() - from < 500ms);
  t.release();
  CHECK(a.in_flight() == 0);
  shared_semaphore::remove(name);
}

TEST_CASE("shared semaphore: critical waiters go before background ones", "[sched]") {
  const auto name = unique_name("prio");
  shared_semaphore s(name, 1000);
  shared_token all = s.acquire(1000);
  std::vector<int> order;
  std::mutex m;
  std::thread bg([&] {
    shared_semaphore mine(name, 1000);
    shared_token t = mine.acquire(600, priority::background);
    std::lock_guard lock(m);
    order.push_back(2);
  });
  std::this_thread::sleep_for(30ms);  // the background waiter is first in line
  std::thread crit([&] {
    shared_semaphore mine(name, 1000);
    shared_token t = mine.acquire(600, priority::critical);
    std::this_thread::sleep_for(20ms);
    std::lock_guard lock(m);
    order.push_back(0);
  });
  std::this_thread::sleep_for(30ms);
  all.release();
  bg.join();
  crit.join();
  CHECK(order == std::vector<int>{0, 2});
  shared_semaphore::remove(name);
}

TEST_CASE("shared semaphore: tokens of a killed process are reclaimed", "[sched]") {
  const auto name = unique_name("reclaim");
  shared_semaphore s(name, 1000);
  // A holder killed while holding 700.
  const pid_t holder = child(name, [](shared_semaphore& c, int fd) {
    shared_token t = c.acquire(700);
    ready(fd);
    ::pause();
  });
  CHECK(s.in_flight() == 700);
  CHECK_FALSE(s.try_acquire(400));
  ::kill(holder, SIGKILL);
  ::waitpid(holder, nullptr, 0);
  shared_token t = s.try_acquire_for(400, priority::normal, 2s);
  CHECK(t);
  CHECK(s.reclaimed_bytes() == 700);
  CHECK(s.in_flight() == 400);
  t.release();

  // A waiter killed in line does not block the ones behind it.
  shared_token all = s.acquire(1000);
  const pid_t waiter = child(name, [](shared_semaphore& c, int fd) {
    ready(fd);
    shared_token w = c.acquire(900, priority::critical);
  });
  std::this_thread::sleep_for(50ms);  // it waits, first in line
  ::kill(waiter, SIGKILL);
  ::waitpid(waiter, nullptr, 0);
  std::atomic<bool> got{false};
  std::thread behind([&] {
    shared_semaphore mine(name, 1000);
    got = static_cast<bool>(mine.try_acquire_for(900, priority::background, 2s));
  });
  std::this_thread::sleep_for(20ms);
  all.release();
  behind.join();
  CHECK(got);
  CHECK(s.in_flight() == 0);
  shared_semaphore::remove(name);
}

TEST_CASE("shared semaphore: bad names and capacities", "[sched][errors]") {
  using lris::test::what_contains;
  CHECK_THROWS_MATCHES(shared_semaphore("a/b", 10), lris::invalid_argument, what_contains("\"a/b\" is not a name"));
  CHECK_THROWS_MATCHES(shared_semaphore("", 10), lris::invalid_argument, what_contains("not a name"));
  CHECK_THROWS_MATCHES(shared_semaphore(unique_name("zero"), 0), lris::invalid_argument,
                       what_contains("capacity of 0"));
}

TEST_CASE("shared semaphore: a segment its creator never sized is refused, not mapped",
          "[sched][errors]") {
  using lris::test::what_contains;
  // As a creator that died between shm_open and ftruncate leaves it: 0 bytes.
  const std::string name = unique_name("unsized");
  const int fd = ::shm_open(("/" + name).c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  REQUIRE(fd >= 0);
  ::close(fd);
  CHECK_THROWS_MATCHES(shared_semaphore(name, 1 << 20), lris::io_error,
                       what_contains("/dev/shm/" + name + " is 0 bytes, not the"));
  ::shm_unlink(("/" + name).c_str());
}
