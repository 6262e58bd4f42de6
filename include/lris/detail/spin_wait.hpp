#pragma once
/// @file
/// @brief Spin briefly before sleeping: waking a sleeping thread costs tens to hundreds of
/// microseconds (more on virtual machines), longer than a small copy takes.

#include <chrono>
#include <thread>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace lris::detail {

/// @brief How long a waiter spins before it blocks.
inline constexpr std::chrono::microseconds spin_budget{50};

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

/// @brief Polls `ready()` for up to spin_budget; true when it became true meanwhile. The
/// caller then blocks the usual way (condition variable) if it returned false.
template <class Ready>
[[nodiscard]] bool spin_until(Ready&& ready) noexcept(noexcept(ready())) {
  const auto deadline = std::chrono::steady_clock::now() + spin_budget;
  for (unsigned i = 0;; ++i) {
    if (ready()) return true;
    if ((i & 63) == 63) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::yield();  // let a thread we wait for run on an oversubscribed core
    } else {
      cpu_relax();
    }
  }
}

}  // namespace lris::detail
