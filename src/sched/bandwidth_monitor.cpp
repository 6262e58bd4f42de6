#include <lris/sched/bandwidth_monitor.hpp>

#include <algorithm>
#include <cmath>

#include <lris/error.hpp>

namespace lris::sched {

bandwidth_monitor::bandwidth_monitor(monitor_options options) : options_(std::move(options)) {
  LRIS_EXPECTS(options_.window.count() > 0, "bandwidth_monitor: a window of {} ns",
               options_.window.count());
  LRIS_EXPECTS(options_.alpha > 0 && options_.alpha <= 1,
               "bandwidth_monitor: alpha {} is not in (0, 1]", options_.alpha);
}

bandwidth_monitor::~bandwidth_monitor() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  sampler_cv_.notify_all();
  if (sampler_.joinable()) sampler_.join();
}

std::int64_t bandwidth_monitor::now() const {
  if (options_.clock) return options_.clock().count();
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::size_t bandwidth_monitor::add_resource(std::string name, double ceiling_gbps,
                                            external_source external) {
  LRIS_EXPECTS(ceiling_gbps >= 0, "bandwidth_monitor: resource {}: a ceiling of {} GB/s", name,
               ceiling_gbps);
  const std::int64_t t = now();
  std::lock_guard lock(mutex_);
  resources_.push_back({std::move(name), ceiling_gbps, 0, t, 0, 0, std::move(external), {}});
  return resources_.size() - 1;
}

void bandwidth_monitor::sample() {
  std::unique_lock lock(mutex_);
  while (!stop_) {
    // The sources are called unlocked (a sample may take tens of milliseconds), through
    // pointers taken under the lock: a resource's source never changes once added, and the
    // deque keeps it in place as resources are added.
    std::vector<std::pair<resource*, std::optional<double>>> got;
    for (auto& r : resources_) {
      if (r.external) got.emplace_back(&r, std::nullopt);
    }
    lock.unlock();
    for (auto& [r, v] : got) {
      try {
        v = r->external();
      } catch (...) {  // a source that fails has no sample
      }
    }
    lock.lock();
    for (auto& [r, v] : got) r->external_gbps = v;
    sampler_cv_.wait_for(lock, options_.external_period, [&] { return stop_; });
  }
}

std::size_t bandwidth_monitor::size() const {
  std::lock_guard lock(mutex_);
  return resources_.size();
}

// Folds every window that ended by `t` into the average: the open one with its bytes, the
// ones after it (nothing recorded) as idle.
void bandwidth_monitor::roll(resource& r, std::int64_t t) {
  const std::int64_t w = options_.window.count();
  if (t < r.window_start + w) return;
  const double a = options_.alpha;
  const double rate = static_cast<double>(r.in_window) * 1e9 / static_cast<double>(w);
  r.average = a * rate + (1 - a) * r.average;
  const std::int64_t idle = (t - r.window_start) / w - 1;  // whole windows with nothing
  if (idle > 0) r.average *= std::pow(1 - a, static_cast<double>(idle));
  r.window_start += (idle + 1) * w;
  r.in_window = 0;
}

void bandwidth_monitor::record(std::size_t r, std::uint64_t bytes) {
  const std::int64_t t = now();
  std::lock_guard lock(mutex_);
  LRIS_EXPECTS(r < resources_.size(), "bandwidth_monitor::record: no resource {}", r);
  auto& res = resources_[r];
  roll(res, t);
  res.in_window += bytes;
  res.total += bytes;
}

resource_reading bandwidth_monitor::reading(std::size_t r) {
  const std::int64_t t = now();
  std::lock_guard lock(mutex_);
  LRIS_EXPECTS(r < resources_.size(), "bandwidth_monitor::reading: no resource {}", r);
  auto& res = resources_[r];
  roll(res, t);
  if (res.external && !sampler_.joinable() && !stop_) sampler_ = std::thread([this] { sample(); });
  const double gbps = res.average / 1e9;
  const double busiest = std::max(gbps, res.external_gbps.value_or(0));
  return {res.name,
          gbps,
          res.ceiling,
          res.ceiling > 0 ? busiest / res.ceiling : 0,
          res.total,
          res.external_gbps.has_value(),
          res.external_gbps.value_or(0)};
}

std::vector<resource_reading> bandwidth_monitor::readings() {
  std::vector<resource_reading> out;
  for (std::size_t i = 0, n = size(); i < n; ++i) out.push_back(reading(i));
  return out;
}

}  // namespace lris::sched
