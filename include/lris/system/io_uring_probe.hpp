#pragma once
/// @file
/// @brief probe_io_uring: can this process create an io_uring, and if not, why not.
///
/// The io engine asks this before choosing io_uring or its pread fallback, and `lris info`
/// prints it, so a user learns why loading is slower in a container that blocks io_uring.

#include <optional>
#include <string>

namespace lris {

/// @brief Whether io_uring works for this process, with the evidence.
struct io_uring_info {
  /// @brief True when a ring of 8 entries could be created (and was torn down again).
  bool available = false;
  /// @brief The errno name of the failure ("ENOSYS", "EPERM", ...); empty when available.
  std::string error_name;
  /// @brief The errno value of the failure; 0 when available.
  int error_code = 0;
  /// @brief One sentence for people: what succeeded, or what the failure means here.
  std::string reason;
  /// @brief The value of /proc/sys/kernel/io_uring_disabled (0 enabled, 1 restricted to
  /// CAP_SYS_ADMIN and kernel.io_uring_group, 2 disabled); empty on kernels without it.
  std::optional<int> disabled_sysctl;
  /// @brief "MAJOR.MINOR" of the liburing headers LRIS was built with; empty when those headers
  /// do not say (liburing before 2.4 has no version macros).
  std::string liburing_version;
};

/// @brief Tries io_uring_queue_init(8, ...) and reports the outcome. Never throws for an
/// unavailable io_uring; a missing sysctl file is not an error.
[[nodiscard]] io_uring_info probe_io_uring();

}  // namespace lris
