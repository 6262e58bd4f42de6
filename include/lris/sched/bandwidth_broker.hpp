#pragma once
/// @file
/// @brief bandwidth_broker: the registry of resources that transfers share (host DRAM, each
/// direction of each GPU's link, each storage device), each with a bandwidth-token semaphore, a
/// monitor of the bandwidth achieved on it and a throttle.
///
/// Pipelines acquire tokens from their broker around every chunk: for the CPU copies of a
/// chunk on "host", for its DMA on "<backend>:<device> h2d" or "... d2h", for its file io on
/// "disk <major>:<minor>". Tokens of device work are given back when the work has completed,
/// by the broker's own thread, which polls the work's events; completed bytes feed the
/// monitor. A resource's capacity (bytes in flight) is its ceiling times `in_flight`: enough to
/// keep it busy, little enough that critical work never waits long behind bulk work.
///
/// Every pipeline uses its context's (lris::context::broker()) unless its config names another
/// (or none).
/// With `shared_name` set, the semaphores live in shared memory, one budget for every process
/// that uses the same name.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <variant>
#include <vector>

#include <lris/sched/bandwidth_monitor.hpp>
#include <lris/sched/bandwidth_semaphore.hpp>
#include <lris/sched/shared_semaphore.hpp>
#include <lris/sched/throttle.hpp>

namespace lris::sched {

/// @brief Tokens of one resource, from an in-process or a shared semaphore, plus those of a
/// transfer's own budget. Move-only; released when destroyed.
class resource_tokens {
 public:
  resource_tokens() = default;
  resource_tokens(resource_tokens&& o) noexcept
      : held_(std::move(o.held_)), budget_(std::move(o.budget_)),
        budget_owner_(std::move(o.budget_owner_)), bytes_(std::exchange(o.bytes_, 0)) {
    o.held_ = std::monostate{};
  }
  resource_tokens& operator=(resource_tokens&& o) noexcept {
    if (this != &o) {
      release();
      held_ = std::move(o.held_);
      budget_ = std::move(o.budget_);
      budget_owner_ = std::move(o.budget_owner_);
      bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
  }
  ~resource_tokens() { release(); }

  /// @brief The bytes asked for (a grant may be clamped to a capacity).
  [[nodiscard]] std::uint64_t bytes() const noexcept { return bytes_; }
  void release() noexcept {
    held_ = std::monostate{};  // the resource first: the budget is the narrower wait
    budget_.release();
    budget_owner_.reset();
    bytes_ = 0;
  }

 private:
  friend class bandwidth_broker;
  std::variant<std::monostate, token_guard, shared_token> held_;
  token_guard budget_;
  std::shared_ptr<bandwidth_semaphore> budget_owner_;  // outlives budget_'s release
  std::uint64_t bytes_ = 0;
};

struct broker_options {
  /// Work each resource keeps in flight: capacity = ceiling x this, where the ceiling is known.
  std::chrono::microseconds in_flight{250};
  /// No capacity below this (a few chunks must fit).
  std::uint64_t min_capacity = std::uint64_t{8} << 20;
  /// The capacity of a resource whose ceiling is not known: large, so that it orders waiters
  /// without slowing anyone.
  std::uint64_t unknown_capacity = std::uint64_t{1} << 30;
  /// Ceilings in GB/s by resource name ("host", "cuda:0 h2d"), over those of `ceiling_of`.
  std::map<std::string, double, std::less<>> ceilings;
  /// The ceiling in GB/s of a resource `ceilings` does not name, or 0 (unknown); lris::context
  /// reads it from the calibrated profile. Called when the resource is registered; a call that
  /// throws counts as unknown.
  std::function<double(std::string_view resource)> ceiling_of;
  /// Non-empty: each resource's semaphore is the shared_semaphore "<shared_name>-<resource>"
  /// (characters other than letters and digits made '-'), shared with every process using it.
  std::string shared_name;
  /// How long an acquire that asks to spin (a critical or normal transfer waiting for link
  /// tokens) spins before it sleeps, and how long the broker's thread polls device work
  /// without pause after the last completion: tokens of device work come back when that thread
  /// sees it done, and a sleeping thread takes tens of microseconds, at times hundreds, to wake.
  std::chrono::microseconds spin{1000};
  semaphore_options semaphore;
  throttle_options throttle;
  monitor_options monitor;
};

/// @brief One resource now.
struct resource_status {
  std::string name;
  double gbps = 0;          ///< achieved, moving average
  double ceiling_gbps = 0;  ///< 0: unknown
  double utilization = 0;   ///< of the busier of gbps and external_gbps
  bool external = false;     ///< external_gbps is known
  double external_gbps = 0;  ///< measured outside the library (the driver's PCIe counters)
  std::uint64_t bytes = 0;  ///< moved since registered
  std::uint64_t capacity = 0;
  std::uint64_t in_flight = 0;  ///< bytes held now (every process, for shared semaphores)
  bool shared = false;
  bool congested = false;
  std::uint64_t granted_bytes[priority_count] = {};  ///< this process's grants, by priority
  std::uint64_t grants[priority_count] = {};
  std::uint64_t waits[priority_count] = {};          ///< grants that had to wait
  throttle_counts throttle;
};

class bandwidth_broker {
 public:
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);

  /// @throws lris::invalid_argument for bad options (a capacity of 0, bad thresholds).
  explicit bandwidth_broker(broker_options options = {});
  /// @brief Waits for the device work whose tokens are still held, then stops its thread.
  ~bandwidth_broker();
  bandwidth_broker(const bandwidth_broker&) = delete;
  bandwidth_broker& operator=(const bandwidth_broker&) = delete;

  /// @brief Removes the name of the segment that brokers with `shared_name` keep
  /// `resource`'s budget in (processes that have it open keep using it).
  static void remove_shared(std::string_view shared_name, std::string_view resource) noexcept;

  /// @brief The resource called `name`, registered on first use with the ceiling from the
  /// options, else `ceiling_gbps` (0: unknown), and with `external` (see bandwidth_monitor:
  /// the driver's measure of the link) for the monitor. Returns its index.
  std::size_t resource(std::string_view name, double ceiling_gbps = 0,
                       bandwidth_monitor::external_source external = {});
  [[nodiscard]] std::size_t resource_count() const;
  [[nodiscard]] std::uint64_t capacity(std::size_t r) const;
  [[nodiscard]] std::string name(std::size_t r) const;

  /// @brief Blocks until `bytes` tokens of resource `r` are granted at priority `p` (first
  /// those of `budget`, when given). `waited` (optional) is set when it had to wait. With
  /// `spin`, a wait for `r` spins for up to options().spin before it sleeps.
  resource_tokens acquire(std::size_t r, std::uint64_t bytes, priority p,
                          const std::shared_ptr<bandwidth_semaphore>& budget = nullptr,
                          bool* waited = nullptr, bool spin = false);
  /// @brief The tokens if they (and those of `budget`) are free now and nobody waits ahead;
  /// else none (bytes() == 0).
  resource_tokens try_acquire(std::size_t r, std::uint64_t bytes, priority p,
                              const std::shared_ptr<bandwidth_semaphore>& budget = nullptr);
  /// @brief The throttle's decision for the next chunk of work at `p` on `r`. A background
  /// chunk told to wait sleeps here, while the decision stands, for at most `max_delay`, then
  /// goes in smaller chunks (`smaller_chunks` is returned and `*delayed` set). Counted.
  throttle_action admit(std::size_t r, priority p, bool fallback_possible = false,
                        bool* delayed = nullptr);
  /// @brief Gives `tokens` back once `ready()` is true (polled by the broker's thread; a
  /// `ready` that throws counts as done), and records their bytes as moved on `r`. Work with
  /// the same non-null `order` (a stream) completes in the order it was given here: while one
  /// is not ready, the later ones are not asked.
  void release_when(std::function<bool()> ready, resource_tokens tokens, std::size_t r,
                    const void* order = nullptr);
  /// @brief `bytes` moved on `r` just now (for the monitor).
  void record(std::size_t r, std::uint64_t bytes);

  [[nodiscard]] resource_status status(std::size_t r);
  [[nodiscard]] std::vector<resource_status> status();
  [[nodiscard]] const broker_options& options() const noexcept { return options_; }
  /// @brief Device work whose tokens are still held.
  [[nodiscard]] std::size_t pending() const;

 private:
  struct entry;
  struct pending_release {
    std::function<bool()> ready;
    resource_tokens tokens;
    std::size_t r;
    const void* order;
  };
  entry& at(std::size_t r) const;
  void granted(entry& e, priority p, std::uint64_t bytes, bool waited);
  std::chrono::nanoseconds now() const;
  void reap();

  broker_options options_;
  bandwidth_monitor monitor_;
  mutable std::mutex mutex_;  // the registry
  std::deque<std::unique_ptr<entry>> entries_;
  std::map<std::string, std::size_t, std::less<>> by_name_;

  mutable std::mutex pending_mutex_;
  std::condition_variable pending_cv_;
  std::vector<pending_release> pending_;
  std::size_t reaping_ = 0;  // entries the thread has taken out of pending_
  bool stop_ = false;
  std::thread reaper_;
};

/// @brief Resource names: "host", "<backend key> h2d" / "... d2h" ("cuda:0 h2d"), and
/// "disk <major>:<minor>" for the device holding a file descriptor's file.
[[nodiscard]] std::string host_resource();
[[nodiscard]] std::string link_resource(std::string_view backend_key, bool to_device);
/// @throws lris::io_error when fstat fails.
[[nodiscard]] std::string storage_resource(int fd);

}  // namespace lris::sched
