#pragma once
/// @file
/// @brief caching_pool: keeps freed blocks of any allocator for reuse, because pinned and
/// device allocation cost milliseconds (they lock pages or synchronise the device).

#include <algorithm>
#include <bit>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <lris/concepts/allocator_policy.hpp>
#include <lris/concepts/memory_properties.hpp>
#include <lris/error.hpp>
#include <lris/memory/detail/allocation.hpp>
#include <lris/memory/pageable_allocator.hpp>

namespace lris {

/// @brief Tuning of a caching_pool.
struct caching_pool_options {
  /// Freed blocks are kept only while the cache holds at most this many bytes; a block that
  /// would exceed it goes straight back upstream.
  std::size_t max_cached_bytes = std::size_t{1} << 30;
  /// Requests up to this size are rounded up to a power of two (so that near sizes share
  /// blocks); larger ones are cached by their exact size (large buffers repeat exact sizes,
  /// and rounding them would waste up to half).
  std::size_t max_binned_bytes = std::size_t{1} << 20;
  /// The smallest block handed out.
  std::size_t min_block_bytes = 256;
};

/// @brief Counters of a caching_pool (shared by all of its copies). Sizes are block sizes,
/// i.e. after rounding to the size class.
struct caching_pool_stats {
  std::size_t bytes_cached = 0;     ///< freed bytes held for reuse
  std::size_t blocks_cached = 0;    ///< freed blocks held for reuse
  std::size_t bytes_in_use = 0;     ///< bytes handed out and not yet freed
  std::size_t blocks_in_use = 0;    ///< blocks handed out and not yet freed
  std::size_t peak_bytes_in_use = 0;  ///< the most bytes_in_use has been
  std::uint64_t hits = 0;           ///< allocations served from the cache
  std::uint64_t misses = 0;         ///< allocations that went upstream
  std::uint64_t oom_releases = 0;   ///< times an upstream failure made the pool drop its cache
};

namespace detail {
template <class Upstream>
struct caching_pool_state {
  using key = std::pair<std::size_t, std::size_t>;  // block bytes, alignment

  caching_pool_state(Upstream u, caching_pool_options o) : upstream(std::move(u)), options(o) {}
  caching_pool_state(const caching_pool_state&) = delete;
  caching_pool_state& operator=(const caching_pool_state&) = delete;
  ~caching_pool_state() { release(); }

  // Takes every cached block out under the lock, frees them without it (upstream frees may be
  // slow: cudaFreeHost synchronises).
  std::size_t release() noexcept {
    std::map<key, std::vector<void*>> taken;
    {
      std::lock_guard lock(mutex);
      taken.swap(free_lists);
      stats.bytes_cached = 0;
      stats.blocks_cached = 0;
    }
    std::size_t freed = 0;
    for (auto& [k, blocks] : taken) {
      for (void* p : blocks) upstream.deallocate(p, k.first, k.second);
      freed += k.first * blocks.size();
    }
    return freed;
  }

  Upstream upstream;
  const caching_pool_options options;
  std::mutex mutex;
  std::map<key, std::vector<void*>> free_lists;
  caching_pool_stats stats;
};
}  // namespace detail

/// @brief A thread-safe cache of freed blocks in front of `Upstream`, with the same memory
/// space and properties.
///
/// Blocks are kept in free lists per (size class, alignment); sizes up to max_binned_bytes are
/// rounded to powers of two, larger ones kept exactly. Copies share one pool. When the
/// upstream runs out of memory the pool frees its whole cache and tries once more. The last
/// copy's destruction returns every cached block upstream; blocks still in use then are the
/// caller's to free and are not tracked.
template <allocator_policy Upstream>
class caching_pool {
 public:
  using space = typename Upstream::space;
  static constexpr memory_properties properties = Upstream::properties;
  /// The upstream's open properties too: the pool hands out the upstream's memory.
  template <class Tag>
    requires requires(const Upstream& u) { u.get_property(Tag{}); }
  [[nodiscard]] decltype(auto) get_property(Tag tag) const {
    return state_->upstream.get_property(tag);
  }
  /// @brief The allocator's name in messages.
  static constexpr std::string_view name = "caching_pool";

  /// @brief A pool over a default-constructed upstream.
  caching_pool()
    requires std::default_initializable<Upstream>
      : caching_pool(Upstream{}) {}
  /// @brief A pool over `upstream`.
  explicit caching_pool(Upstream upstream, caching_pool_options options = {})
      : state_(std::make_shared<detail::caching_pool_state<Upstream>>(std::move(upstream),
                                                                       options)) {
    LRIS_EXPECTS(detail::is_power_of_two(options.min_block_bytes),
                 "caching_pool: min_block_bytes {} is not a power of two",
                 options.min_block_bytes);
  }

  /// @brief A cached block of the right class and alignment, else one from upstream.
  /// @throws lris::invalid_argument when `alignment` is not a power of two.
  /// @throws lris::out_of_memory when the upstream fails even after the cache was released.
  [[nodiscard]] void* allocate(std::size_t bytes, std::size_t alignment = default_alignment) {
    detail::check_alignment(label(), alignment);
    auto& s = *state_;
    const std::size_t block = block_size(bytes);
    {
      std::lock_guard lock(s.mutex);
      const auto it = s.free_lists.find({block, alignment});
      if (it != s.free_lists.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        ++s.stats.hits;
        s.stats.bytes_cached -= block;
        --s.stats.blocks_cached;
        note_in_use(block);
        return p;
      }
      ++s.stats.misses;
    }
    void* p = nullptr;
    try {
      p = s.upstream.allocate(block, alignment);
    } catch (const out_of_memory&) {
      // Cached blocks of other sizes may be exactly what the upstream is missing.
      const std::size_t released = s.release();
      {
        std::lock_guard lock(s.mutex);
        ++s.stats.oom_releases;
      }
      try {
        p = s.upstream.allocate(block, alignment);
      } catch (const out_of_memory& again) {
        detail::throw_out_of_memory(
            label(), bytes, alignment,
            fmt::format("upstream failed for a {}-byte block even after the pool released {} "
                        "cached bytes: {}",
                        block, released, again.what()));
      }
    }
    std::lock_guard lock(s.mutex);
    note_in_use(block);
    return p;
  }

  /// @brief Keeps the block for reuse, or frees it upstream when the cache is full.
  void deallocate(void* p, std::size_t bytes, std::size_t alignment = default_alignment) noexcept {
    if (p == nullptr) return;
    auto& s = *state_;
    const std::size_t block = block_size(bytes);
    bool cached = false;
    {
      std::lock_guard lock(s.mutex);
      s.stats.bytes_in_use -= block;
      --s.stats.blocks_in_use;
      if (s.stats.bytes_cached + block <= s.options.max_cached_bytes) {
        try {
          s.free_lists[{block, alignment}].push_back(p);
          s.stats.bytes_cached += block;
          ++s.stats.blocks_cached;
          cached = true;
        } catch (...) {
          // No memory for the list entry: free the block instead of losing it.
        }
      }
    }
    if (!cached) s.upstream.deallocate(p, block, alignment);
  }

  /// @brief Frees every cached block upstream; returns the bytes freed.
  std::size_t release() noexcept { return state_->release(); }

  /// @brief A snapshot of the pool's counters.
  [[nodiscard]] caching_pool_stats stats() const {
    std::lock_guard lock(state_->mutex);
    return state_->stats;
  }
  /// @brief The pool's options.
  [[nodiscard]] const caching_pool_options& options() const noexcept { return state_->options; }
  /// @brief The allocator behind the pool.
  [[nodiscard]] const Upstream& upstream() const noexcept { return state_->upstream; }

  /// @brief The block size a request of `bytes` bytes uses.
  [[nodiscard]] std::size_t block_size(std::size_t bytes) const noexcept {
    const auto& o = state_->options;
    // Beyond 2^63 there is no power of two to round to; such sizes fail upstream anyway.
    constexpr std::size_t largest_bin = (std::numeric_limits<std::size_t>::max() >> 1) + 1;
    if (bytes > o.max_binned_bytes || bytes > largest_bin) return bytes;
    return std::max(o.min_block_bytes, std::bit_ceil(std::max<std::size_t>(bytes, 1)));
  }

  /// @brief Copies of one pool are equal (either frees the other's blocks); separate pools
  /// are not.
  friend bool operator==(const caching_pool& a, const caching_pool& b) noexcept {
    return a.state_ == b.state_;
  }

 private:
  static const std::string& label() {
    static const std::string s =
        fmt::format("caching_pool<{}>", detail::allocator_name<Upstream>());
    return s;
  }
  // Caller holds the mutex.
  void note_in_use(std::size_t block) noexcept {
    auto& st = state_->stats;
    st.bytes_in_use += block;
    ++st.blocks_in_use;
    st.peak_bytes_in_use = std::max(st.peak_bytes_in_use, st.bytes_in_use);
  }

  std::shared_ptr<detail::caching_pool_state<Upstream>> state_;
};

static_assert(allocator_policy<caching_pool<pageable_allocator>>);
static_assert(host_allocator<caching_pool<pageable_allocator>>);

}  // namespace lris
