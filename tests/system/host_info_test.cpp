// Tests of probe_host, to_json, to_text, format_bytes and format_cpu_list against facts the test
// finds out on its own (sysconf, getrlimit, uname, sched_getaffinity, a raw io_uring_setup),
// plus the failure paths: io_uring and NUMA refused by seccomp, /proc and /sys hidden.

#include <lris/system/format_bytes.hpp>
#include <lris/system/host_info.hpp>
#include <lris/system/io_uring_probe.hpp>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <linux/filter.h>
#include <linux/io_uring.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

namespace {

std::optional<std::string> slurp(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

/// io_uring_setup straight through syscall(2), bypassing liburing: 0 when a ring could be
/// created, else the errno.
int raw_io_uring_setup_errno() {
#ifdef __NR_io_uring_setup
  io_uring_params params{};
  const long fd = ::syscall(__NR_io_uring_setup, 8U, &params);
  if (fd >= 0) {
    ::close(static_cast<int>(fd));
    return 0;
  }
  return errno;
#else
  return ENOSYS;
#endif
}

/// Runs `setup` then probe_host() in a forked child and returns the child's to_json output
/// parsed, or nullopt when `setup` could not be done here (no privileges, old kernel). The
/// child keeps the parent's state untouched: seccomp filters and mounts die with it.
std::optional<nlohmann::json> probe_in_child(const std::function<bool()>& setup) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(fds[0]);
    int status = 0;
    std::string payload;
    try {
      if (!setup()) {
        status = 77;
      } else {
        const lris::host_info info = lris::probe_host();
        const std::string text = lris::to_text(info);  // must not throw either
        payload = text.empty() ? std::string("to_text was empty") : lris::to_json(info);
      }
    } catch (const std::exception& e) {
      payload = std::string("exception: ") + e.what();
      status = 3;
    }
    for (std::size_t done = 0; done < payload.size();) {
      const ssize_t n = ::write(fds[1], payload.data() + done, payload.size() - done);
      if (n <= 0) break;
      done += static_cast<std::size_t>(n);
    }
    ::close(fds[1]);
    ::_exit(status);
  }
  ::close(fds[1]);
  std::string payload;
  char buffer[4096];
  for (ssize_t n; (n = ::read(fds[0], buffer, sizeof buffer)) > 0;) payload.append(buffer, n);
  ::close(fds[0]);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  if (WEXITSTATUS(status) == 77) return std::nullopt;
  INFO("child output: " << payload);
  REQUIRE(WEXITSTATUS(status) == 0);
  return nlohmann::json::parse(payload);
}

/// A seccomp filter that fails io_uring_setup with `uring_errno` and get_mempolicy (what
/// numa_available() calls) with EPERM, the way container runtimes refuse them. Native syscall
/// numbers only; the child makes no compat-mode calls.
bool refuse_io_uring_and_numa(int uring_errno) {
#if defined(__NR_io_uring_setup) && defined(__NR_get_mempolicy)
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
      BPF_STMT(BPF_RET | BPF_K,
               SECCOMP_RET_ERRNO | (static_cast<unsigned>(uring_errno) & SECCOMP_RET_DATA)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_get_mempolicy, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog program{static_cast<unsigned short>(std::size(filter)), filter};
  return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
         ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) == 0;
#else
  (void)uring_errno;
  return false;
#endif
}

/// Empty tmpfs over /proc and /sys in a private mount namespace, like a minimal sandbox.
bool hide_proc_and_sys() {
  if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0 && ::unshare(CLONE_NEWNS) != 0) return false;
  // Without this, the tmpfs mounts could propagate to a shared peer outside the child.
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return false;
  return ::mount("none", "/sys", "tmpfs", 0, nullptr) == 0 &&
         ::mount("none", "/proc", "tmpfs", 0, nullptr) == 0;
}

}  // namespace

TEST_CASE("format_bytes gives exact binary-unit strings", "[system][format_bytes]") {
  using lris::format_bytes;
  CHECK(format_bytes(0) == "0 B");
  CHECK(format_bytes(1) == "1 B");
  CHECK(format_bytes(512) == "512 B");
  CHECK(format_bytes(1023) == "1023 B");
  CHECK(format_bytes(1024) == "1 KiB");
  CHECK(format_bytes(1536) == "1.5 KiB");
  CHECK(format_bytes(65536) == "64 KiB");
  CHECK(format_bytes(1048575) == "1 MiB");  // 1023.999 KiB rounds into the next unit
  CHECK(format_bytes(std::uint64_t{1} << 20) == "1 MiB");
  CHECK(format_bytes(std::uint64_t{3} << 19) == "1.5 MiB");
  CHECK(format_bytes(std::uint64_t{1610612736}) == "1.5 GiB");
  CHECK(format_bytes(std::uint64_t{1288490189}) == "1.2 GiB");  // 1.2000000002 GiB
  CHECK(format_bytes(std::uint64_t{1127428915}) == "1 GiB");    // 1.0499999998 GiB
  CHECK(format_bytes(std::uint64_t{1127428916}) == "1.1 GiB");  // 1.0500000007 GiB
  CHECK(format_bytes(std::uint64_t{1} << 40) == "1 TiB");
  CHECK(format_bytes(std::uint64_t{1} << 60) == "1 EiB");
  CHECK(format_bytes(std::numeric_limits<std::uint64_t>::max()) == "16 EiB");
}

TEST_CASE("format_cpu_list collapses runs like the kernel's cpulist", "[system]") {
  using lris::format_cpu_list;
  CHECK(format_cpu_list({}).empty());
  CHECK(format_cpu_list({0}) == "0");
  CHECK(format_cpu_list({0, 1}) == "0-1");
  CHECK(format_cpu_list({0, 1, 2, 3}) == "0-3");
  CHECK(format_cpu_list({0, 2, 4}) == "0,2,4");
  CHECK(format_cpu_list({11, 10, 8, 3, 2, 1, 0, 3}) == "0-3,8,10-11");
}

TEST_CASE("probe_host reports facts that agree with independent system calls", "[system]") {
  const lris::host_info info = lris::probe_host();

  SECTION("kernel") {
    utsname names{};
    REQUIRE(::uname(&names) == 0);
    CHECK(info.kernel_release == names.release);
    CHECK(info.architecture == names.machine);
  }

  SECTION("cpu: machine threads = hardware_concurrency, usable threads = affinity mask") {
    // hardware_threads counts the machine's online CPUs, as libstdc++'s hardware_concurrency
    // does; the affinity mask is a separate, possibly smaller, number.
    CHECK(info.cpu.hardware_threads >= 1);
    CHECK(info.cpu.hardware_threads == std::thread::hardware_concurrency());
    cpu_set_t mask;
    CPU_ZERO(&mask);
    REQUIRE(::sched_getaffinity(0, sizeof mask, &mask) == 0);
    CHECK(info.cpu.allowed_threads == static_cast<unsigned>(CPU_COUNT(&mask)));
    CHECK(info.cpu.allowed_threads <= info.cpu.hardware_threads);
    std::vector<unsigned> allowed;
    for (unsigned cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (CPU_ISSET(cpu, &mask)) allowed.push_back(cpu);
    }
    CHECK(info.cpu.allowed_cpus == lris::format_cpu_list(allowed));
    if (const auto status = slurp("/proc/self/status")) {
      const auto at = status->find("Cpus_allowed_list:");
      if (at != std::string::npos) {
        std::istringstream rest(status->substr(at + 18));
        std::string list;
        rest >> list;
        CHECK(info.cpu.allowed_cpus == list);
      }
    }
    CHECK(info.cpu.topology_source == "hwloc");
    CHECK(info.cpu.packages >= 1);
    CHECK(info.cpu.physical_cores >= info.cpu.packages);
    CHECK(info.cpu.physical_cores <= info.cpu.hardware_threads);
    CHECK(info.cpu.model_name != "");
    if (info.cpu.l3_caches > 0) CHECK(info.cpu.l3_cache_bytes > 0);
  }

  SECTION("memory: total > available > 0, total = physical pages * page size") {
    const long page = ::sysconf(_SC_PAGESIZE);
    const long pages = ::sysconf(_SC_PHYS_PAGES);
    REQUIRE(page > 0);
    REQUIRE(pages > 0);
    CHECK(info.memory.page_size == static_cast<std::uint64_t>(page));
    CHECK(info.memory.available_bytes > 0);
    CHECK(info.memory.total_bytes > info.memory.available_bytes);
    // Both come from the kernel's totalram: MemTotal in kB, sysinfo in pages.
    CHECK(info.memory.total_bytes == static_cast<std::uint64_t>(pages) * info.memory.page_size);
  }

  SECTION("numa: nodes match sysfs") {
    if (info.numa.available) {
      CHECK(info.numa.source == "libnuma");
      CHECK(info.numa.reason.empty());
      REQUIRE_FALSE(info.numa.nodes.empty());
    }
    std::uint64_t node_total = 0;
    for (const lris::numa_node_info& node : info.numa.nodes) {
      INFO("node " << node.id);
      CHECK(node.free_bytes <= node.total_bytes);
      node_total += node.total_bytes;
      const std::string dir = "/sys/devices/system/node/node" + std::to_string(node.id);
      if (const auto cpulist = slurp(dir + "/cpulist")) CHECK(node.cpus == trimmed(*cpulist));
    }
    if (!info.numa.nodes.empty()) {
      CHECK(node_total > 0);
      CHECK(node_total <= info.memory.total_bytes);
    }
  }

  SECTION("huge pages and THP") {
    const std::set<std::string> enabled_words{"always", "madvise", "never", "unknown"};
    const std::set<std::string> defrag_words{"always",  "defer", "defer+madvise",
                                             "madvise", "never", "unknown"};
    CHECK(enabled_words.count(info.huge_pages.thp_enabled) == 1);
    CHECK(defrag_words.count(info.huge_pages.thp_defrag) == 1);
    if (std::filesystem::exists("/sys/kernel/mm/transparent_hugepage/enabled")) {
      CHECK(info.huge_pages.thp_enabled != "unknown");
    }
    if (std::filesystem::exists("/sys/kernel/mm/hugepages")) {
      REQUIRE_FALSE(info.huge_pages.pools.empty());
      bool default_found = false;
      for (std::size_t i = 0; i < info.huge_pages.pools.size(); ++i) {
        const lris::huge_page_pool& pool = info.huge_pages.pools[i];
        INFO("pool of " << pool.page_size << " bytes");
        CHECK(pool.page_size > info.memory.page_size);
        CHECK((pool.page_size & (pool.page_size - 1)) == 0);
        CHECK(pool.free <= pool.total + pool.surplus);
        CHECK(pool.reserved <= pool.free);
        if (i > 0) CHECK(info.huge_pages.pools[i - 1].page_size < pool.page_size);
        default_found = default_found || pool.page_size == info.huge_pages.default_page_size;
      }
      CHECK(default_found);
    }
  }

  SECTION("io_uring agrees with a raw io_uring_setup syscall") {
    const int raw_errno = raw_io_uring_setup_errno();
    CHECK(info.io_uring.available == (raw_errno == 0));
    CHECK(info.io_uring.error_code == raw_errno);
    CHECK(info.io_uring.error_name.empty() == info.io_uring.available);
    CHECK_FALSE(info.io_uring.reason.empty());
    if (const auto sysctl = slurp("/proc/sys/kernel/io_uring_disabled")) {
      REQUIRE(info.io_uring.disabled_sysctl.has_value());
      CHECK(std::to_string(*info.io_uring.disabled_sysctl) == trimmed(*sysctl));
      CHECK(info.io_uring.reason.find("kernel.io_uring_disabled = ") != std::string::npos);
    } else {
      CHECK_FALSE(info.io_uring.disabled_sysctl.has_value());
    }
  }

  SECTION("memlock agrees with getrlimit") {
    rlimit limit{};
    REQUIRE(::getrlimit(RLIMIT_MEMLOCK, &limit) == 0);
    CHECK(info.memlock.soft_unlimited == (limit.rlim_cur == RLIM_INFINITY));
    CHECK(info.memlock.hard_unlimited == (limit.rlim_max == RLIM_INFINITY));
    if (!info.memlock.soft_unlimited) CHECK(info.memlock.soft_bytes == limit.rlim_cur);
    if (!info.memlock.hard_unlimited) CHECK(info.memlock.hard_bytes == limit.rlim_max);
  }

  SECTION("the memory cgroup bounds what may be pinned") {
    const auto& m = info.memlock;
    if (!m.cgroup_version.empty()) {
      CHECK((m.cgroup_version == "v1" || m.cgroup_version == "v2"));
      CHECK(std::filesystem::is_directory(m.cgroup_path));
      CHECK(m.cgroup_usage_bytes > 0);  // this process is charged to it
    }
    if (m.cgroup_limit_bytes > 0) {
      REQUIRE(m.pinnable_bytes);
      CHECK(*m.pinnable_bytes <= m.cgroup_limit_bytes);
    }
    if (!m.soft_unlimited && ::geteuid() != 0) {
      REQUIRE(m.pinnable_bytes);
      CHECK(*m.pinnable_bytes <= m.soft_bytes);
    }
    if (m.cgroup_limit_bytes == 0 && (m.soft_unlimited || ::geteuid() == 0)) {
      CHECK_FALSE(m.pinnable_bytes);
    }
  }
}

TEST_CASE("to_json parses back with every key and the probed values", "[system][json]") {
  const lris::host_info info = lris::probe_host();
  const nlohmann::json json = nlohmann::json::parse(lris::to_json(info));
  const std::vector<std::pair<std::string, std::vector<std::string>>> expected{
      {"kernel", {"release", "architecture"}},
      {"cpu",
       {"model_name", "packages", "physical_cores", "hardware_threads", "allowed_threads",
        "allowed_cpus", "l3_cache_bytes", "l3_caches", "topology_source"}},
      {"memory", {"total_bytes", "available_bytes", "page_size"}},
      {"numa", {"available", "source", "reason", "nodes"}},
      {"huge_pages", {"default_page_size", "pools", "thp_enabled", "thp_defrag"}},
      {"io_uring",
       {"available", "error_name", "error_code", "reason", "io_uring_disabled",
        "liburing_version"}},
      {"memlock", {"soft_unlimited", "soft_bytes", "hard_unlimited", "hard_bytes",
                   "cgroup_version", "cgroup_path", "cgroup_limit_bytes", "cgroup_usage_bytes",
                   "pinnable_bytes"}},
  };
  CHECK(json.at("lris_version").is_string());
  for (const auto& [section, keys] : expected) {
    REQUIRE(json.contains(section));
    for (const std::string& key : keys) {
      INFO(section << "." << key);
      CHECK(json.at(section).contains(key));
    }
  }
  CHECK(json["kernel"]["release"] == info.kernel_release);
  CHECK(json["cpu"]["hardware_threads"] == info.cpu.hardware_threads);
  CHECK(json["memory"]["total_bytes"] == info.memory.total_bytes);
  CHECK(json["memory"]["page_size"] == info.memory.page_size);
  CHECK(json["numa"]["nodes"].size() == info.numa.nodes.size());
  for (const nlohmann::json& node : json["numa"]["nodes"]) {
    CHECK(node.contains("id"));
    CHECK(node.contains("total_bytes"));
    CHECK(node.contains("free_bytes"));
    CHECK(node.at("cpus").is_string());
  }
  REQUIRE(json["huge_pages"]["pools"].size() == info.huge_pages.pools.size());
  for (const nlohmann::json& pool : json["huge_pages"]["pools"]) {
    for (const char* key : {"page_size", "total", "free", "reserved", "surplus"}) {
      CHECK(pool.at(key).is_number_unsigned());
    }
  }
  CHECK(json["huge_pages"]["thp_enabled"] == info.huge_pages.thp_enabled);
  CHECK(json["io_uring"]["available"] == info.io_uring.available);
  CHECK(json["io_uring"]["io_uring_disabled"].is_null() ==
        !info.io_uring.disabled_sysctl.has_value());
  CHECK(json["memlock"]["soft_bytes"].is_null() == info.memlock.soft_unlimited);
}

TEST_CASE("to_text is an aligned summary naming every section", "[system][text]") {
  const lris::host_info info = lris::probe_host();
  const std::string text = lris::to_text(info);
  REQUIRE_FALSE(text.empty());
  CHECK(text.back() == '\n');
  CHECK(text.rfind("kernel", 0) == 0);
  for (const char* label : {"cpu", "memory", "numa", "huge pages", "thp", "io_uring", "memlock"}) {
    CHECK(text.find(std::string("\n") + label + " ") != std::string::npos);
  }
  CHECK(text.find(info.kernel_release) != std::string::npos);
  CHECK(text.find(lris::format_bytes(info.memory.total_bytes) + " total") != std::string::npos);
  // Values start in one column: every label is shorter than it and padded to it.
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    INFO(line);
    REQUIRE(line.size() > 14);
    CHECK(line[13] == ' ');
    CHECK(line[14] != ' ');
  }
}

TEST_CASE("io_uring refused by seccomp is reported with its errno and reason", "[system]") {
  for (const int refused : {EPERM, ENOSYS}) {
    INFO("io_uring_setup fails with " << refused);
    const auto json = probe_in_child([refused] { return refuse_io_uring_and_numa(refused); });
    if (!json) {
      WARN("cannot install a seccomp filter here; not tested");
      return;
    }
    const nlohmann::json& uring = (*json)["io_uring"];
    CHECK(uring["available"] == false);
    CHECK(uring["error_code"] == refused);
    CHECK(uring["error_name"] == (refused == EPERM ? "EPERM" : "ENOSYS"));
    const std::string reason = uring["reason"];
    const std::string expected_words = refused == ENOSYS ? "has no io_uring" : "seccomp";
    if (refused == ENOSYS || uring["io_uring_disabled"].is_null() ||
        uring["io_uring_disabled"] == 0) {
      CHECK(reason.find(expected_words) != std::string::npos);
    }
    // get_mempolicy refused: libnuma is unavailable, the nodes still come from sysfs.
    const nlohmann::json& numa = (*json)["numa"];
    CHECK(numa["available"] == false);
    CHECK(numa["reason"].get<std::string>().find("EPERM") != std::string::npos);
    if (std::filesystem::exists("/sys/devices/system/node/node0")) {
      CHECK(numa["source"] == "sysfs");
      REQUIRE_FALSE(numa["nodes"].empty());
      CHECK(numa["nodes"][0]["id"] == 0);
      CHECK(numa["nodes"][0]["total_bytes"].get<std::uint64_t>() > 0);
    }
  }
}

TEST_CASE("probe_host degrades without /proc and /sys", "[system]") {
  const auto json = probe_in_child(hide_proc_and_sys);
  if (!json) {
    WARN("cannot create a mount namespace here; not tested");
    return;
  }
  const nlohmann::json& huge = (*json)["huge_pages"];
  CHECK(huge["thp_enabled"] == "unknown");
  CHECK(huge["thp_defrag"] == "unknown");
  CHECK(huge["pools"].empty());
  CHECK(huge["default_page_size"] == 0);
  CHECK((*json)["io_uring"]["io_uring_disabled"].is_null());
  // sysinfo(2) still answers when /proc/meminfo is gone.
  CHECK((*json)["memory"]["total_bytes"].get<std::uint64_t>() > 0);
  CHECK((*json)["memory"]["page_size"] == static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE)));
  CHECK((*json)["cpu"]["hardware_threads"].get<unsigned>() >= 1);
  CHECK((*json)["kernel"]["release"] != "unknown");
}
