#include <lris/sched/shared_semaphore.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <vector>
#include <climits>
#include <string>
#include <ctime>
#include <thread>

#include <fmt/format.h>

#include <lris/error.hpp>

#include "../detail/shared_memory.hpp"

namespace lris::sched {

namespace {

constexpr std::uint32_t magic = 0x4c524954;  // "LRIT": the layout with grant counters
constexpr int max_holders = 512;
constexpr int max_waiters = 512;

using detail::alive;
using detail::process_id;

struct holder {
  process_id owner;
  std::uint64_t bytes = 0;
};

struct waiter {
  process_id owner;
  std::uint64_t bytes = 0;
  std::uint64_t ticket = 0;
  std::uint32_t prio = 0;
};

}  // namespace

namespace {
// Tells every waiter, in any process, to look again.
template <class State>
void wake_all(State& s) {
  s.changed.fetch_add(1);
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&s.changed), FUTEX_WAKE, INT32_MAX,
            nullptr, nullptr, 0);
}
}  // namespace

struct shared_semaphore::state {
  std::atomic<std::uint32_t> ready;
  pthread_mutex_t mutex;
  // Bumped and woken (a futex) whenever tokens come free. Not a process-shared condition
  // variable: a waiter killed inside pthread_cond_wait can leave later signallers waiting for
  // it forever; a futex waiter leaves nothing behind.
  std::atomic<std::uint32_t> changed;
  std::uint64_t capacity;
  std::uint64_t in_flight;
  unsigned weight[priority_count];
  double virtual_time[priority_count];
  std::uint64_t next_ticket;
  std::uint64_t granted_bytes;  // every grant's bytes so far: a reader's rate over time
  std::uint64_t grants;
  holder holders[max_holders];
  waiter waiters[max_waiters];
};

shared_token::shared_token(shared_token&& o) noexcept
    : owner_(std::exchange(o.owner_, nullptr)), bytes_(std::exchange(o.bytes_, 0)),
      slot_(std::exchange(o.slot_, -1)) {}

shared_token& shared_token::operator=(shared_token&& o) noexcept {
  if (this != &o) {
    release();
    owner_ = std::exchange(o.owner_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
    slot_ = std::exchange(o.slot_, -1);
  }
  return *this;
}

void shared_token::release() noexcept {
  if (owner_ != nullptr) owner_->release(slot_);
  owner_ = nullptr;
  bytes_ = 0;
  slot_ = -1;
}

shared_semaphore::shared_semaphore(const std::string& name, std::uint64_t capacity,
                                   shared_semaphore_options options)
    : name_("/" + name), options_(options) {
  LRIS_EXPECTS(detail::segment_name_ok(name),
               "shared_semaphore: \"{}\" is not a name (letters, digits, '-', '_', '.')", name);
  LRIS_EXPECTS(capacity > 0, "shared_semaphore {}: a capacity of 0 bytes", name);
  for (unsigned w : options_.weight) {
    LRIS_EXPECTS(w > 0, "shared_semaphore {}: a priority weight of 0 would starve it", name);
  }
  bool creator = true;
  int fd = ::shm_open(name_.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  if (fd < 0 && errno == EEXIST) {
    creator = false;
    fd = ::shm_open(name_.c_str(), O_RDWR, 0600);
  }
  if (fd < 0) throw io_error(errno, fmt::format("shared_semaphore: cannot open /dev/shm{}", name_));
  // Its pages allocated now (a full /dev/shm says so here, not with a SIGBUS at first touch).
  if (creator) {
    const int e = ::ftruncate(fd, sizeof(state)) != 0 ? errno : ::posix_fallocate(fd, 0, sizeof(state));
    if (e != 0) {
      ::close(fd);
      ::shm_unlink(name_.c_str());
      throw io_error(e, fmt::format("shared_semaphore: cannot size /dev/shm{} ({} bytes)", name_,
                                    sizeof(state)));
    }
  }
  // An opener may come before the creator has sized the segment: wait for it, briefly. One
  // its creator never sized (it died first) would fault at the first access: refused.
  struct stat st {};
  const auto short_segment = [&] {
    return ::fstat(fd, &st) != 0 || st.st_size < static_cast<off_t>(sizeof(state));
  };
  for (int i = 0; !creator && i < 1000 && short_segment(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (!creator && short_segment()) {
    ::close(fd);
    throw io_error(EPROTO, fmt::format("shared_semaphore: /dev/shm{} is {} bytes, not the {} of a "
                                       "semaphore: its creator stopped before sizing it, or it is "
                                       "another program's (remove it if no process uses it)",
                                       name_, st.st_size, sizeof(state)));
  }
  void* p = ::mmap(nullptr, sizeof(state), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int map_errno = errno;
  ::close(fd);
  if (p == MAP_FAILED) {
    throw io_error(map_errno, fmt::format("shared_semaphore: cannot map /dev/shm{}", name_));
  }
  state_ = static_cast<state*>(p);
  if (creator) {
    detail::init_robust_mutex(&state_->mutex);
    state_->changed.store(0);
    state_->capacity = capacity;
    state_->in_flight = 0;
    std::copy(std::begin(options_.weight), std::end(options_.weight), state_->weight);
    std::fill(std::begin(state_->virtual_time), std::end(state_->virtual_time), 0.0);
    state_->next_ticket = 0;
    state_->granted_bytes = 0;
    state_->grants = 0;
    state_->ready.store(magic, std::memory_order_release);
  } else {
    for (int i = 0; i < 1000 && state_->ready.load(std::memory_order_acquire) != magic; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (state_->ready.load(std::memory_order_acquire) != magic) {
      ::munmap(state_, sizeof(state));
      throw io_error(EPROTO, fmt::format("shared_semaphore: /dev/shm{} is not initialized", name_));
    }
  }
}

shared_semaphore::~shared_semaphore() {
  if (state_ != nullptr) ::munmap(state_, sizeof(state));
}

void shared_semaphore::remove(const std::string& name) noexcept {
  ::shm_unlink(("/" + name).c_str());
}

std::uint64_t shared_semaphore::capacity() const noexcept { return state_->capacity; }

void shared_semaphore::lock(std::chrono::steady_clock::time_point spin_until) {
  // Spinning on trylock first: a contended robust mutex puts its waiters to sleep in the
  // kernel, and a thread that spins for its tokens must not sleep there either.
  int r = pthread_mutex_trylock(&state_->mutex);
  while (r == EBUSY && std::chrono::steady_clock::now() < spin_until) {
    std::this_thread::yield();
    r = pthread_mutex_trylock(&state_->mutex);
  }
  if (r == EBUSY) r = pthread_mutex_lock(&state_->mutex);
  if (r == EOWNERDEAD) {
    pthread_mutex_consistent(&state_->mutex);  // its holder died inside; its slots are reclaimed
  } else if (r != 0) {
    throw io_error(r, fmt::format("shared_semaphore {}: cannot lock", name_));
  }
  // Looking for dead processes reads /proc for each one, under the lock: here only when the
  // lock's last owner died; else by a waiter that has waited `poll` (see try_acquire_for).
  if (r == EOWNERDEAD) reclaim_dead();
}

void shared_semaphore::reclaim_dead() {
  bool freed = false;
  // One look per process: holders of one process are many.
  std::vector<std::pair<process_id, bool>> seen;
  auto dead = [&](const process_id& p) {
    for (const auto& [q, live] : seen) {
      if (q.pid == p.pid && q.start == p.start) return !live;
    }
    seen.emplace_back(p, alive(p));
    return !seen.back().second;
  };
  for (auto& h : state_->holders) {
    if (h.owner.pid != 0 && dead(h.owner)) {
      state_->in_flight -= std::min(h.bytes, state_->in_flight);
      reclaimed_ += h.bytes;
      h = holder{};
      freed = true;
    }
  }
  for (auto& w : state_->waiters) {
    if (w.owner.pid != 0 && dead(w.owner)) {
      w = waiter{};
      freed = true;
    }
  }
  if (freed) wake_all(*state_);
}

std::uint64_t shared_semaphore::in_flight() {
  lock();
  const std::uint64_t n = state_->in_flight;
  pthread_mutex_unlock(&state_->mutex);
  return n;
}

void shared_semaphore::release(int slot) noexcept {
  try {
    lock();
  } catch (...) {
    return;  // cannot happen with a valid segment; the tokens are reclaimed when we exit
  }
  auto& h = state_->holders[slot];
  state_->in_flight -= std::min(h.bytes, state_->in_flight);
  h = holder{};
  wake_all(*state_);
  pthread_mutex_unlock(&state_->mutex);
}

shared_token shared_semaphore::acquire(std::uint64_t bytes, priority p,
                                       std::chrono::nanoseconds spin) {
  return try_acquire_for(bytes, p, std::chrono::nanoseconds::max(), spin);
}

shared_token shared_semaphore::try_acquire(std::uint64_t bytes, priority p) {
  return try_acquire_for(bytes, p, std::chrono::nanoseconds::zero());
}

shared_token shared_semaphore::try_acquire_for(std::uint64_t bytes, priority p,
                                               std::chrono::nanoseconds timeout,
                                               std::chrono::nanoseconds spin) {
  const auto pi = static_cast<std::size_t>(p);
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = timeout == std::chrono::nanoseconds::max()
                            ? std::chrono::steady_clock::time_point::max()
                            : start + timeout;
  const auto spin_until = start + std::min(spin, timeout);
  lock(spin_until);
  state& s = *state_;
  bytes = std::min(bytes, s.capacity);
  auto free_holder = [&] {
    for (int i = 0; i < max_holders; ++i) {
      if (s.holders[i].owner.pid == 0) return i;
    }
    return -1;
  };
  // The waiter to serve next: the oldest of each priority, then of those the earliest virtual
  // finish time (its priority's virtual time plus its bytes over the weight).
  auto head = [&] {
    int oldest[priority_count] = {-1, -1, -1};
    for (int i = 0; i < max_waiters; ++i) {
      const waiter& w = s.waiters[i];
      if (w.owner.pid == 0) continue;
      int& o = oldest[w.prio];
      if (o < 0 || w.ticket < s.waiters[o].ticket) o = i;
    }
    int best = -1;
    double best_finish = 0;
    for (int i : oldest) {
      if (i < 0) continue;
      const waiter& w = s.waiters[i];
      const double f = s.virtual_time[w.prio] + static_cast<double>(w.bytes) / s.weight[w.prio];
      if (best < 0 || f < best_finish) {
        best = i;
        best_finish = f;
      }
    }
    return best;
  };
  auto grant = [&] {
    const int slot = free_holder();
    s.holders[slot] = {detail::self_process(), bytes};
    s.in_flight += bytes;
    s.granted_bytes += bytes;
    ++s.grants;
    s.virtual_time[pi] += static_cast<double>(bytes) / s.weight[pi];
    shared_token t;
    t.owner_ = this;
    t.bytes_ = bytes;
    t.slot_ = slot;
    return t;
  };
  if (head() < 0 && s.in_flight + bytes <= s.capacity && free_holder() >= 0) {
    shared_token t = grant();
    pthread_mutex_unlock(&s.mutex);
    return t;
  }
  if (timeout == std::chrono::nanoseconds::zero()) {
    pthread_mutex_unlock(&s.mutex);
    return {};
  }
  int me = -1;
  for (int i = 0; i < max_waiters && me < 0; ++i) {
    if (s.waiters[i].owner.pid == 0) me = i;
  }
  if (me < 0) {
    pthread_mutex_unlock(&s.mutex);
    throw out_of_memory(fmt::format("shared_semaphore {}: {} waiters already", name_, max_waiters),
                        sizeof(waiter));
  }
  // A priority that was idle starts from the waiting ones' virtual time: idleness earns nothing.
  bool idle = true;
  double now_vt = -1;
  for (const waiter& w : s.waiters) {
    if (w.owner.pid == 0) continue;
    idle = idle && w.prio != pi;
    now_vt = now_vt < 0 ? s.virtual_time[w.prio] : std::min(now_vt, s.virtual_time[w.prio]);
  }
  if (idle && now_vt >= 0) s.virtual_time[pi] = std::max(s.virtual_time[pi], now_vt);
  s.waiters[me] = {detail::self_process(), bytes, s.next_ticket++, static_cast<std::uint32_t>(pi)};
  auto looked = start;  // for holders that died without a word
  for (;;) {
    if (const auto t = std::chrono::steady_clock::now(); t - looked >= options_.poll) {
      looked = t;
      reclaim_dead();
    }
    if (head() == me && s.in_flight + bytes <= s.capacity && free_holder() >= 0) {
      s.waiters[me] = waiter{};
      shared_token t = grant();
      wake_all(s);  // the next head may go too
      pthread_mutex_unlock(&s.mutex);
      return t;
    }
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      s.waiters[me] = waiter{};
      wake_all(s);  // it may have blocked the line
      pthread_mutex_unlock(&s.mutex);
      return {};
    }
    // Wake at least every `poll` to look for holders that died without a word.
    const auto wake = std::min<std::chrono::steady_clock::time_point>(deadline, now + options_.poll);
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(wake - now).count() +
                    ts.tv_nsec;
    ts.tv_sec += static_cast<time_t>(ns / 1'000'000'000);
    ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
    const std::uint32_t seen = s.changed.load();
    pthread_mutex_unlock(&s.mutex);
    // Spinning first: tokens released by a polling thread come back faster than a sleeper wakes.
    while (s.changed.load() == seen && std::chrono::steady_clock::now() < spin_until) {
      std::this_thread::yield();
    }
    if (s.changed.load() != seen) {
      lock(spin_until);
      continue;
    }
    ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&s.changed), FUTEX_WAIT_BITSET, seen,
              &ts, nullptr, FUTEX_BITSET_MATCH_ANY);
    lock();
  }
}

std::vector<std::string> shared_semaphore::list() {
  std::vector<std::string> out;
  if (DIR* d = ::opendir("/dev/shm")) {
    while (dirent* e = ::readdir(d)) {
      const std::string n = e->d_name;
      if (n.rfind("lris-pool-", 0) == 0 || n == "." || n == "..") continue;
      if (inspect(n)) out.push_back(n);
    }
    ::closedir(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::optional<shared_semaphore_snapshot> shared_semaphore::inspect(const std::string& name) {
  if (!detail::segment_name_ok(name)) return std::nullopt;
  const int fd = ::shm_open(fmt::format("/{}", name).c_str(), O_RDWR, 0600);
  if (fd < 0) return std::nullopt;
  struct stat st {};
  void* p = MAP_FAILED;
  if (::fstat(fd, &st) == 0 && st.st_size == static_cast<off_t>(sizeof(state))) {
    p = ::mmap(nullptr, sizeof(state), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  }
  ::close(fd);
  if (p == MAP_FAILED) return std::nullopt;
  auto* s = static_cast<state*>(p);
  std::optional<shared_semaphore_snapshot> out;
  if (s->ready.load(std::memory_order_acquire) == magic) {
    int r = pthread_mutex_lock(&s->mutex);
    if (r == EOWNERDEAD) {
      pthread_mutex_consistent(&s->mutex);
      r = 0;
    }
    if (r == 0) {
      shared_semaphore_snapshot snap;
      snap.name = name;
      snap.capacity = s->capacity;
      snap.in_flight = s->in_flight;
      snap.granted_bytes = s->granted_bytes;
      snap.grants = s->grants;
      for (const auto& h : s->holders) {
        if (h.owner.pid != 0) snap.holders.push_back({h.owner.pid, h.bytes, 0});
      }
      for (const auto& w : s->waiters) {
        if (w.owner.pid != 0) snap.waiters.push_back({w.owner.pid, w.bytes, w.prio});
      }
      pthread_mutex_unlock(&s->mutex);
      out = std::move(snap);
    }
  }
  ::munmap(p, sizeof(state));
  return out;
}

}  // namespace lris::sched
