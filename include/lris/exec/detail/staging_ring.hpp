#pragma once
/// @file
/// @brief The pinned staging ring shared by a pipeline's transfers, with a bound on its bytes.

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include <fmt/format.h>

#include <lris/concepts/allocator_policy.hpp>
#include <lris/concepts/backend_policy.hpp>
#include <lris/error.hpp>

namespace lris::detail {

/// @brief One pinned chunk buffer and the event of the last DMA that used it.
template <class Backend>
struct staging_slot {
  explicit staging_slot(typename Backend::event e) : event(std::move(e)) {}
  std::byte* data = nullptr;
  std::size_t bytes = 0;
  typename Backend::event event;
  // Filled in by transfers: whether a DMA of `pending_bytes` is still in flight from it.
  bool pending = false;
  std::size_t pending_bytes = 0;
  // Device memory of `bytes`, made on first use by transfers that pack many buffers into the
  // slot: the slot moves in one DMA, and the device spreads it from there. Freed with the slot.
  void* device_scratch = nullptr;
  // The slot's registration with the io engine (fixed buffers) for file transfers; 0: none.
  std::uint64_t io_registration = 0;
};

/// @brief Pinned slots handed to transfers. Slots are kept for reuse; the total never exceeds
/// `max_bytes`. A transfer gets at least one slot (waiting only while it would get none), so
/// concurrent transfers always make progress.
template <backend_policy Backend, allocator_policy Allocator>
class staging_ring {
 public:
  using slot = staging_slot<Backend>;

  staging_ring(Backend backend, Allocator alloc, std::size_t max_bytes)
      : backend_(std::move(backend)), alloc_(std::move(alloc)), max_bytes_(max_bytes) {}
  ~staging_ring() {
    for (auto& s : slots_) free_slot(*s);
  }
  staging_ring(const staging_ring&) = delete;
  staging_ring& operator=(const staging_ring&) = delete;

  [[nodiscard]] std::size_t max_bytes() const noexcept { return max_bytes_; }
  /// @brief Called with a slot's io registration before the slot is freed.
  void on_unregister(std::function<void(std::uint64_t)> f) { unregister_ = std::move(f); }

  /// @brief Between 1 and `want` slots of exactly `bytes` bytes (bytes <= max_bytes()), made
  /// (pinned) now. With `unmade`, only the first is made now where none is free: the bound is
  /// kept for the others, *unmade of them, for the caller to make() while it works (pinning
  /// takes about a millisecond per 4 MiB: a first transfer need not wait for all of it) or
  /// to give back with release().
  std::vector<slot*> acquire(std::size_t want, std::size_t bytes, std::size_t* unmade = nullptr) {
    LRIS_EXPECTS(bytes > 0 && bytes <= max_bytes_,
                 "staging ring: a chunk of {} bytes does not fit its bound of {} bytes", bytes,
                 max_bytes_);
    std::vector<slot*> got;
    std::size_t promised = 0;
    std::unique_lock lock(mutex_);
    for (;;) {
      take_free(got, want, bytes);
      if (got.size() < want && total_bytes_ + bytes > max_bytes_) evict_other_sizes(bytes);
      try {
        while (got.size() + promised < want && total_bytes_ + bytes <= max_bytes_) {
          if (unmade != nullptr && !got.empty()) {
            total_bytes_ += bytes;  // kept for the caller to make
            ++promised;
          } else {
            got.push_back(grow(bytes));
          }
        }
      } catch (const out_of_memory&) {
        // Pinned memory ran out below the bound: go on with the slots we have; else free
        // cached slots of other sizes and retry; else wait for other transfers' slots.
        if (got.empty()) {
          const bool others_hold_slots = slots_.size() > free_.size();
          if (free_.empty() && !others_hold_slots) throw;
          if (!free_.empty()) {
            evict_other_sizes(bytes);
            continue;
          }
        }
      }
      if (!got.empty()) break;
      cv_.wait(lock);
    }
    for (slot* s : got) {
      s->pending = false;
      s->pending_bytes = 0;
    }
    if (unmade != nullptr) *unmade = promised;
    return got;
  }

  /// @brief Makes one slot of `bytes` that acquire() kept room for, outside the ring's lock
  /// (several callers pin at once).
  /// @throws lris::out_of_memory where pinned memory ran out (the room stays kept: give it
  /// back with release()).
  slot* make(std::size_t bytes) {
    auto s = std::make_unique<slot>(backend_.make_event());
    s->data = static_cast<std::byte*>(alloc_.allocate(bytes, 4096));
    s->bytes = bytes;
    std::lock_guard lock(mutex_);
    slots_.push_back(std::move(s));
    return slots_.back().get();
  }

  /// @brief Returns slots whose DMAs have all completed, and the room of `unmade` slots of
  /// `bytes` that acquire() kept and nobody made.
  void release(const std::vector<slot*>& slots, std::size_t unmade = 0,
               std::size_t bytes = 0) noexcept {
    {
      std::lock_guard lock(mutex_);
      for (auto* s : slots) free_.push_back(s);
      total_bytes_ -= unmade * bytes;
    }
    cv_.notify_all();
  }

 private:
  void take_free(std::vector<slot*>& got, std::size_t want, std::size_t bytes) {
    for (auto it = free_.begin(); it != free_.end() && got.size() < want;) {
      if ((*it)->bytes == bytes) {
        got.push_back(*it);
        it = free_.erase(it);
      } else {
        ++it;
      }
    }
  }
  void evict_other_sizes(std::size_t bytes) noexcept {
    for (auto it = free_.begin(); it != free_.end();) {
      if ((*it)->bytes != bytes) {
        slot* s = *it;
        it = free_.erase(it);
        free_slot(*s);
        total_bytes_ -= s->bytes;
        std::erase_if(slots_, [s](const auto& p) { return p.get() == s; });
      } else {
        ++it;
      }
    }
  }
  void free_slot(slot& s) noexcept {
    if (s.io_registration != 0 && unregister_) unregister_(s.io_registration);
    if (s.device_scratch != nullptr) backend_.deallocate_device(s.device_scratch, s.bytes);
    alloc_.deallocate(s.data, s.bytes, 4096);
  }
  slot* grow(std::size_t bytes) {
    auto s = std::make_unique<slot>(backend_.make_event());
    s->data = static_cast<std::byte*>(alloc_.allocate(bytes, 4096));
    s->bytes = bytes;
    total_bytes_ += bytes;
    slots_.push_back(std::move(s));
    return slots_.back().get();
  }

  Backend backend_;
  Allocator alloc_;
  const std::size_t max_bytes_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<slot>> slots_;
  std::vector<slot*> free_;
  std::size_t total_bytes_ = 0;
  std::function<void(std::uint64_t)> unregister_;
};

}  // namespace lris::detail
