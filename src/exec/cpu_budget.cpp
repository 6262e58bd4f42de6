#include <lris/exec/cpu_budget.hpp>

#include <sched.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace lris {

namespace detail {

namespace {

std::optional<long long> parse_number(std::string_view s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.remove_suffix(1);
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  long long v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

std::optional<unsigned> ratio(long long quota, long long period) {
  if (quota <= 0 || period <= 0) return std::nullopt;
  return static_cast<unsigned>(std::max<long long>(1, (quota + period - 1) / period));
}

std::string read_line(const char* path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// The process's cgroup v2 directory ("0::/user.slice/..." in /proc/self/cgroup), or empty.
std::string cgroup_v2_dir() {
  std::ifstream in("/proc/self/cgroup");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("0::", 0) == 0) return "/sys/fs/cgroup" + line.substr(3);
  }
  return {};
}

unsigned affinity_count() {
  for (std::size_t cpus = 1024; cpus <= (std::size_t{1} << 16); cpus *= 4) {
    const std::size_t bytes = CPU_ALLOC_SIZE(cpus);
    cpu_set_t* mask = CPU_ALLOC(cpus);
    if (mask == nullptr) break;
    CPU_ZERO_S(bytes, mask);
    const bool ok = ::sched_getaffinity(0, bytes, mask) == 0;
    const int n = ok ? CPU_COUNT_S(bytes, mask) : 0;
    CPU_FREE(mask);
    if (ok) return static_cast<unsigned>(std::max(1, n));
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

}  // namespace

std::optional<unsigned> cpus_from_cpu_max(std::string_view line) {
  const auto space = line.find(' ');
  if (space == std::string_view::npos) return std::nullopt;
  if (line.substr(0, space) == "max") return std::nullopt;
  const auto quota = parse_number(line.substr(0, space));
  const auto period = parse_number(line.substr(space + 1));
  if (!quota || !period) return std::nullopt;
  return ratio(*quota, *period);
}

std::optional<unsigned> cpus_from_cfs(std::string_view quota, std::string_view period) {
  const auto q = parse_number(quota);
  const auto p = parse_number(period);
  if (!q || !p) return std::nullopt;
  return ratio(*q, *p);
}

}  // namespace detail

unsigned usable_cpus() {
  unsigned n = detail::affinity_count();
  std::optional<unsigned> quota;
  // cgroup v2: the quota of the process's own group and of every group above it; the
  // tightest counts.
  if (std::string dir = detail::cgroup_v2_dir(); !dir.empty()) {
    for (;;) {
      if (auto q = detail::cpus_from_cpu_max(detail::read_line((dir + "/cpu.max").c_str()))) {
        quota = std::min(quota.value_or(*q), *q);
      }
      const auto slash = dir.rfind('/');
      if (slash == std::string::npos || dir.size() <= std::string_view("/sys/fs/cgroup").size()) {
        break;
      }
      dir.resize(slash);
    }
  }
  if (!quota) {  // cgroup v1
    quota = detail::cpus_from_cfs(detail::read_line("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"),
                                  detail::read_line("/sys/fs/cgroup/cpu/cpu.cfs_period_us"));
  }
  if (quota) n = std::min(n, *quota);
  return std::max(1u, n);
}

}  // namespace lris
