#pragma once
/// @file
/// @brief far_memory: reads of a region of host memory (a pool's data, any buffer) made to cost
/// what memory behind a CXL link or a fabric would: a latency added to each read, a bandwidth
/// cap shared by every reader, and transient faults that the reader retries with backoff and
/// counts. For studying cache policies under CXL-like costs on any machine; the bytes read are
/// always the region's.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <random>
#include <span>
#include <thread>

#include <fmt/format.h>

#include <lris/error.hpp>

namespace lris::pool {

struct far_memory_options {
  /// Added to every read, before its bytes move.
  std::chrono::nanoseconds latency{0};
  /// The most GB/s (1e9 bytes) all readers together get; 0: no cap.
  double gbps = 0;
  /// The chance that a read fails transiently (0 to 1); it is retried.
  double fault_rate = 0;
  /// Retries of one read before it fails for good (lris::io_error, EIO).
  unsigned max_retries = 8;
  /// The wait before the first retry, doubled for each next one.
  std::chrono::microseconds backoff{10};
  /// Seeds the faults: the same seed and the same reads (one thread) fault alike.
  std::uint64_t seed = 1;
};

/// @brief What a far_memory's reads went through.
struct far_memory_stats {
  std::uint64_t reads = 0;     ///< that returned their bytes
  std::uint64_t bytes = 0;
  std::uint64_t faults = 0;    ///< transient faults met (each retried, or the last one failed)
  std::uint64_t failed = 0;    ///< reads that ran out of retries
  double waited_seconds = 0;   ///< latency, cap and backoff, summed over the reads
};

class far_memory {
 public:
  /// @throws lris::invalid_argument for a fault rate outside [0, 1), or a negative cap.
  far_memory(std::span<const std::byte> region, far_memory_options o = {})
      : region_(region), o_(o), rng_(o.seed) {
    if (!(o.fault_rate >= 0 && o.fault_rate < 1)) {
      throw invalid_argument(fmt::format("far_memory: a fault rate of {} (0 to less than 1)",
                                         o.fault_rate));
    }
    if (!(o.gbps == 0 || (o.gbps >= 1e-6 && o.gbps <= 1e6))) {
      throw invalid_argument(fmt::format("far_memory: a cap of {} GB/s (0 for none, else 1e-6 to "
                                         "1e6)", o.gbps));
    }
  }

  [[nodiscard]] std::size_t size() const noexcept { return region_.size(); }

  /// @brief Copies `dst.size()` bytes at `offset` of the region into `dst`, after the latency
  /// and its turn under the cap; a transient fault is retried after a backoff.
  /// @throws lris::invalid_argument naming the range when it lies outside the region;
  /// lris::io_error (EIO) naming the offset, size and retries when every retry faulted.
  void read(std::uint64_t offset, std::span<std::byte> dst) {
    if (offset > region_.size() || dst.size() > region_.size() - offset) {
      throw invalid_argument(fmt::format("far_memory: read of {} bytes at offset {} of a region "
                                         "of {} bytes", dst.size(), offset, region_.size()));
    }
    const auto begin = clock::now();
    auto backoff = std::chrono::duration_cast<clock::duration>(o_.backoff);
    for (unsigned attempt = 0;; ++attempt) {
      std::this_thread::sleep_until(turn(clock::now() + o_.latency, dst.size()));
      if (!faults()) break;
      {
        std::lock_guard lock(mutex_);
        ++stats_.faults;
        if (attempt >= o_.max_retries) {
          ++stats_.failed;
          stats_.waited_seconds += std::chrono::duration<double>(clock::now() - begin).count();
          throw io_error(EIO, fmt::format("far_memory: read of {} bytes at offset {} faulted {} "
                                          "times (every retry)", dst.size(), offset, attempt + 1));
        }
      }
      std::this_thread::sleep_for(backoff);  // not holding the lock: other readers go on
      backoff = std::min<clock::duration>(backoff * 2, std::chrono::seconds(1));
    }
    if (!dst.empty()) std::memcpy(dst.data(), region_.data() + offset, dst.size());
    std::lock_guard lock(mutex_);
    ++stats_.reads;
    stats_.bytes += dst.size();
    stats_.waited_seconds += std::chrono::duration<double>(clock::now() - begin).count();
  }

  [[nodiscard]] far_memory_stats stats() const {
    std::lock_guard lock(mutex_);
    return stats_;
  }

 private:
  using clock = std::chrono::steady_clock;

  // When a read of `bytes` that may start at `ready` has moved, under the cap: the link is
  // reserved for it from the later of `ready` and the end of the reservations before it.
  clock::time_point turn(clock::time_point ready, std::size_t bytes) {
    if (o_.gbps <= 0) return ready;
    const auto takes = std::chrono::duration_cast<clock::duration>(
        std::chrono::duration<double>(static_cast<double>(bytes) / (o_.gbps * 1e9)));
    std::lock_guard lock(mutex_);
    const auto start = std::max(ready, free_at_);
    free_at_ = start + takes;
    return free_at_;
  }
  bool faults() {
    if (o_.fault_rate <= 0) return false;
    std::lock_guard lock(mutex_);
    return std::uniform_real_distribution<double>(0, 1)(rng_) < o_.fault_rate;
  }

  std::span<const std::byte> region_;
  far_memory_options o_;
  mutable std::mutex mutex_;
  std::mt19937_64 rng_;
  clock::time_point free_at_{};
  far_memory_stats stats_;
};

}  // namespace lris::pool
