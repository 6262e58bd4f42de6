#include <lris/sched/throttle.hpp>

#include <algorithm>

#include <lris/error.hpp>

namespace lris::sched {

std::string_view to_string(throttle_action a) noexcept {
  switch (a) {
    case throttle_action::none: return "none";
    case throttle_action::smaller_chunks: return "smaller_chunks";
    case throttle_action::delay_background: return "delay_background";
    case throttle_action::fallback_path: return "fallback_path";
  }
  return "?";
}

throttle::throttle(throttle_options options) : options_(options) {
  LRIS_EXPECTS(options_.low >= 0 && options_.low <= options_.high,
               "throttle: thresholds low {} and high {} need 0 <= low <= high", options_.low,
               options_.high);
}

void throttle::observe(double utilization, std::chrono::nanoseconds) noexcept {
  if (!congested_ && utilization >= options_.high) {
    congested_ = true;
    ++counts_.congested_episodes;
  } else if (congested_ && utilization < options_.low) {
    congested_ = false;
  }
}

void throttle::note_active(priority p, std::chrono::nanoseconds now) noexcept {
  const auto i = static_cast<std::size_t>(p);
  last_active_[i] = std::max(last_active_[i], now);
  seen_[i] = true;
}

bool throttle::active(priority p, std::chrono::nanoseconds now) const noexcept {
  const auto i = static_cast<std::size_t>(p);
  return seen_[i] && now - last_active_[i] <= options_.window;
}

throttle_action throttle::decide(priority p, std::chrono::nanoseconds now,
                                 bool fallback_possible) noexcept {
  throttle_action a = throttle_action::none;
  if (options_.enabled && congested_) {
    switch (p) {
      case priority::critical:
        if (fallback_possible && options_.fallback &&
            (active(priority::normal, now) || active(priority::background, now))) {
          a = throttle_action::fallback_path;
        }
        break;
      case priority::normal:
        if (options_.smaller_chunks && active(priority::critical, now)) {
          a = throttle_action::smaller_chunks;
        }
        break;
      case priority::background:
        if (active(priority::critical, now) || active(priority::normal, now)) {
          if (options_.delay_background) {
            a = throttle_action::delay_background;
          } else if (options_.smaller_chunks) {
            a = throttle_action::smaller_chunks;
          }
        }
        break;
    }
  }
  ++counts_.decisions[static_cast<std::size_t>(a)];
  return a;
}

}  // namespace lris::sched
