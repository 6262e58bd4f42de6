#pragma once
/// @file
/// @brief vector_cache<T>: a few emptied vectors kept for their capacity, so that the next
/// large plan writes into pages it has written before instead of fresh ones.

#include <cstddef>
#include <mutex>
#include <utility>
#include <vector>

namespace lris::exec::detail {

template <class T>
class vector_cache {
 public:
  /// @brief A kept vector (empty, with capacity), or a new one.
  [[nodiscard]] std::vector<T> take() {
    std::lock_guard lock(mutex_);
    if (kept_.empty()) return {};
    std::vector<T> v = std::move(kept_.back());
    kept_.pop_back();
    return v;
  }
  /// @brief Keeps `v`'s storage if it is worth keeping: small vectors cost nothing to make,
  /// huge ones are not kept, and no more than a few are.
  void keep(std::vector<T>&& v) noexcept {
    constexpr std::size_t most = 4, min_bytes = std::size_t{64} << 10, max_bytes = std::size_t{64} << 20;
    const std::size_t bytes = v.capacity() * sizeof(T);
    if (bytes < min_bytes || bytes > max_bytes) return;
    v.clear();
    try {
      std::lock_guard lock(mutex_);
      if (kept_.size() < most) kept_.push_back(std::move(v));
    } catch (...) {  // out of memory for the list: the storage is freed instead
    }
  }

 private:
  std::mutex mutex_;
  std::vector<std::vector<T>> kept_;
};

}  // namespace lris::exec::detail
