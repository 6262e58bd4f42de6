#pragma once
/// @file
/// @brief pool_registration: a host pool's data registered with a GPU runtime in this process
/// (pinned, so that copies from it to the device are DMA), in bounded segments and one process
/// at a time.
///
/// Registration of shared memory has known failure modes: concurrent registrations of the same
/// memory by several processes fail (they take turns here, through the pool's registration
/// lock), and one registration of 512 GiB or more fails on recent drivers (the data is
/// registered in segments of at most `segment_bytes`, 64 GiB by default). Where the runtime
/// refuses (the locked-memory limit, a container), nothing stays registered and the report
/// says why: the pool still works, its copies to a device then go through the pipeline's
/// pinned staging ring.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <lris/pool/host_pool.hpp>

namespace lris::pool {

/// @brief What registering a pool's data did.
struct pin_report {
  bool pinned = false;
  std::uint64_t bytes = 0;    ///< registered
  std::size_t segments = 0;   ///< registrations made
  double seconds = 0;         ///< the registrations took (the lock's wait not counted)
  std::string why;            ///< why not pinned, naming the segment at fault
};

/// @brief Registers (and when destroyed unregisters) the data of `pool` with `Backend`'s
/// runtime: `register_host(p, n)` / `unregister_host(p)` (lris::cuda_backend, hip_backend,
/// host_backend). The pool must outlive it.
template <class Backend>
  requires requires(Backend b, void* p, std::size_t n) {
    b.register_host(p, n);
    b.unregister_host(p);
  }
class pool_registration {
 public:
  static constexpr std::uint64_t default_segment_bytes = std::uint64_t{64} << 30;

  /// @brief Registers the pool's data in segments of at most `segment_bytes` (rounded down to
  /// whole 4 KiB pages, at least one page). With `pinnable` (what the process may still pin:
  /// host_info's memlock.pinnable_bytes), a pool larger than it is not tried. A failure leaves
  /// nothing registered and is in report().why; it is not thrown.
  pool_registration(host_pool& pool, Backend be, std::uint64_t segment_bytes = default_segment_bytes,
                    std::optional<std::uint64_t> pinnable = std::nullopt)
      : be_(std::move(be)), pool_(&pool) {
    const std::uint64_t step = std::max<std::uint64_t>(4096, segment_bytes / 4096 * 4096);
    std::byte* base = pool.data();
    const std::uint64_t total = (pool.data_bytes() + 4095) / 4096 * 4096;
    if (pinnable && *pinnable < total) {
      r_.why = fmt::format("pool \"{}\": its {} bytes are more than this process may pin ({} "
                           "bytes left under RLIMIT_MEMLOCK and the memory cgroup's limit)",
                           pool.name(), total, *pinnable);
      return;
    }
    const auto lock = pool.lock_registration();
    const auto start = std::chrono::steady_clock::now();
    for (std::uint64_t at = 0; at < total; at += step) {
      const std::uint64_t n = std::min(step, total - at);
      try {
        be_.register_host(base + at, static_cast<std::size_t>(n));
      } catch (const std::exception& e) {
        r_.why = fmt::format("pool \"{}\": registering bytes [{}, {}) of {} failed after {} "
                             "segment{}: {}", pool.name(), at, at + n, total, segments_.size(),
                             segments_.size() == 1 ? "" : "s", e.what());
        unregister_all();  // under the lock this call holds
        r_.bytes = 0;
        r_.segments = 0;
        return;
      }
      segments_.push_back(base + at);
      r_.bytes += n;
    }
    r_.segments = segments_.size();
    r_.pinned = true;
    r_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  pool_registration(pool_registration&& o) noexcept
      : be_(o.be_), pool_(o.pool_), segments_(std::move(o.segments_)), r_(std::move(o.r_)) {
    o.segments_.clear();
  }
  pool_registration& operator=(pool_registration&&) = delete;
  pool_registration(const pool_registration&) = delete;
  pool_registration& operator=(const pool_registration&) = delete;
  ~pool_registration() { release(); }

  [[nodiscard]] const pin_report& report() const noexcept { return r_; }

 private:
  void release() noexcept {
    if (segments_.empty()) return;
    try {
      const auto lock = pool_->lock_registration();  // unregistrations take turns too
      unregister_all();
    } catch (...) {
      unregister_all();
    }
  }
  void unregister_all() noexcept {
    for (std::byte* p : segments_) {
      try {
        be_.unregister_host(p);
      } catch (...) {  // the runtime is gone (a lost device): nothing left to undo
      }
    }
    segments_.clear();
  }
  Backend be_;
  host_pool* pool_;
  std::vector<std::byte*> segments_;
  pin_report r_;
};

}  // namespace lris::pool
