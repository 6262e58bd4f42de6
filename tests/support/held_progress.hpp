#pragma once
// A transfer held at its first progress report until the test releases it: for tests that
// need a transfer in flight while they act. A watchdog releases it after ten seconds, so that
// a test whose call waited for the transfer fails instead of hanging.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

#include <lris/exec/stats.hpp>

namespace lris::test {

class held_progress {
 public:
  held_progress()
      : watchdog_([this] {
          for (int i = 0; i < 10000 && !released_.load(); ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
          }
          released_ = true;
        }) {}
  ~held_progress() {
    release();
    watchdog_.join();
  }
  held_progress(const held_progress&) = delete;
  held_progress& operator=(const held_progress&) = delete;

  /// The progress callback that holds the transfer.
  [[nodiscard]] lris::progress_fn callback() {
    return [this](std::uint64_t, std::uint64_t) {
      while (!released_.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      return true;
    };
  }
  /// True while the transfer is held (neither the test nor the watchdog released it).
  [[nodiscard]] bool held() const { return !released_.load(); }
  void release() { released_ = true; }

 private:
  std::atomic<bool> released_{false};
  std::thread watchdog_;
};

}  // namespace lris::test
