#pragma once
/// @file
/// @brief probe_host: what this machine offers for moving bytes (CPU topology, memory, NUMA,
/// huge pages, io_uring, the locked-memory limit), as a struct, JSON and readable text.
///
/// Every probe degrades instead of failing: a container without /sys, a kernel without NUMA or
/// io_uring yields "unknown", 0 or an empty list plus a reason, never an exception. Numbers
/// that could not be read are 0 and strings that could not be read are "unknown".

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <lris/system/io_uring_probe.hpp>

namespace lris {

/// @brief Processor model and topology.
///
/// Two thread counts, because they answer different questions: `hardware_threads` is the
/// machine (online logical CPUs, what std::thread::hardware_concurrency reports), while
/// `allowed_threads` is what this process may run on (sched_getaffinity: taskset, cgroup
/// cpusets), which is what sizing a worker pool should use.
struct cpu_info {
  /// @brief "model name" from /proc/cpuinfo, else hwloc's CPUModel; "unknown" otherwise.
  std::string model_name = "unknown";
  /// @brief Sockets (hwloc packages); 0 when unknown.
  unsigned packages = 0;
  /// @brief Physical cores over all packages (hwloc cores); 0 when unknown.
  unsigned physical_cores = 0;
  /// @brief Online logical CPUs of the whole machine (hwloc PUs, disallowed ones included).
  unsigned hardware_threads = 0;
  /// @brief Logical CPUs in this process's affinity mask (sched_getaffinity).
  unsigned allowed_threads = 0;
  /// @brief The affinity mask as a compact list, e.g. "0-15"; "unknown" when unreadable.
  std::string allowed_cpus = "unknown";
  /// @brief Size of one L3 cache in bytes (the largest, if they differ); 0 when unknown.
  std::uint64_t l3_cache_bytes = 0;
  /// @brief Number of L3 cache instances; 0 when unknown.
  unsigned l3_caches = 0;
  /// @brief Where the topology came from: "hwloc", or "hardware_concurrency" when hwloc
  /// could not load one (then packages, cores and L3 are 0).
  std::string topology_source = "unknown";
};

/// @brief System memory from /proc/meminfo and sysconf.
struct memory_info {
  /// @brief MemTotal in bytes; 0 when unknown.
  std::uint64_t total_bytes = 0;
  /// @brief MemAvailable in bytes (what can be allocated without swapping); 0 when unknown.
  std::uint64_t available_bytes = 0;
  /// @brief The base page size, sysconf(_SC_PAGESIZE).
  std::uint64_t page_size = 0;
};

/// @brief One NUMA node.
struct numa_node_info {
  /// @brief The kernel's node number.
  unsigned id = 0;
  /// @brief Memory attached to the node in bytes; 0 for a CPU-only node or when unknown.
  std::uint64_t total_bytes = 0;
  /// @brief Free memory on the node in bytes.
  std::uint64_t free_bytes = 0;
  /// @brief The node's CPUs as a compact list ("0-15,32-47"); empty for a memory-only node.
  std::string cpus;
};

/// @brief NUMA as libnuma sees it, with a sysfs fallback.
struct numa_info {
  /// @brief numa_available() succeeded: NUMA policy calls (mbind, set_mempolicy) work here.
  bool available = false;
  /// @brief Where `nodes` came from: "libnuma", "sysfs" (libnuma unavailable, e.g. a seccomp
  /// profile blocking get_mempolicy) or "none".
  std::string source = "none";
  /// @brief Why libnuma is unavailable; empty when available.
  std::string reason;
  /// @brief The nodes in id order; empty when neither libnuma nor sysfs list any.
  std::vector<numa_node_info> nodes;
};

/// @brief One pool of explicit huge pages (/sys/kernel/mm/hugepages/hugepages-<N>kB).
struct huge_page_pool {
  /// @brief The page size in bytes (2 MiB, 1 GiB, ...).
  std::uint64_t page_size = 0;
  /// @brief Pages reserved in the pool (nr_hugepages).
  std::uint64_t total = 0;
  /// @brief Pages not allocated (free_hugepages), reserved ones included.
  std::uint64_t free = 0;
  /// @brief Pages promised to mappings but not yet faulted in (resv_hugepages).
  std::uint64_t reserved = 0;
  /// @brief Pages allocated beyond nr_hugepages through overcommit (surplus_hugepages).
  std::uint64_t surplus = 0;
};

/// @brief Explicit huge page pools and transparent huge pages.
struct huge_page_info {
  /// @brief Hugepagesize from /proc/meminfo in bytes (what MAP_HUGETLB without a size flag
  /// gets); 0 when unknown.
  std::uint64_t default_page_size = 0;
  /// @brief The pools in increasing page size; empty without /sys/kernel/mm/hugepages.
  std::vector<huge_page_pool> pools;
  /// @brief Active THP mode: "always", "madvise", "never", or "unknown".
  std::string thp_enabled = "unknown";
  /// @brief Active THP defrag mode: "always", "defer", "defer+madvise", "madvise", "never",
  /// or "unknown".
  std::string thp_defrag = "unknown";
};

/// @brief RLIMIT_MEMLOCK, which bounds how much an unprivileged process can pin.
struct memlock_info {
  /// @brief The soft limit is RLIM_INFINITY.
  bool soft_unlimited = false;
  /// @brief The soft limit in bytes; meaningless when soft_unlimited.
  std::uint64_t soft_bytes = 0;
  /// @brief The hard limit (the most the soft limit can be raised to) is RLIM_INFINITY.
  bool hard_unlimited = false;
  /// @brief The hard limit in bytes; meaningless when hard_unlimited.
  std::uint64_t hard_bytes = 0;
  /// @brief The memory cgroup's limit applies ("v1" or "v2" found; "" when none was read).
  /// Pinned pages are charged to it and cannot be reclaimed, so it bounds pinning too.
  std::string cgroup_version;
  /// @brief The cgroup's directory under /sys/fs/cgroup.
  std::string cgroup_path;
  /// @brief memory.max (v2) or memory.limit_in_bytes (v1); 0 when unlimited.
  std::uint64_t cgroup_limit_bytes = 0;
  /// @brief memory.current (v2) or memory.usage_in_bytes (v1).
  std::uint64_t cgroup_usage_bytes = 0;
  /// @brief What this process may still pin: the soft RLIMIT_MEMLOCK (unless unlimited, or
  /// the process is root, whom it does not bound) and the cgroup's limit less its usage, the
  /// lower of them; none when neither bounds it.
  std::optional<std::uint64_t> pinnable_bytes;
};

/// @brief Everything probe_host reports.
struct host_info {
  /// @brief uname's release, e.g. "6.8.0-45-generic"; "unknown" when uname fails.
  std::string kernel_release = "unknown";
  /// @brief uname's machine, e.g. "x86_64".
  std::string architecture = "unknown";
  cpu_info cpu;               ///< @brief Processor and topology.
  memory_info memory;         ///< @brief System memory.
  numa_info numa;             ///< @brief NUMA nodes.
  huge_page_info huge_pages;  ///< @brief Huge page pools and THP.
  io_uring_info io_uring;     ///< @brief io_uring availability.
  memlock_info memlock;       ///< @brief Locked-memory limit.
};

/// @brief Probes this machine. Takes a few milliseconds (hwloc reads /sys); call it once and
/// keep the result. Does not throw when information is missing, only on allocation failure.
[[nodiscard]] host_info probe_host();

/// @brief `info` as pretty-printed JSON (2-space indent) with stable snake_case keys; sizes are
/// plain byte counts, unknown optional values are null.
[[nodiscard]] std::string to_json(const host_info& info);

/// @brief `info` as an aligned multi-line summary for people, sizes in binary units; ends with
/// a newline.
[[nodiscard]] std::string to_text(const host_info& info);

/// @brief Formats CPU numbers the way the kernel's cpulist files do: sorted, duplicates
/// dropped, runs collapsed, e.g. {0,1,2,3,8,10,11} -> "0-3,8,10-11"; empty input -> "".
[[nodiscard]] std::string format_cpu_list(std::vector<unsigned> cpus);

}  // namespace lris
