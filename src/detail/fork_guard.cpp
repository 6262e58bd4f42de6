#include <lris/detail/fork_guard.hpp>

#include <pthread.h>
#include <unistd.h>

#include <atomic>

#include <fmt/format.h>

#include <lris/error.hpp>

namespace lris::detail {

namespace {

std::atomic<std::uint64_t> generation{0};

void count_fork() noexcept { generation.fetch_add(1, std::memory_order_relaxed); }

// Registered when the library is loaded, before anything of it can be forked with.
[[maybe_unused]] const int registered = ::pthread_atfork(nullptr, nullptr, count_fork);

}  // namespace

std::uint64_t fork_generation() noexcept { return generation.load(std::memory_order_relaxed); }

fork_guard::fork_guard() noexcept : generation_(fork_generation()), pid_(::getpid()) {}

void fork_guard::check(std::string_view what) const {
  if (same_process()) return;
  throw error(fmt::format(
      "{} was made in process {}, and this is process {}, a child forked after that: its "
      "threads did not survive the fork; make a new lris::context in the child",
      what, pid_, ::getpid()));
}

}  // namespace lris::detail
