#pragma once
// The host memory-copy ceiling that LRIS is measured against: plain memcpy, one contiguous
// slice per thread, on a team of threads started once and released together by a barrier.
// No LRIS code runs in it, and no thread start is timed. The same team reads memory alone
// (a sum of its 64-bit words): what devices reading host memory by DMA share.

#include <algorithm>
#include <barrier>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace lris::tool {

class raw_copy_team {
 public:
  explicit raw_copy_team(unsigned threads)
      : start_(static_cast<std::ptrdiff_t>(threads)), done_(static_cast<std::ptrdiff_t>(threads)) {
    for (unsigned t = 1; t < threads; ++t) {
      workers_.emplace_back([this, t, threads] {
        for (;;) {
          start_.arrive_and_wait();
          if (stop_) return;
          copy_slice(t, threads);
          done_.arrive_and_wait();
        }
      });
    }
    threads_ = threads;
    sums_.assign(threads, 0);
  }
  ~raw_copy_team() {
    stop_ = true;
    start_.arrive_and_wait();
    for (auto& w : workers_) w.join();
  }
  raw_copy_team(const raw_copy_team&) = delete;
  raw_copy_team& operator=(const raw_copy_team&) = delete;

  [[nodiscard]] unsigned threads() const noexcept { return threads_; }

  /// memcpy(dst, src, bytes) split over the team; the calling thread copies slice 0.
  void copy(void* dst, const void* src, std::size_t bytes) {
    dst_ = static_cast<char*>(dst);
    src_ = static_cast<const char*>(src);
    bytes_ = bytes;
    start_.arrive_and_wait();
    copy_slice(0, threads_);
    done_.arrive_and_wait();
  }
  /// Reads `bytes` (a multiple of 8) at `src`, split over the team; returns the sum of its
  /// 64-bit words, so that the reads cannot be left out.
  std::uint64_t read(const void* src, std::size_t bytes) {
    dst_ = nullptr;
    src_ = static_cast<const char*>(src);
    bytes_ = bytes;
    start_.arrive_and_wait();
    copy_slice(0, threads_);
    done_.arrive_and_wait();
    std::uint64_t total = 0;
    for (const std::uint64_t s : sums_) total += s;
    return total;
  }

 private:
  // Thread t's slice: copied, or summed into sums_[t] when there is no destination.
  void copy_slice(unsigned t, unsigned threads) {
    const std::size_t slice = (bytes_ / threads + 4095) & ~std::size_t{4095};
    const std::size_t off = std::min(bytes_, t * slice);
    const std::size_t n = std::min(slice, bytes_ - off);
    if (dst_ != nullptr) {
      std::memcpy(dst_ + off, src_ + off, n);
      return;
    }
    std::uint64_t sum = 0;
    for (std::size_t i = 0; i + 8 <= n; i += 8) {
      std::uint64_t w;
      std::memcpy(&w, src_ + off + i, 8);
      sum += w;
    }
    sums_[t] = sum;
  }

  std::barrier<> start_;
  std::barrier<> done_;
  std::vector<std::thread> workers_;
  unsigned threads_ = 1;
  bool stop_ = false;  // written before the start barrier, read after it
  char* dst_ = nullptr;
  const char* src_ = nullptr;
  std::size_t bytes_ = 0;
  std::vector<std::uint64_t> sums_;  // per thread, its slice's sum (read)
};

}  // namespace lris::tool
