#pragma once
/// @file
/// @brief The host backend's captures: the work its streams queue while captured, in the order
/// it was queued (a valid order of the graph it stands for), replayed by one task.

#include <functional>
#include <memory>
#include <mutex>
#include <vector>

namespace lris::detail {

/// @brief One capture: open from begin_capture() until end_capture(); streams that joined it
/// leave it when it closes.
struct host_capture {
  std::mutex mutex;
  std::vector<std::function<void()>> tasks;
  const void* origin = nullptr;  // the queue of the stream that began it
  bool open = true;

  void add(std::function<void()> task) {
    std::lock_guard lock(mutex);
    tasks.push_back(std::move(task));
  }
  [[nodiscard]] bool is_open() {
    std::lock_guard lock(mutex);
    return open;
  }
};

}  // namespace lris::detail
