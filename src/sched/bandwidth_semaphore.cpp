#include <lris/sched/bandwidth_semaphore.hpp>

#include <algorithm>
#include <atomic>
#include <thread>

#include <lris/error.hpp>

namespace lris::sched {

struct bandwidth_semaphore::waiter {
  std::uint64_t bytes = 0;
  priority prio = priority::normal;
  std::atomic<bool> granted{false};          // set under the mutex
  std::condition_variable cv;                 // blocking waiters
  std::function<void(token_guard)> on_grant;  // asynchronous ones
};

namespace {
constexpr std::size_t index(priority p) noexcept { return static_cast<std::size_t>(p); }
}  // namespace

void token_guard::release() noexcept {
  if (owner_ != nullptr) owner_->release(bytes_);
  owner_ = nullptr;
  bytes_ = 0;
}

bandwidth_semaphore::bandwidth_semaphore(std::uint64_t capacity, semaphore_options options)
    : capacity_(capacity), options_(options) {
  LRIS_EXPECTS(capacity > 0, "bandwidth_semaphore: a capacity of 0 bytes");
  for (unsigned w : options_.weight) {
    LRIS_EXPECTS(w > 0, "bandwidth_semaphore: a priority weight of 0 would starve it");
  }
}

bandwidth_semaphore::~bandwidth_semaphore() {
  std::vector<std::function<void(token_guard)>> refused;
  {
    std::lock_guard lock(mutex_);
    for (auto& q : queue_) {
      for (auto& w : q) {
        if (w->on_grant) refused.push_back(std::move(w->on_grant));
      }
      q.clear();
    }
  }
  for (auto& f : refused) f(token_guard{});
}

bool bandwidth_semaphore::queues_empty() const noexcept {
  return std::all_of(std::begin(queue_), std::end(queue_), [](const auto& q) { return q.empty(); });
}

std::shared_ptr<bandwidth_semaphore::waiter> bandwidth_semaphore::enqueue(std::uint64_t bytes,
                                                                          priority p) {
  auto w = std::make_shared<waiter>();
  w->bytes = bytes;
  w->prio = p;
  auto& q = queue_[index(p)];
  // A priority that was idle starts from the others' virtual time: idleness earns no credit.
  if (q.empty()) {
    double now = -1;
    for (std::size_t i = 0; i < priority_count; ++i) {
      if (!queue_[i].empty()) now = now < 0 ? virtual_time_[i] : std::min(now, virtual_time_[i]);
    }
    if (now >= 0) virtual_time_[index(p)] = std::max(virtual_time_[index(p)], now);
  }
  q.push_back(w);
  ++stats_.waiting;
  return w;
}

void bandwidth_semaphore::grant_locked(
    std::vector<std::pair<std::function<void(token_guard)>, token_guard>>& run) {
  for (;;) {
    // The priority whose head would finish first in virtual time.
    std::size_t next = priority_count;
    double next_finish = 0;
    for (std::size_t i = 0; i < priority_count; ++i) {
      if (queue_[i].empty()) continue;
      const double f = virtual_time_[i] +
                       static_cast<double>(queue_[i].front()->bytes) / options_.weight[i];
      if (next == priority_count || f < next_finish) {
        next = i;
        next_finish = f;
      }
    }
    if (next == priority_count) return;
    auto w = queue_[next].front();
    // The head waits for its tokens; nobody passes it (else large requests could starve).
    if (in_flight_ + w->bytes > capacity_) return;
    queue_[next].pop_front();
    --stats_.waiting;
    in_flight_ += w->bytes;
    virtual_time_[next] += static_cast<double>(w->bytes) / options_.weight[next];
    stats_.granted_bytes[next] += w->bytes;
    ++stats_.grants[next];
    ++stats_.waits[next];
    if (w->on_grant) {
      run.emplace_back(std::move(w->on_grant), token_guard(this, w->bytes));
    } else {
      w->granted.store(true, std::memory_order_release);
      w->cv.notify_one();
    }
  }
}

void bandwidth_semaphore::release(std::uint64_t bytes) noexcept {
  std::vector<std::pair<std::function<void(token_guard)>, token_guard>> run;
  {
    std::lock_guard lock(mutex_);
    in_flight_ -= std::min(bytes, in_flight_);
    try {
      grant_locked(run);
    } catch (...) {  // out of memory for the list: the next release grants them
    }
  }
  for (auto& [f, g] : run) f(std::move(g));
}

token_guard bandwidth_semaphore::try_acquire(std::uint64_t bytes, priority p) {
  bytes = clamp(bytes);
  std::lock_guard lock(mutex_);
  if (!queues_empty() || in_flight_ + bytes > capacity_) return {};
  auto& vt = virtual_time_[index(p)];
  in_flight_ += bytes;
  vt += static_cast<double>(bytes) / options_.weight[index(p)];
  stats_.granted_bytes[index(p)] += bytes;
  ++stats_.grants[index(p)];
  return token_guard(this, bytes);
}

token_guard bandwidth_semaphore::acquire(std::uint64_t bytes, priority p,
                                         std::chrono::nanoseconds spin) {
  return try_acquire_for(bytes, p, std::chrono::nanoseconds::max(), spin);
}

token_guard bandwidth_semaphore::try_acquire_for(std::uint64_t bytes, priority p,
                                                 std::chrono::nanoseconds timeout,
                                                 std::chrono::nanoseconds spin) {
  if (token_guard g = try_acquire(bytes, p)) return g;
  bytes = clamp(bytes);
  std::vector<std::pair<std::function<void(token_guard)>, token_guard>> run;
  {
    std::unique_lock lock(mutex_);
    auto w = enqueue(bytes, p);
    grant_locked(run);  // the tokens may have come free since try_acquire
    const bool forever = timeout == std::chrono::nanoseconds::max();
    const auto deadline = forever ? std::chrono::steady_clock::time_point::max()
                                  : std::chrono::steady_clock::now() + timeout;
    if (!w->granted && spin > std::chrono::nanoseconds::zero()) {
      lock.unlock();
      for (auto& [f, g] : run) f(std::move(g));
      run.clear();
      for (const auto until = std::chrono::steady_clock::now() + std::min(spin, timeout);
           !w->granted.load(std::memory_order_acquire) && std::chrono::steady_clock::now() < until;) {
        std::this_thread::yield();
      }
      lock.lock();
    }
    while (!w->granted) {
      if (forever) {
        w->cv.wait(lock);
      } else if (w->cv.wait_until(lock, deadline) == std::cv_status::timeout && !w->granted) {
        auto& q = queue_[index(p)];
        q.erase(std::find(q.begin(), q.end(), w));
        --stats_.waiting;
        ++stats_.timeouts;
        grant_locked(run);  // it may have blocked the line
        lock.unlock();
        for (auto& [f, g] : run) f(std::move(g));
        return {};
      }
    }
  }
  for (auto& [f, g] : run) f(std::move(g));
  return token_guard(this, bytes);
}

void bandwidth_semaphore::acquire_async(std::uint64_t bytes, priority p,
                                        std::function<void(token_guard)> granted) {
  LRIS_EXPECTS(static_cast<bool>(granted), "bandwidth_semaphore::acquire_async: no callback");
  if (token_guard g = try_acquire(bytes, p)) {
    granted(std::move(g));
    return;
  }
  std::vector<std::pair<std::function<void(token_guard)>, token_guard>> run;
  {
    std::lock_guard lock(mutex_);
    enqueue(clamp(bytes), p)->on_grant = std::move(granted);
    grant_locked(run);
  }
  for (auto& [f, g] : run) f(std::move(g));
}

semaphore_stats bandwidth_semaphore::stats() const {
  std::lock_guard lock(mutex_);
  semaphore_stats s = stats_;
  s.in_flight = in_flight_;
  return s;
}

}  // namespace lris::sched
