#include <lris/sched/bandwidth_broker.hpp>

#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cerrno>

#include <fmt/format.h>

#include <lris/error.hpp>

namespace lris::sched {

struct bandwidth_broker::entry {
  std::string name;
  double ceiling = 0;
  std::uint64_t capacity = 0;
  std::size_t monitor = 0;
  std::unique_ptr<bandwidth_semaphore> local;
  std::unique_ptr<shared_semaphore> shared;
  std::mutex mutex;  // the throttle and the counters
  throttle thr;
  std::uint64_t granted_bytes[priority_count] = {};
  std::uint64_t grants[priority_count] = {};
  std::uint64_t waits[priority_count] = {};

  explicit entry(const throttle_options& o) : thr(o) {}
};

namespace {

std::string segment_name(std::string_view prefix, std::string_view resource) {
  std::string s = fmt::format("{}-{}", prefix, resource);
  for (char& c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.';
    if (!ok) c = '-';
  }
  return s;
}

}  // namespace

std::string host_resource() { return "host"; }

std::string link_resource(std::string_view backend_key, bool to_device) {
  return fmt::format("{} {}", backend_key, to_device ? "h2d" : "d2h");
}

std::string storage_resource(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw io_error(errno, fmt::format("fstat of descriptor {}", fd));
  return fmt::format("disk {}:{}", major(st.st_dev), minor(st.st_dev));
}

bandwidth_broker::bandwidth_broker(broker_options options)
    : options_(std::move(options)), monitor_(options_.monitor) {
  LRIS_EXPECTS(options_.min_capacity > 0 && options_.unknown_capacity > 0,
               "broker: capacities must be positive (min {}, unknown {})",
               options_.min_capacity, options_.unknown_capacity);
  throttle check(options_.throttle);  // validates the thresholds
  bandwidth_semaphore weights(1, options_.semaphore);  // and the weights
  reaper_ = std::thread([this] { reap(); });
}

bandwidth_broker::~bandwidth_broker() {
  {
    std::lock_guard lock(pending_mutex_);
    stop_ = true;
  }
  pending_cv_.notify_all();
  reaper_.join();
}

void bandwidth_broker::remove_shared(std::string_view shared_name, std::string_view resource) noexcept {
  try {
    shared_semaphore::remove(segment_name(shared_name, resource));
  } catch (...) {  // out of memory for the name: nothing to remove
  }
}

std::size_t bandwidth_broker::resource(std::string_view name, double ceiling_gbps,
                               bandwidth_monitor::external_source external) {
  std::lock_guard lock(mutex_);
  if (auto it = by_name_.find(name); it != by_name_.end()) return it->second;
  LRIS_EXPECTS(!name.empty(), "broker: a resource needs a name");
  auto e = std::make_unique<entry>(options_.throttle);
  e->name = std::string(name);
  if (auto c = options_.ceilings.find(name); c != options_.ceilings.end()) {
    e->ceiling = c->second;
  } else if (ceiling_gbps > 0) {
    e->ceiling = ceiling_gbps;
  } else {
    try {
      e->ceiling = options_.ceiling_of ? options_.ceiling_of(name) : 0;
    } catch (const std::exception&) {
      e->ceiling = 0;  // a malformed profile: the loaders report it; here the ceiling is unknown
    }
  }
  const double in_flight_s = std::chrono::duration<double>(options_.in_flight).count();
  e->capacity = e->ceiling > 0
                    ? std::max<std::uint64_t>(options_.min_capacity,
                                              static_cast<std::uint64_t>(e->ceiling * 1e9 * in_flight_s))
                    : options_.unknown_capacity;
  if (options_.shared_name.empty()) {
    e->local = std::make_unique<bandwidth_semaphore>(e->capacity, options_.semaphore);
  } else {
    shared_semaphore_options so;
    std::copy(std::begin(options_.semaphore.weight), std::end(options_.semaphore.weight),
              std::begin(so.weight));
    e->shared = std::make_unique<shared_semaphore>(segment_name(options_.shared_name, name),
                                                   e->capacity, so);
    e->capacity = e->shared->capacity();  // the creator's
  }
  e->monitor = monitor_.add_resource(e->name, e->ceiling, std::move(external));
  entries_.push_back(std::move(e));
  by_name_.emplace(std::string(name), entries_.size() - 1);
  return entries_.size() - 1;
}

std::size_t bandwidth_broker::resource_count() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

bandwidth_broker::entry& bandwidth_broker::at(std::size_t r) const {
  std::lock_guard lock(mutex_);
  LRIS_EXPECTS(r < entries_.size(), "broker: no resource {} (there are {})", r, entries_.size());
  return *entries_[r];
}

std::uint64_t bandwidth_broker::capacity(std::size_t r) const { return at(r).capacity; }
std::string bandwidth_broker::name(std::size_t r) const { return at(r).name; }

std::chrono::nanoseconds bandwidth_broker::now() const {
  if (options_.monitor.clock) return options_.monitor.clock();
  return std::chrono::steady_clock::now().time_since_epoch();
}

resource_tokens bandwidth_broker::acquire(std::size_t r, std::uint64_t bytes, priority p,
                                   const std::shared_ptr<bandwidth_semaphore>& budget,
                                   bool* waited, bool spin) {
  entry& e = at(r);
  {
    // Waiting counts as activity: the throttle must see critical work that waits.
    std::lock_guard lock(e.mutex);
    e.thr.note_active(p, now());
  }
  resource_tokens t;
  t.bytes_ = bytes;
  bool wait = false;
  auto get = [&](auto& semaphore, std::chrono::nanoseconds spin_for) {
    auto g = semaphore.try_acquire(bytes, p);
    if (!g) {
      wait = true;
      g = semaphore.acquire(bytes, p, spin_for);
    }
    return g;
  };
  if (budget) {
    t.budget_ = get(*budget, std::chrono::nanoseconds::zero());
    t.budget_owner_ = budget;
  }
  const std::chrono::nanoseconds spin_for = spin ? options_.spin : std::chrono::microseconds::zero();
  if (e.local) {
    t.held_ = get(*e.local, spin_for);
  } else {
    t.held_ = get(*e.shared, spin_for);
  }
  granted(e, p, bytes, wait);
  if (waited) *waited = wait;
  return t;
}

resource_tokens bandwidth_broker::try_acquire(std::size_t r, std::uint64_t bytes, priority p,
                                       const std::shared_ptr<bandwidth_semaphore>& budget) {
  entry& e = at(r);
  resource_tokens t;
  if (budget) {
    t.budget_ = budget->try_acquire(bytes, p);
    if (!t.budget_) return {};
    t.budget_owner_ = budget;
  }
  auto take = [&](auto& semaphore) {
    auto g = semaphore.try_acquire(bytes, p);
    const bool got = static_cast<bool>(g);
    if (got) t.held_ = std::move(g);
    return got;
  };
  if (!(e.local ? take(*e.local) : take(*e.shared))) return {};
  t.bytes_ = bytes;
  granted(e, p, bytes, false);
  return t;
}

void bandwidth_broker::granted(entry& e, priority p, std::uint64_t bytes, bool waited) {
  const auto i = static_cast<std::size_t>(p);
  std::lock_guard lock(e.mutex);
  e.granted_bytes[i] += bytes;
  ++e.grants[i];
  if (waited) ++e.waits[i];
  e.thr.note_active(p, now());
}

throttle_action bandwidth_broker::admit(std::size_t r, priority p, bool fallback_possible,
                                 bool* delayed) {
  entry& e = at(r);
  if (!options_.throttle.enabled) {  // nothing to observe: counted as what it is
    std::lock_guard lock(e.mutex);
    return e.thr.decide(p, now(), fallback_possible);
  }
  // The utilization now into the throttle, then `f(now)` under its lock.
  const auto look = [&](auto&& f) {
    const double u = monitor_.reading(e.monitor).utilization;
    std::lock_guard lock(e.mutex);
    const auto t = now();
    e.thr.observe(u, t);
    return f(t);
  };
  const auto start = std::chrono::steady_clock::now();
  const throttle_action a = look([&](auto t) { return e.thr.decide(p, t, fallback_possible); });
  if (a != throttle_action::delay_background) return a;
  if (delayed) *delayed = true;
  // Waits while the decision stands (not counted again), then goes in smaller chunks.
  for (;;) {
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    if (!look([&](auto t) { return e.thr.holds_back_background(t); })) return a;
    if (std::chrono::steady_clock::now() - start >= options_.throttle.max_delay) {
      return throttle_action::smaller_chunks;
    }
  }
}

void bandwidth_broker::release_when(std::function<bool()> ready, resource_tokens tokens, std::size_t r,
                             const void* order) {
  {
    std::lock_guard lock(pending_mutex_);
    pending_.push_back({std::move(ready), std::move(tokens), r, order});
  }
  pending_cv_.notify_one();
}

void bandwidth_broker::record(std::size_t r, std::uint64_t bytes) { monitor_.record(at(r).monitor, bytes); }

std::size_t bandwidth_broker::pending() const {
  std::lock_guard lock(pending_mutex_);
  return pending_.size() + reaping_;
}

void bandwidth_broker::reap() {
  // Short sleeps between polls: the default timer slack (50 us) would add to every release.
  ::prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL);
  std::vector<pending_release> work;
  std::vector<const void*> busy;  // orders whose oldest work is not done yet
  auto progress = std::chrono::steady_clock::now();  // the last completion or new work
  std::unique_lock lock(pending_mutex_);
  for (;;) {
    pending_cv_.wait(lock, [&] { return stop_ || !pending_.empty() || !work.empty(); });
    if (stop_ && pending_.empty() && work.empty()) return;
    if (!pending_.empty()) progress = std::chrono::steady_clock::now();
    std::move(pending_.begin(), pending_.end(), std::back_inserter(work));
    pending_.clear();
    reaping_ = work.size();
    lock.unlock();
    std::size_t released = 0;
    busy.clear();
    for (auto& w : work) {
      if (w.order != nullptr && std::find(busy.begin(), busy.end(), w.order) != busy.end()) continue;
      bool done = true;
      try {
        done = w.ready();
      } catch (...) {  // the transfer that owns the work reports the failure
      }
      if (!done) {
        if (w.order != nullptr) busy.push_back(w.order);
        continue;
      }
      const std::uint64_t bytes = w.tokens.bytes();
      w.tokens.release();
      w.ready = nullptr;
      ++released;
      try {
        record(w.r, bytes);
      } catch (...) {
      }
    }
    std::erase_if(work, [](const pending_release& w) { return !w.ready; });
    // Polls without pause while device work completes (a waiter may be spinning for the
    // tokens); after `spin` without a completion, every 20 us.
    const auto now = std::chrono::steady_clock::now();
    if (released > 0) {
      progress = now;
    } else if (now - progress < options_.spin) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
    lock.lock();
    reaping_ = work.size();
  }
}

resource_status bandwidth_broker::status(std::size_t r) {
  entry& e = at(r);
  const resource_reading rd = monitor_.reading(e.monitor);
  resource_status s;
  s.name = e.name;
  s.gbps = rd.gbps;
  s.ceiling_gbps = e.ceiling;
  s.utilization = rd.utilization;
  s.external = rd.external;
  s.external_gbps = rd.external_gbps;
  s.bytes = rd.bytes;
  s.capacity = e.capacity;
  s.shared = e.shared != nullptr;
  s.in_flight = e.local ? e.local->stats().in_flight : e.shared->in_flight();
  std::lock_guard lock(e.mutex);
  s.congested = e.thr.congested();
  s.throttle = e.thr.counts();
  std::copy(std::begin(e.granted_bytes), std::end(e.granted_bytes), std::begin(s.granted_bytes));
  std::copy(std::begin(e.grants), std::end(e.grants), std::begin(s.grants));
  std::copy(std::begin(e.waits), std::end(e.waits), std::begin(s.waits));
  return s;
}

std::vector<resource_status> bandwidth_broker::status() {
  std::vector<resource_status> all;
  for (std::size_t r = 0, n = resource_count(); r < n; ++r) all.push_back(status(r));
  return all;
}

}  // namespace lris::sched
