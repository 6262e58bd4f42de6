#pragma once
/// @file
/// @brief shared_semaphore: a bandwidth-token semaphore shared by every process that opens the
/// same name (a POSIX shared-memory segment, /dev/shm/<name>), so that loaders in several
/// processes keep one budget of bytes in flight on a resource.
///
/// Waiters are served as in bandwidth_semaphore: weighted fair queueing over the three
/// priorities, first come first served within one, the head never passed. A process that dies
/// holding tokens (or waiting) does not leak them: holders and waiters are recorded with their
/// process id and start time, and tokens of a process that no longer exists are reclaimed by
/// the next process that looks (at once when it died holding the segment's lock, else within
/// `poll` of a waiter's wait).

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <lris/sched/bandwidth_semaphore.hpp>

namespace lris::sched {

struct shared_semaphore_options {
  /// Relative shares of the priorities; used by the process that creates the segment.
  unsigned weight[priority_count] = {64, 8, 1};
  /// How long a waiter waits before it looks for tokens of processes that died, and how often
  /// it looks again while it waits.
  std::chrono::milliseconds poll{20};
};

/// @brief One process's share of a shared semaphore, as shared_semaphore::inspect sees it.
struct shared_semaphore_user {
  std::int32_t pid = 0;
  std::uint64_t bytes = 0;
  std::uint32_t priority = 0;  ///< of a waiter: 0 critical, 1 normal, 2 background
};

/// @brief A shared semaphore's state at one moment, read without joining it.
struct shared_semaphore_snapshot {
  std::string name;
  std::uint64_t capacity = 0;
  std::uint64_t in_flight = 0;
  std::uint64_t granted_bytes = 0;  ///< every grant so far: two snapshots give a rate
  std::uint64_t grants = 0;
  std::vector<shared_semaphore_user> holders;
  std::vector<shared_semaphore_user> waiters;
};

class shared_semaphore;

/// @brief Tokens of a shared_semaphore; released when destroyed.
class shared_token {
 public:
  shared_token() = default;
  shared_token(shared_token&& o) noexcept;
  shared_token& operator=(shared_token&& o) noexcept;
  shared_token(const shared_token&) = delete;
  shared_token& operator=(const shared_token&) = delete;
  ~shared_token() { release(); }
  [[nodiscard]] std::uint64_t bytes() const noexcept { return bytes_; }
  [[nodiscard]] explicit operator bool() const noexcept { return owner_ != nullptr; }
  void release() noexcept;

 private:
  friend class shared_semaphore;
  shared_semaphore* owner_ = nullptr;
  std::uint64_t bytes_ = 0;
  int slot_ = -1;
};

class shared_semaphore {
 public:
  /// @brief Opens (or creates, with `capacity`) the semaphore called `name` ("lris-cuda0-h2d";
  /// letters, digits, '-', '_' and '.'). Opened, it keeps the capacity it was created with.
  /// @throws lris::invalid_argument for a bad name or a capacity of 0; lris::io_error when the
  /// segment cannot be created or mapped.
  shared_semaphore(const std::string& name, std::uint64_t capacity,
                   shared_semaphore_options options = {});
  ~shared_semaphore();
  shared_semaphore(const shared_semaphore&) = delete;
  shared_semaphore& operator=(const shared_semaphore&) = delete;

  /// @brief Removes the segment's name (processes that have it open keep using it).
  static void remove(const std::string& name) noexcept;
  /// @brief The names of the shared semaphores on this machine (/dev/shm).
  [[nodiscard]] static std::vector<std::string> list();
  /// @brief The state of semaphore `name` now, read under its lock without joining it; none
  /// when there is no such semaphore.
  [[nodiscard]] static std::optional<shared_semaphore_snapshot> inspect(const std::string& name);

  [[nodiscard]] std::uint64_t capacity() const noexcept;
  /// @brief Bytes held now, by every process.
  [[nodiscard]] std::uint64_t in_flight();
  /// @brief Tokens of dead processes reclaimed by this process so far.
  [[nodiscard]] std::uint64_t reclaimed_bytes() const noexcept { return reclaimed_; }

  /// @brief As bandwidth_semaphore's: a waiter spins (yielding) for up to `spin` before it
  /// sleeps.
  shared_token acquire(std::uint64_t bytes, priority p = priority::normal,
                       std::chrono::nanoseconds spin = {});
  shared_token try_acquire(std::uint64_t bytes, priority p = priority::normal);
  shared_token try_acquire_for(std::uint64_t bytes, priority p, std::chrono::nanoseconds timeout,
                               std::chrono::nanoseconds spin = {});

 private:
  friend class shared_token;
  struct state;
  void release(int slot) noexcept;
  /// Locks the segment, spinning on it until `spin_until` before it sleeps.
  void lock(std::chrono::steady_clock::time_point spin_until = {});
  void reclaim_dead();

  std::string name_;
  state* state_ = nullptr;
  shared_semaphore_options options_;
  std::uint64_t reclaimed_ = 0;
};

}  // namespace lris::sched
