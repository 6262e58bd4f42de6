// probe_host and probe_io_uring: read-only probes of /proc, /sys, hwloc, libnuma and liburing.
// Each probe fills defaults and a reason on failure; none of them throws for a missing file or
// an unsupported kernel feature, because `lris info` must work in the most locked-down
// container, which is exactly where users need to learn what is missing.

#include <lris/system/host_info.hpp>
#include <lris/system/detail/text_files.hpp>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <sched.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <fmt/format.h>
#include <hwloc.h>
#include <liburing.h>
#include <nlohmann/json.hpp>
#include <numa.h>
#include <numaif.h>

// liburing gained version macros in 2.4; Debian 12 ships 2.3, which has neither.
#if __has_include(<liburing/io_uring_version.h>)
#include <liburing/io_uring_version.h>
#endif

#include <lris/system/format_bytes.hpp>
#include <lris/version.hpp>

namespace lris {
namespace {

namespace fs = std::filesystem;

using detail::parse_number;
using detail::read_file;
using detail::read_number;
using detail::trim;

/// "Key:   12345 kB" lines of /proc/meminfo or a node's meminfo, in bytes. A node's file
/// prefixes every key with "Node <n> ", which `key_prefix` strips.
std::map<std::string, std::uint64_t, std::less<>> parse_meminfo(std::string_view text,
                                                                std::string_view key_prefix) {
  std::map<std::string, std::uint64_t, std::less<>> values;
  std::istringstream lines{std::string(text)};
  std::string line;
  while (std::getline(lines, line)) {
    std::string_view view = line;
    if (view.substr(0, key_prefix.size()) == key_prefix) view.remove_prefix(key_prefix.size());
    const auto colon = view.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view rest = trim(view.substr(colon + 1));
    std::uint64_t multiplier = 1;
    if (rest.size() > 3 && rest.substr(rest.size() - 3) == " kB") {
      multiplier = 1024;
      rest.remove_suffix(3);
    }
    if (const auto number = parse_number<std::uint64_t>(rest)) {
      values.emplace(std::string(trim(view.substr(0, colon))), *number * multiplier);
    }
  }
  return values;
}

std::uint64_t lookup(const std::map<std::string, std::uint64_t, std::less<>>& values,
                     std::string_view key) {
  const auto it = values.find(key);
  return it == values.end() ? 0 : it->second;
}

/// The bracketed word of a sysfs selector file ("always [madvise] never" -> "madvise").
std::string active_mode(const fs::path& path) {
  const auto text = read_file(path);
  if (!text) return "unknown";
  const auto open = text->find('[');
  const auto close = text->find(']', open == std::string::npos ? 0 : open);
  if (open == std::string::npos || close == std::string::npos) return "unknown";
  return text->substr(open + 1, close - open - 1);
}

const char* errno_name(int error) {
  // strerrorname_np needs glibc 2.32; these are the ones io_uring_setup and get_mempolicy give.
  static constexpr std::pair<int, const char*> names[] = {
      {EPERM, "EPERM"},   {ENOENT, "ENOENT"}, {EINTR, "EINTR"},           {EIO, "EIO"},
      {EBADF, "EBADF"},   {EAGAIN, "EAGAIN"}, {ENOMEM, "ENOMEM"},         {EACCES, "EACCES"},
      {EFAULT, "EFAULT"}, {EBUSY, "EBUSY"},   {EINVAL, "EINVAL"},         {ENFILE, "ENFILE"},
      {EMFILE, "EMFILE"}, {ENOSYS, "ENOSYS"}, {EOPNOTSUPP, "EOPNOTSUPP"},
  };
  for (const auto& [value, name] : names) {
    if (value == error) return name;
  }
  return nullptr;
}

std::string errno_label(int error) {
  if (const char* name = errno_name(error)) return name;
  return fmt::format("errno {}", error);
}

// ---------------------------------------------------------------------------------- kernel --

void probe_kernel(host_info& info) {
  struct utsname names {};
  if (::uname(&names) == 0) {
    info.kernel_release = names.release;
    info.architecture = names.machine;
  }
}

// ------------------------------------------------------------------------------------- cpu --

/// sched_getaffinity with a mask grown until it holds every possible CPU: a fixed cpu_set_t
/// covers only 1024 CPUs and fails with EINVAL beyond.
std::vector<unsigned> affinity_cpus() {
  for (int capacity = CPU_SETSIZE; capacity <= (1 << 20); capacity *= 2) {
    cpu_set_t* mask = CPU_ALLOC(capacity);
    if (mask == nullptr) return {};
    const std::size_t bytes = CPU_ALLOC_SIZE(capacity);
    CPU_ZERO_S(bytes, mask);
    if (::sched_getaffinity(0, bytes, mask) == 0) {
      std::vector<unsigned> cpus;
      for (int cpu = 0; cpu < capacity; ++cpu) {
        if (CPU_ISSET_S(cpu, bytes, mask)) cpus.push_back(static_cast<unsigned>(cpu));
      }
      CPU_FREE(mask);
      return cpus;
    }
    const int error = errno;
    CPU_FREE(mask);
    if (error != EINVAL) return {};
  }
  return {};
}

std::string cpuinfo_model_name() {
  const auto text = read_file("/proc/cpuinfo");
  if (!text) return {};
  std::istringstream lines(*text);
  std::string line;
  while (std::getline(lines, line)) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    if (trim(std::string_view(line).substr(0, colon)) == "model name") {
      return std::string(trim(std::string_view(line).substr(colon + 1)));
    }
  }
  return {};
}

/// Owns an hwloc topology so every early return releases it.
class hwloc_topology_holder {
 public:
  hwloc_topology_holder() {
    if (hwloc_topology_init(&topology_) != 0) return;
    initialized_ = true;
    // Count the machine, not just our cgroup cpuset: allowed_threads covers the process view.
    hwloc_topology_set_flags(topology_, HWLOC_TOPOLOGY_FLAG_INCLUDE_DISALLOWED);
    loaded_ = hwloc_topology_load(topology_) == 0;
  }
  ~hwloc_topology_holder() {
    if (initialized_) hwloc_topology_destroy(topology_);
  }
  hwloc_topology_holder(const hwloc_topology_holder&) = delete;
  hwloc_topology_holder& operator=(const hwloc_topology_holder&) = delete;

  [[nodiscard]] bool loaded() const noexcept { return loaded_; }
  [[nodiscard]] hwloc_topology_t get() const noexcept { return topology_; }

 private:
  hwloc_topology_t topology_{};
  bool initialized_ = false;
  bool loaded_ = false;
};

unsigned count_objects(hwloc_topology_t topology, hwloc_obj_type_t type) {
  const int count = hwloc_get_nbobjs_by_type(topology, type);
  return count > 0 ? static_cast<unsigned>(count) : 0;
}

void probe_cpu(cpu_info& cpu) {
  const auto allowed = affinity_cpus();
  cpu.allowed_threads = static_cast<unsigned>(allowed.size());
  if (!allowed.empty()) cpu.allowed_cpus = format_cpu_list(allowed);

  std::string model = cpuinfo_model_name();
  const hwloc_topology_holder topology;
  if (topology.loaded()) {
    hwloc_topology_t topo = topology.get();
    cpu.topology_source = "hwloc";
    cpu.packages = count_objects(topo, HWLOC_OBJ_PACKAGE);
    cpu.physical_cores = count_objects(topo, HWLOC_OBJ_CORE);
    cpu.hardware_threads = count_objects(topo, HWLOC_OBJ_PU);
    cpu.l3_caches = count_objects(topo, HWLOC_OBJ_L3CACHE);
    for (unsigned i = 0; i < cpu.l3_caches; ++i) {
      const hwloc_obj_t cache = hwloc_get_obj_by_type(topo, HWLOC_OBJ_L3CACHE, i);
      if (cache != nullptr && cache->attr != nullptr) {
        cpu.l3_cache_bytes = std::max<std::uint64_t>(cpu.l3_cache_bytes, cache->attr->cache.size);
      }
    }
    // /proc/cpuinfo has no "model name" on most ARM kernels; hwloc reads it from elsewhere.
    if (model.empty()) {
      const hwloc_obj_t package = hwloc_get_obj_by_type(topo, HWLOC_OBJ_PACKAGE, 0);
      if (package != nullptr) {
        if (const char* name = hwloc_obj_get_info_by_name(package, "CPUModel")) model = name;
      }
    }
  }
  if (cpu.hardware_threads == 0) {
    cpu.topology_source = "hardware_concurrency";
    cpu.hardware_threads = std::thread::hardware_concurrency();
  }
  if (!model.empty()) cpu.model_name = std::move(model);
}

// ---------------------------------------------------------------------------------- memory --

void probe_memory(memory_info& memory) {
  const long page = ::sysconf(_SC_PAGESIZE);
  if (page > 0) memory.page_size = static_cast<std::uint64_t>(page);
  if (const auto text = read_file("/proc/meminfo")) {
    const auto values = parse_meminfo(*text, "");
    memory.total_bytes = lookup(values, "MemTotal");
    memory.available_bytes = lookup(values, "MemAvailable");
  }
  // /proc may be missing in a minimal sandbox; sysconf asks the kernel through sysinfo(2).
  // Its "available" is free RAM only (no reclaimable cache), an underestimate, but not a lie.
  if (memory.total_bytes == 0 && page > 0) {
    const long pages = ::sysconf(_SC_PHYS_PAGES);
    if (pages > 0) memory.total_bytes = static_cast<std::uint64_t>(pages) * memory.page_size;
  }
  if (memory.available_bytes == 0 && page > 0) {
    const long pages = ::sysconf(_SC_AVPHYS_PAGES);
    if (pages > 0) memory.available_bytes = static_cast<std::uint64_t>(pages) * memory.page_size;
  }
}

// ------------------------------------------------------------------------------------ numa --

void probe_numa_sysfs(numa_info& numa) {
  std::error_code ec;
  // increment(ec) rather than range-for: the iterator's operator++ throws on a read error.
  for (fs::directory_iterator it("/sys/devices/system/node", ec), end; !ec && it != end;
       it.increment(ec)) {
    const fs::directory_entry& entry = *it;
    const std::string name = entry.path().filename().string();
    if (name.size() <= 4 || name.compare(0, 4, "node") != 0) continue;
    const auto id = parse_number<unsigned>(std::string_view(name).substr(4));
    if (!id) continue;
    numa_node_info node;
    node.id = *id;
    if (const auto cpus = read_file(entry.path() / "cpulist")) node.cpus = trim(*cpus);
    if (const auto text = read_file(entry.path() / "meminfo")) {
      const auto values = parse_meminfo(*text, fmt::format("Node {} ", *id));
      node.total_bytes = lookup(values, "MemTotal");
      node.free_bytes = lookup(values, "MemFree");
    }
    numa.nodes.push_back(std::move(node));
  }
  std::sort(numa.nodes.begin(), numa.nodes.end(),
            [](const numa_node_info& a, const numa_node_info& b) { return a.id < b.id; });
  if (!numa.nodes.empty()) numa.source = "sysfs";
}

void probe_numa(numa_info& numa) {
  errno = 0;
  if (::numa_available() < 0) {
    const int error = errno;
    numa.reason = error != 0 ? fmt::format("numa_available() failed: get_mempolicy gave {} ({})",
                                           errno_label(error), std::strerror(error))
                             : "numa_available() failed";
    probe_numa_sysfs(numa);
    return;
  }
  // libnuma 2.0.16 treats only ENOSYS as "no NUMA"; a seccomp profile answering EPERM (Docker's
  // default without CAP_SYS_NICE) passes numa_available() and then fails every mbind.
  int mode = 0;
  if (::get_mempolicy(&mode, nullptr, 0, nullptr, 0) != 0) {
    const int error = errno;
    numa.reason = fmt::format(
        "get_mempolicy failed with {} ({}): NUMA policy calls are blocked, "
        "probably by seccomp",
        errno_label(error), std::strerror(error));
    probe_numa_sysfs(numa);
    return;
  }
  numa.available = true;
  numa.source = "libnuma";
  bitmask* cpumask = ::numa_allocate_cpumask();
  const int max_node = ::numa_max_node();
  const int possible_cpus = ::numa_num_possible_cpus();
  for (int id = 0; id <= max_node; ++id) {
    if (numa_nodes_ptr != nullptr && ::numa_bitmask_isbitset(numa_nodes_ptr, id) == 0) continue;
    numa_node_info node;
    node.id = static_cast<unsigned>(id);
    long long free_bytes = 0;
    const long long total_bytes = ::numa_node_size64(id, &free_bytes);
    if (total_bytes > 0) {
      node.total_bytes = static_cast<std::uint64_t>(total_bytes);
      node.free_bytes = free_bytes > 0 ? static_cast<std::uint64_t>(free_bytes) : 0;
    }
    if (cpumask != nullptr) {
      ::numa_bitmask_clearall(cpumask);
      if (::numa_node_to_cpus(id, cpumask) == 0) {
        std::vector<unsigned> cpus;
        for (int cpu = 0; cpu < possible_cpus; ++cpu) {
          if (::numa_bitmask_isbitset(cpumask, static_cast<unsigned>(cpu)) != 0) {
            cpus.push_back(static_cast<unsigned>(cpu));
          }
        }
        node.cpus = format_cpu_list(std::move(cpus));
      }
    }
    numa.nodes.push_back(std::move(node));
  }
  if (cpumask != nullptr) ::numa_free_cpumask(cpumask);
}

// ------------------------------------------------------------------------------ huge pages --

void probe_huge_pages(huge_page_info& huge) {
  if (const auto text = read_file("/proc/meminfo")) {
    huge.default_page_size = lookup(parse_meminfo(*text, ""), "Hugepagesize");
  }
  std::error_code ec;
  for (fs::directory_iterator it("/sys/kernel/mm/hugepages", ec), end; !ec && it != end;
       it.increment(ec)) {
    const fs::directory_entry& entry = *it;
    // Directory names are "hugepages-<size>kB".
    const std::string name = entry.path().filename().string();
    constexpr std::string_view prefix = "hugepages-";
    constexpr std::string_view suffix = "kB";
    if (name.size() <= prefix.size() + suffix.size() ||
        name.compare(0, prefix.size(), prefix) != 0 ||
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) {
      continue;
    }
    const auto kib = parse_number<std::uint64_t>(
        std::string_view(name).substr(prefix.size(), name.size() - prefix.size() - suffix.size()));
    if (!kib) continue;
    huge_page_pool pool;
    pool.page_size = *kib * 1024;
    pool.total = read_number<std::uint64_t>(entry.path() / "nr_hugepages").value_or(0);
    pool.free = read_number<std::uint64_t>(entry.path() / "free_hugepages").value_or(0);
    pool.reserved = read_number<std::uint64_t>(entry.path() / "resv_hugepages").value_or(0);
    pool.surplus = read_number<std::uint64_t>(entry.path() / "surplus_hugepages").value_or(0);
    huge.pools.push_back(pool);
  }
  std::sort(
      huge.pools.begin(), huge.pools.end(),
      [](const huge_page_pool& a, const huge_page_pool& b) { return a.page_size < b.page_size; });
  huge.thp_enabled = active_mode("/sys/kernel/mm/transparent_hugepage/enabled");
  huge.thp_defrag = active_mode("/sys/kernel/mm/transparent_hugepage/defrag");
}

// --------------------------------------------------------------------------------- memlock --

void probe_memlock(memlock_info& memlock) {
  struct rlimit limit {};
  if (::getrlimit(RLIMIT_MEMLOCK, &limit) != 0) return;
  memlock.soft_unlimited = limit.rlim_cur == RLIM_INFINITY;
  memlock.soft_bytes = memlock.soft_unlimited ? 0 : static_cast<std::uint64_t>(limit.rlim_cur);
  memlock.hard_unlimited = limit.rlim_max == RLIM_INFINITY;
  memlock.hard_bytes = memlock.hard_unlimited ? 0 : static_cast<std::uint64_t>(limit.rlim_max);
}

// The memory cgroup of this process (/proc/self/cgroup), v2 or v1, its limit and usage. In a
// container the path listed may not exist in its own /sys/fs/cgroup: the root of the mount is
// the container's cgroup then.
void probe_cgroup(memlock_info& memlock) {
  const auto text = read_file("/proc/self/cgroup");
  if (!text) return;
  std::istringstream lines(*text);
  std::string line, v2_path, v1_path;
  while (std::getline(lines, line)) {
    const auto a = line.find(':');
    const auto b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    const std::string controllers = line.substr(a + 1, b - a - 1);
    const std::string path = line.substr(b + 1);
    if (line.compare(0, a, "0") == 0 && controllers.empty()) v2_path = path;
    std::istringstream names(controllers);
    for (std::string n; std::getline(names, n, ',');) {
      if (n == "memory") v1_path = path;
    }
  }
  const auto number = [](const std::filesystem::path& f) -> std::optional<std::uint64_t> {
    const auto t = read_file(f);
    if (!t) return std::nullopt;
    const std::string v(trim(*t));
    if (v == "max") return 0;
    std::uint64_t n = 0;
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (ec != std::errc{}) return std::nullopt;
    return n >= (std::uint64_t{1} << 60) ? 0 : n;  // v1's "no limit" is a page count near 2^63
  };
  const auto look = [&](const std::string& version, const std::filesystem::path& root,
                        const std::string& path, const char* limit, const char* usage) {
    for (const auto& dir : {root / std::filesystem::path(path).relative_path(), root}) {
      if (const auto l = number(dir / limit)) {
        memlock.cgroup_version = version;
        memlock.cgroup_path = dir.string();
        memlock.cgroup_limit_bytes = *l;
        memlock.cgroup_usage_bytes = number(dir / usage).value_or(0);
        return true;
      }
    }
    return false;
  };
  if (!v1_path.empty() &&
      look("v1", "/sys/fs/cgroup/memory", v1_path, "memory.limit_in_bytes", "memory.usage_in_bytes")) {
  } else if (!v2_path.empty()) {
    (void)look("v2", "/sys/fs/cgroup", v2_path, "memory.max", "memory.current");
  }
  std::optional<std::uint64_t> budget;
  if (!memlock.soft_unlimited && ::geteuid() != 0) budget = memlock.soft_bytes;
  if (memlock.cgroup_limit_bytes > 0) {
    const std::uint64_t left = memlock.cgroup_limit_bytes -
                               std::min(memlock.cgroup_usage_bytes, memlock.cgroup_limit_bytes);
    budget = budget ? std::min(*budget, left) : left;
  }
  memlock.pinnable_bytes = budget;
}

// ---------------------------------------------------------------------------------- output --

std::string limit_text(bool unlimited, std::uint64_t bytes) {
  return unlimited ? std::string("unlimited") : format_bytes(bytes);
}

std::string count_text(unsigned count, std::string_view one, std::string_view many) {
  return fmt::format("{} {}", count, count == 1 ? one : many);
}

}  // namespace

// ---------------------------------------------------------------------------------- public --

std::string format_cpu_list(std::vector<unsigned> cpus) {
  std::sort(cpus.begin(), cpus.end());
  cpus.erase(std::unique(cpus.begin(), cpus.end()), cpus.end());
  std::string out;
  for (std::size_t i = 0; i < cpus.size();) {
    std::size_t j = i;
    while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += j == i ? fmt::format("{}", cpus[i]) : fmt::format("{}-{}", cpus[i], cpus[j]);
    i = j + 1;
  }
  return out;
}

io_uring_info probe_io_uring() {
  io_uring_info result;
#if defined(IO_URING_VERSION_MAJOR) && defined(IO_URING_VERSION_MINOR)
  result.liburing_version = fmt::format("{}.{}", IO_URING_VERSION_MAJOR, IO_URING_VERSION_MINOR);
#endif
  // Absent before Linux 6.6; its absence says nothing about io_uring itself.
  result.disabled_sysctl = read_number<int>("/proc/sys/kernel/io_uring_disabled");
  const std::string sysctl_note =
      result.disabled_sysctl ? fmt::format("kernel.io_uring_disabled = {}", *result.disabled_sysctl)
                             : std::string("no kernel.io_uring_disabled sysctl");

  struct io_uring ring {};
  const int rc = ::io_uring_queue_init(8, &ring, 0);
  if (rc == 0) {
    ::io_uring_queue_exit(&ring);
    result.available = true;
    result.reason = fmt::format("io_uring_queue_init(8) succeeded; {}", sysctl_note);
    return result;
  }
  const int error = -rc;
  result.error_code = error;
  result.error_name = errno_label(error);
  std::string meaning;
  switch (error) {
    case ENOSYS:
      meaning =
          "the kernel has no io_uring (built without CONFIG_IO_URING, or a sandbox such as "
          "gVisor that does not implement it)";
      break;
    case EPERM:
    case EACCES:
      if (result.disabled_sysctl && *result.disabled_sysctl == 2) {
        meaning = "io_uring is disabled for every process by kernel.io_uring_disabled = 2";
      } else if (result.disabled_sysctl && *result.disabled_sysctl == 1) {
        meaning =
            "kernel.io_uring_disabled = 1 allows io_uring only to CAP_SYS_ADMIN and "
            "members of kernel.io_uring_group";
      } else {
        meaning =
            "refused by a seccomp or LSM policy (container runtimes often block "
            "io_uring_setup)";
      }
      break;
    case EINVAL:
      meaning =
          "the kernel rejected the ring parameters (a kernel older than liburing "
          "expects, or io_uring restricted)";
      break;
    case ENOMEM:
      meaning =
          "the ring could not be allocated (kernels before 5.12 charge rings to "
          "RLIMIT_MEMLOCK, which may be too low)";
      break;
    case EMFILE:
    case ENFILE:
      meaning = "no file descriptor left for the ring";
      break;
    default:
      meaning = std::strerror(error);
      break;
  }
  result.reason = fmt::format("io_uring_queue_init(8) failed with {} ({}): {}; {}",
                              result.error_name, std::strerror(error), meaning, sysctl_note);
  return result;
}

host_info probe_host() {
  host_info info;
  probe_kernel(info);
  probe_cpu(info.cpu);
  probe_memory(info.memory);
  probe_numa(info.numa);
  probe_huge_pages(info.huge_pages);
  info.io_uring = probe_io_uring();
  probe_memlock(info.memlock);
  probe_cgroup(info.memlock);
  return info;
}

std::string to_json(const host_info& info) {
  // ordered_json keeps the sections in reading order; the key names are the stable contract.
  using json = nlohmann::ordered_json;
  json out;
  out["lris_version"] = LRIS_VERSION_STRING;
  out["kernel"] = {{"release", info.kernel_release}, {"architecture", info.architecture}};
  const cpu_info& cpu = info.cpu;
  out["cpu"] = {
      {"model_name", cpu.model_name},           {"packages", cpu.packages},
      {"physical_cores", cpu.physical_cores},   {"hardware_threads", cpu.hardware_threads},
      {"allowed_threads", cpu.allowed_threads}, {"allowed_cpus", cpu.allowed_cpus},
      {"l3_cache_bytes", cpu.l3_cache_bytes},   {"l3_caches", cpu.l3_caches},
      {"topology_source", cpu.topology_source},
  };
  out["memory"] = {{"total_bytes", info.memory.total_bytes},
                   {"available_bytes", info.memory.available_bytes},
                   {"page_size", info.memory.page_size}};
  json nodes = json::array();
  for (const numa_node_info& node : info.numa.nodes) {
    nodes.push_back({{"id", node.id},
                     {"total_bytes", node.total_bytes},
                     {"free_bytes", node.free_bytes},
                     {"cpus", node.cpus}});
  }
  out["numa"] = {{"available", info.numa.available},
                 {"source", info.numa.source},
                 {"reason", info.numa.reason},
                 {"nodes", std::move(nodes)}};
  json pools = json::array();
  for (const huge_page_pool& pool : info.huge_pages.pools) {
    pools.push_back({{"page_size", pool.page_size},
                     {"total", pool.total},
                     {"free", pool.free},
                     {"reserved", pool.reserved},
                     {"surplus", pool.surplus}});
  }
  out["huge_pages"] = {{"default_page_size", info.huge_pages.default_page_size},
                       {"pools", std::move(pools)},
                       {"thp_enabled", info.huge_pages.thp_enabled},
                       {"thp_defrag", info.huge_pages.thp_defrag}};
  const io_uring_info& uring = info.io_uring;
  out["io_uring"] = {
      {"available", uring.available},
      {"error_name", uring.error_name},
      {"error_code", uring.error_code},
      {"reason", uring.reason},
      {"io_uring_disabled", uring.disabled_sysctl ? json(*uring.disabled_sysctl) : json(nullptr)},
      {"liburing_version",
       uring.liburing_version.empty() ? json(nullptr) : json(uring.liburing_version)}};
  const memlock_info& memlock = info.memlock;
  out["memlock"] = {
      {"soft_unlimited", memlock.soft_unlimited},
      {"soft_bytes", memlock.soft_unlimited ? json(nullptr) : json(memlock.soft_bytes)},
      {"hard_unlimited", memlock.hard_unlimited},
      {"hard_bytes", memlock.hard_unlimited ? json(nullptr) : json(memlock.hard_bytes)},
      {"cgroup_version", memlock.cgroup_version.empty() ? json(nullptr) : json(memlock.cgroup_version)},
      {"cgroup_path", memlock.cgroup_path},
      {"cgroup_limit_bytes", memlock.cgroup_limit_bytes > 0 ? json(memlock.cgroup_limit_bytes) : json(nullptr)},
      {"cgroup_usage_bytes", memlock.cgroup_usage_bytes},
      {"pinnable_bytes", memlock.pinnable_bytes ? json(*memlock.pinnable_bytes) : json(nullptr)}};
  return out.dump(2);
}

std::string to_text(const host_info& info) {
  static constexpr int label_width = 14;
  std::string out;
  auto line = [&out](std::string_view label, const std::string& value) {
    fmt::format_to(std::back_inserter(out), "{:<{}}{}\n", label, label_width, value);
  };
  auto size_or_unknown = [](std::uint64_t bytes) {
    return bytes == 0 ? std::string("unknown") : format_bytes(bytes);
  };

  line("kernel", fmt::format("{} ({})", info.kernel_release, info.architecture));

  const cpu_info& cpu = info.cpu;
  line("cpu", cpu.model_name);
  std::string topology;
  if (cpu.packages != 0) topology += count_text(cpu.packages, "package", "packages") + ", ";
  if (cpu.physical_cores != 0) topology += count_text(cpu.physical_cores, "core", "cores") + ", ";
  topology += count_text(cpu.hardware_threads, "thread", "threads");
  if (cpu.l3_cache_bytes != 0) {
    topology += fmt::format(", L3 {}", format_bytes(cpu.l3_cache_bytes));
    if (cpu.l3_caches > 1) topology += fmt::format(" x {}", cpu.l3_caches);
  }
  topology += fmt::format(" [{}]", cpu.topology_source);
  line("  topology", topology);
  line("  usable", fmt::format("{} (cpus {})", count_text(cpu.allowed_threads, "thread", "threads"),
                               cpu.allowed_cpus));

  const memory_info& memory = info.memory;
  line("memory",
       fmt::format("{} total, {} available, page {}", size_or_unknown(memory.total_bytes),
                   size_or_unknown(memory.available_bytes), size_or_unknown(memory.page_size)));

  const numa_info& numa = info.numa;
  const std::string node_count =
      count_text(static_cast<unsigned>(numa.nodes.size()), "node", "nodes");
  if (numa.available) {
    line("numa", fmt::format("available (libnuma), {}", node_count));
  } else {
    line("numa", fmt::format("unavailable: {}; {} from {}", numa.reason, node_count, numa.source));
  }
  for (const numa_node_info& node : numa.nodes) {
    line(fmt::format("  node {}", node.id),
         fmt::format("{} total, {} free, cpus {}", format_bytes(node.total_bytes),
                     format_bytes(node.free_bytes), node.cpus.empty() ? "none" : node.cpus));
  }

  const huge_page_info& huge = info.huge_pages;
  line("huge pages", huge.pools.empty()
                         ? std::string("no pools under /sys/kernel/mm/hugepages")
                         : fmt::format("default size {}", size_or_unknown(huge.default_page_size)));
  for (const huge_page_pool& pool : huge.pools) {
    line(fmt::format("  {}", format_bytes(pool.page_size)),
         fmt::format("{} total, {} free, {} reserved, {} surplus", pool.total, pool.free,
                     pool.reserved, pool.surplus));
  }
  line("thp", fmt::format("enabled {}, defrag {}", huge.thp_enabled, huge.thp_defrag));

  const io_uring_info& uring = info.io_uring;
  line("io_uring",
       uring.available ? "available" : fmt::format("unavailable ({})", uring.error_name));
  line("  reason", uring.reason);
  line("  liburing", uring.liburing_version.empty() ? std::string("version not in headers (< 2.4)")
                                                    : uring.liburing_version);

  line("memlock", fmt::format("soft {}, hard {}{}",
                              limit_text(info.memlock.soft_unlimited, info.memlock.soft_bytes),
                              limit_text(info.memlock.hard_unlimited, info.memlock.hard_bytes),
                              ::geteuid() == 0 ? " (root: not bound by it)" : ""));
  const memlock_info& m = info.memlock;
  if (!m.cgroup_version.empty()) {
    line("memory cgroup", fmt::format("{} {}: limit {}, {} used", m.cgroup_version, m.cgroup_path,
                                      limit_text(m.cgroup_limit_bytes == 0, m.cgroup_limit_bytes),
                                      format_bytes(m.cgroup_usage_bytes)));
  }
  line("pinnable", m.pinnable_bytes
                       ? fmt::format("{} (pinned pages are charged to the cgroup and never "
                                     "reclaimed)", format_bytes(*m.pinnable_bytes))
                       : std::string("no limit found"));
  return out;
}

}  // namespace lris
