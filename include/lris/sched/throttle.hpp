#pragma once
/// @file
/// @brief throttle: what work of one priority should do on a busy resource, decided from the
/// resource's utilization with hysteresis and from which priorities are active on it.
///
/// A resource becomes congested when its utilization reaches `high` and stays so until it falls
/// under `low`. While it is congested and work of a higher priority has been active on it within
/// `window`, lower-priority work gives way: background work delays the launch of its next chunk,
/// normal work (and background work when delays are off) moves in smaller chunks, so that what
/// is in flight ahead of the critical work drains sooner. Critical work on a resource congested
/// by lower-priority work takes another path where one exists. Each decision is counted.

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <lris/sched/bandwidth_semaphore.hpp>

namespace lris::sched {

enum class throttle_action : std::uint8_t {
  none,              ///< go ahead as planned
  smaller_chunks,    ///< split the next chunk into smaller pieces
  delay_background,  ///< wait before launching the next background chunk
  fallback_path,     ///< take another path that avoids this resource's queue
};
inline constexpr std::size_t throttle_action_count = 4;

/// @brief "none", "smaller_chunks", "delay_background" or "fallback_path".
[[nodiscard]] std::string_view to_string(throttle_action a) noexcept;

struct throttle_options {
  /// Off by default: on an H200, 4 background streams and a critical one, the tokens' order
  /// alone met the latency target, and delaying background launches cost a fifth of the
  /// aggregate throughput (benchmarks/RESULTS.md). Decisions are counted either way.
  bool enabled = false;
  double high = 0.90;  ///< utilization at which a resource becomes congested
  double low = 0.70;   ///< utilization under which it is congested no more (hysteresis)
  /// Work of a priority seen this recently counts as active. Short: work that has stopped
  /// must not hold others back.
  std::chrono::nanoseconds window = std::chrono::milliseconds(1);
  bool smaller_chunks = true;
  bool delay_background = true;
  /// Off by default: on an H200, critical copies by the GPU's cores while the DMA engines
  /// carry bulk work had a worse p99 than DMA pieces ordered by the tokens (benchmarks/RESULTS.md).
  bool fallback = false;
  /// Smaller chunks are a quarter of the planned size, but not under this.
  std::size_t min_chunk_bytes = std::size_t{1} << 20;
  /// A background launch waits at most this long for the higher-priority work to pass.
  std::chrono::nanoseconds max_delay = std::chrono::milliseconds(1);
};

/// @brief Decisions taken, by action, and the congestion episodes.
struct throttle_counts {
  std::array<std::uint64_t, throttle_action_count> decisions{};
  std::uint64_t congested_episodes = 0;  ///< times the resource became congested

  [[nodiscard]] std::uint64_t operator[](throttle_action a) const noexcept {
    return decisions[static_cast<std::size_t>(a)];
  }
  throttle_counts& operator+=(const throttle_counts& o) noexcept {
    for (std::size_t i = 0; i < throttle_action_count; ++i) decisions[i] += o.decisions[i];
    congested_episodes += o.congested_episodes;
    return *this;
  }
};

/// @brief The piece size for smaller chunks of `planned` bytes: a quarter, not under
/// `min_chunk_bytes`, never more than planned.
[[nodiscard]] constexpr std::size_t smaller_piece(std::size_t planned,
                                                  std::size_t min_chunk_bytes) noexcept {
  const std::size_t quarter = planned / 4 > min_chunk_bytes ? planned / 4 : min_chunk_bytes;
  return quarter < planned ? quarter : planned;
}

/// @brief The throttle of one resource. Not thread-safe: its owner (the broker) locks.
/// Times are on any monotonic clock, so that tests drive it with a fake one.
class throttle {
 public:
  /// @throws lris::invalid_argument unless 0 <= low <= high.
  explicit throttle(throttle_options options = {});

  /// @brief The resource's utilization at `now`: enters congestion at `high`, leaves it under
  /// `low`.
  void observe(double utilization, std::chrono::nanoseconds now) noexcept;
  /// @brief Work at `p` waits or moves on the resource at `now`.
  void note_active(priority p, std::chrono::nanoseconds now) noexcept;
  /// @brief What the next chunk of work at `p` should do; counted. `fallback_possible` says
  /// whether the caller has another path.
  throttle_action decide(priority p, std::chrono::nanoseconds now, bool fallback_possible = false) noexcept;

  [[nodiscard]] bool congested() const noexcept { return congested_; }
  /// @brief Whether background work should still wait at `now` (not counted).
  [[nodiscard]] bool holds_back_background(std::chrono::nanoseconds now) const noexcept {
    return options_.enabled && options_.delay_background && congested_ &&
           (active(priority::critical, now) || active(priority::normal, now));
  }
  [[nodiscard]] const throttle_counts& counts() const noexcept { return counts_; }
  [[nodiscard]] const throttle_options& options() const noexcept { return options_; }
  /// @brief The piece size for smaller chunks of `planned` bytes.
  [[nodiscard]] std::size_t smaller(std::size_t planned) const noexcept {
    return smaller_piece(planned, options_.min_chunk_bytes);
  }

 private:
  [[nodiscard]] bool active(priority p, std::chrono::nanoseconds now) const noexcept;

  throttle_options options_;
  bool congested_ = false;
  std::array<std::chrono::nanoseconds, priority_count> last_active_{};
  std::array<bool, priority_count> seen_{};
  throttle_counts counts_;
};

}  // namespace lris::sched
