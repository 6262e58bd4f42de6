#include <lris/exec/context.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <thread>
#include <vector>

#include <lris/error.hpp>
#include <lris/exec/cpu_budget.hpp>

namespace lris {

std::shared_ptr<context> context::make(context_options options) {
  auto* c = new context(std::move(options));
  return std::shared_ptr<context>(c, [](context* p) {
    // Its pools cannot join the thread they run on: a last reference dropped by a task of this
    // context is let go of on a thread of its own.
    if (p->compute_->on_worker_thread() || p->io_->on_worker_thread() ||
        p->on_poller_thread()) {
      std::thread([p] { delete p; }).detach();
    } else {
      delete p;
    }
  });
}

context::context(context_options options)
    : options_(std::move(options)), nvml_(std::make_shared<sched::lazy_nvml_pcie>()) {
  const unsigned threads = options_.threads > 0 ? options_.threads : usable_cpus();
  options_.threads = threads;
  options_.io_threads = options_.io_threads > 0 ? options_.io_threads : std::max(8u, 2 * threads);
  // The profile's ceilings go to this broker only: options() stays free of a pointer to this
  // context, so that it can be copied to make another.
  sched::broker_options broker = options_.broker;
  if (!broker.ceiling_of) broker.ceiling_of = [this](std::string_view r) { return ceiling(r); };
  broker_ = std::make_shared<sched::bandwidth_broker>(std::move(broker));
  io_ = std::make_unique<detail::thread_pool>(options_.io_threads, options_.io_threads / 2);
  compute_ = std::make_unique<detail::thread_pool>(threads, options_.background_threads);
  options_.background_threads = compute_->background_threads();
}

void context::when_ready(std::function<bool()> ready, std::function<void()> then) {
  check_process();
  {
    std::lock_guard lock(watch_mutex_);
    watched_.emplace_back(std::move(ready), std::move(then));
    if (!poller_.joinable()) poller_ = std::thread([this] { poll(); });
  }
  watch_cv_.notify_one();
}

void context::poll() {
  using clock = std::chrono::steady_clock;
  auto last_ready = clock::now();
  std::unique_lock lock(watch_mutex_);
  for (;;) {
    watch_cv_.wait(lock, [this] { return watch_stop_ || !watched_.empty(); });
    if (watch_stop_) return;
    auto mine = std::move(watched_);
    watched_.clear();
    lock.unlock();
    bool any = false;
    for (auto& w : mine) {
      bool ready = true;
      try {
        ready = w.first();
      } catch (...) {  // a check that throws: let `then` find the error
      }
      if (!ready) continue;
      any = true;
      try {
        compute_->submit(std::move(w.second));
      } catch (...) {
        w.second();  // no room to queue it: run it here
      }
      w.first = nullptr;
    }
    std::erase_if(mine, [](auto& w) { return !w.first; });
    // Spin (yielding) for 200 us after something was ready, then sleep 50 us between looks.
    if (any) last_ready = clock::now();
    if (clock::now() - last_ready < std::chrono::microseconds(200)) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    lock.lock();
    for (auto& w : mine) watched_.push_back(std::move(w));
  }
}

namespace {
// What the child of a fork() inherited and must never destroy: its threads are the parent's, so
// joining them would wait forever. Kept reachable for the rest of the process.
void keep_forever(std::shared_ptr<void> p) {
  static auto* kept = new std::vector<std::shared_ptr<void>>();
  static std::mutex mutex;
  std::lock_guard lock(mutex);
  kept->push_back(std::move(p));
}
}  // namespace

context::~context() {
  if (!fork_.same_process()) {
    if (poller_.joinable()) poller_.detach();
    std::lock_guard lock(registry_mutex_);
    for (auto& [key, object] : registry_) keep_forever(std::move(object));
    keep_forever(std::shared_ptr<detail::thread_pool>(compute_.release(), [](auto*) {}));
    keep_forever(std::shared_ptr<detail::thread_pool>(io_.release(), [](auto*) {}));
    keep_forever(std::move(broker_));
    return;
  }
  {
    std::lock_guard lock(watch_mutex_);
    watch_stop_ = true;
  }
  watch_cv_.notify_all();
  if (poller_.joinable()) poller_.join();
  for (auto& w : watched_) w.second();  // still pending: complete them here
  // The registry's objects (default pipelines) first: their transfers' last tasks may still be
  // queued; the pools then finish them before they join, and the broker returns the tokens of
  // device work until it stops.
  {
    std::lock_guard lock(registry_mutex_);
    registry_.clear();
  }
  compute_.reset();
  io_.reset();
  broker_.reset();
}

namespace {
// The entry `key` of `cache`, read from the profile file by `load` on first use.
template <class Profile, class Load>
const Profile& cached_entry(std::map<std::string, Profile, std::less<>>& cache,
                            std::string_view key, const std::filesystem::path& file, Load load) {
  auto it = cache.find(key);
  if (it == cache.end()) {
    const auto path = file.empty() ? default_profile_path() : file;
    it = cache.emplace(std::string(key), load(path, key)).first;
  }
  return it->second;
}
}  // namespace

const transfer_profile& context::profile(std::string_view backend) {
  check_process();
  std::lock_guard lock(profiles_mutex_);
  return cached_entry(profiles_, backend, options_.profile_path, load_profile);
}

const disk_profile& context::storage_profile(std::string_view disk) {
  check_process();
  std::lock_guard lock(profiles_mutex_);
  return cached_entry(disk_profiles_, disk, options_.profile_path, load_disk_profile);
}

// The ceiling the calibrated profile gives a resource ("cuda:0 h2d" -> profile "cuda:0"), or 0.
double context::ceiling(std::string_view name) {
  if (name == sched::host_resource()) return profile("host:0").host_copy_gbps;
  const auto space = name.find(' ');
  if (space == std::string_view::npos) return 0;
  const transfer_profile& p = profile(name.substr(0, space));
  const auto dir = name.substr(space + 1);
  return dir == "h2d" ? p.h2d_gbps : dir == "d2h" ? p.d2h_gbps : 0;
}

std::shared_ptr<context> default_context() {
  auto& slot = detail::default_slot();
  std::lock_guard lock(slot.mutex);
  if (slot.current && slot.generation != detail::fork_generation()) {
    // The child of a fork(): the parent's default has no threads here. Kept, never destroyed:
    // its locks and state are the parent's, and nothing of it may run here.
    keep_forever(std::move(slot.current));
  }
  if (!slot.current) {
    // LRIS_SHARED_BROKER=NAME: the default broker's budgets are shared with every process of
    // the machine that names the same broker (shared semaphores in /dev/shm; `lris top`).
    context_options o;
    if (const char* n = std::getenv("LRIS_SHARED_BROKER"); n != nullptr && *n != '\0') {
      o.broker.shared_name = n;
    }
    slot.current = context::make(std::move(o));
    slot.generation = detail::fork_generation();
  }
  return slot.current;
}

std::shared_ptr<context> set_default_context(std::shared_ptr<context> c) {
  auto& slot = detail::default_slot();
  std::lock_guard lock(slot.mutex);
  slot.generation = detail::fork_generation();
  return std::exchange(slot.current, std::move(c));
}

namespace detail {

std::shared_ptr<thread_pool> default_thread_pool() {
  auto c = default_context();
  return {c, &c->compute()};
}

std::shared_ptr<thread_pool> default_io_thread_pool() {
  auto c = default_context();
  return {c, &c->io()};
}

}  // namespace detail

}  // namespace lris
