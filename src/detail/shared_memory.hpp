#pragma once
// What objects in POSIX shared memory (/dev/shm) need, shared by the shared semaphore and the
// host pool: a process told apart from a later one with the same pid, names that are safe as
// segment names, and a robust process-shared mutex.

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>

#include <fmt/format.h>

namespace lris::detail {

// A process, told apart from a later one with the same pid by its start time.
struct process_id {
  std::int32_t pid = 0;  // 0: the slot is free
  std::uint64_t start = 0;
};

inline bool operator==(const process_id& a, const process_id& b) noexcept {
  return a.pid == b.pid && a.start == b.start;
}

// Field 22 of /proc/<pid>/stat: the start time in clock ticks after boot; 0 when gone, or
// when it is a zombie (dead, not yet reaped: it holds nothing any more).
inline std::uint64_t start_time(pid_t pid) noexcept {
  try {
    std::ifstream in(fmt::format("/proc/{}/stat", pid));
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto close = text.rfind(')');  // the command name may hold spaces and parentheses
    if (close == std::string::npos || close + 2 >= text.size()) return 0;
    std::istringstream rest(text.substr(close + 2));
    std::string field;
    for (int i = 3; i <= 22 && rest >> field; ++i) {
      if (i == 3 && (field == "Z" || field == "X")) return 0;
      if (i == 22) return std::stoull(field);
    }
  } catch (...) {  // unreadable: taken as gone
  }
  return 0;
}

// This process; looked up again after a fork, since a child must not pass for its parent.
inline process_id self_process() noexcept {
  thread_local process_id me;
  const auto pid = static_cast<std::int32_t>(::getpid());
  if (me.pid != pid) me = {pid, start_time(pid)};
  return me;
}

// Processes of another PID namespace sharing /dev/shm look gone: a limit of pid-based records.
inline bool alive(const process_id& p) noexcept {
  if (::kill(p.pid, 0) != 0 && errno == ESRCH) return false;
  return start_time(p.pid) == p.start;
}

// Letters, digits, '-', '_' and '.', at most 200 of them, not "." or "..".
inline bool segment_name_ok(const std::string& name) {
  return !name.empty() && name.size() <= 200 &&
         std::all_of(name.begin(), name.end(),
                     [](char c) {
                       return std::isalnum(static_cast<unsigned char>(c)) || c == '-' ||
                              c == '_' || c == '.';
                     }) &&
         name != "." && name != "..";
}

// A mutex in shared memory that processes share and that survives its holder's death (the
// next locker gets EOWNERDEAD).
inline void init_robust_mutex(pthread_mutex_t* m) {
  pthread_mutexattr_t ma;
  pthread_mutexattr_init(&ma);
  pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
  pthread_mutex_init(m, &ma);
  pthread_mutexattr_destroy(&ma);
}

}  // namespace lris::detail
