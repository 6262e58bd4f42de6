#pragma once
/// @file
/// @brief A pool of a backend's events, for reuse.

#include <memory>
#include <mutex>
#include <vector>

#include <lris/concepts/backend_policy.hpp>

namespace lris::detail {

/// @brief Events for single-operation transfers, kept for reuse: creating one per transfer
/// costs more than a small copy. An event goes back to the pool when the last holder of its
/// shared_ptr lets go, which is after its transfer is over.
template <backend_policy Backend>
class event_pool : public std::enable_shared_from_this<event_pool<Backend>> {
 public:
  using event = typename Backend::event;
  explicit event_pool(Backend b) : backend_(std::move(b)) {}

  [[nodiscard]] std::shared_ptr<event> take() {
    std::unique_ptr<event> e;
    {
      std::lock_guard lock(mutex_);
      if (!free_.empty()) {
        e = std::move(free_.back());
        free_.pop_back();
      }
    }
    if (!e) e = std::make_unique<event>(backend_.make_event());
    return {e.release(), [pool = this->shared_from_this()](event* ev) {
              std::lock_guard lock(pool->mutex_);
              pool->free_.emplace_back(ev);
            }};
  }

 private:
  Backend backend_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<event>> free_;
};

}  // namespace lris::detail
