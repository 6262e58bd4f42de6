#pragma once
/// @file
/// @brief fork_guard: what owns threads remembers the process it was made in, so that the
/// child of a fork() (which inherits the object but none of its threads) gets a clear error
/// instead of waiting forever for a thread that is not there.

#include <cstdint>
#include <string_view>

namespace lris::detail {

/// @brief How many fork()s this process's ancestry has gone through since LRIS was loaded: a
/// pthread_atfork child handler counts them. A plain load: no system call.
[[nodiscard]] std::uint64_t fork_generation() noexcept;

class fork_guard {
 public:
  fork_guard() noexcept;
  /// @brief True in the process that made the guard; false in a child forked after that.
  [[nodiscard]] bool same_process() const noexcept { return fork_generation() == generation_; }
  /// @brief Throws lris::error naming `what`, the parent's pid and this one when this is a
  /// child forked after the guard was made.
  void check(std::string_view what) const;

 private:
  std::uint64_t generation_;
  int pid_;
};

}  // namespace lris::detail
