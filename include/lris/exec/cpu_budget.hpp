#pragma once
/// @file
/// @brief How many CPUs this process may keep busy: its affinity mask, capped by its cgroup's
/// CPU quota. Thread pools are sized by it, not by the machine: a container given 4 of 64
/// cores must not start 64 copy threads.

#include <optional>
#include <string_view>

namespace lris {

/// @brief min(CPUs in the affinity mask, the cgroup quota rounded up), at least 1.
[[nodiscard]] unsigned usable_cpus();

namespace detail {
/// @brief CPUs a cgroup v2 `cpu.max` line allows ("max 100000": no limit; "150000 100000":
/// 2, rounded up). std::nullopt for no limit or a line it cannot read.
[[nodiscard]] std::optional<unsigned> cpus_from_cpu_max(std::string_view line);
/// @brief The same from cgroup v1's cpu.cfs_quota_us and cpu.cfs_period_us (-1: no limit).
[[nodiscard]] std::optional<unsigned> cpus_from_cfs(std::string_view quota,
                                                    std::string_view period);
}  // namespace detail

}  // namespace lris
