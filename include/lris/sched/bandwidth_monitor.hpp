#pragma once
/// @file
/// @brief bandwidth_monitor: the bandwidth achieved on each resource, from the library's own
/// completion counters, as an exponentially weighted moving average over fixed windows (10 ms
/// by default), and its utilization against the resource's calibrated ceiling.
///
/// Transfers call record() as their chunks complete; readers (the throttle, `lris bench`)
/// call reading(). The clock is injectable, so that tests run on a fake one.
///
/// A resource may also have an external source: the bandwidth as measured outside the library
/// (the driver's PCIe counters, see nvml_pcie), which includes other programs' traffic. A
/// thread of the monitor, started by the first reading of such a resource, samples it every
/// `external_period`; utilization is then the larger of the two over the ceiling.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace lris::sched {

struct monitor_options {
  /// Length of one averaging window.
  std::chrono::nanoseconds window = std::chrono::milliseconds(10);
  /// Weight of the newest window in the average (0 < alpha <= 1).
  double alpha = 0.25;
  /// Time now; steady_clock when empty.
  std::function<std::chrono::nanoseconds()> clock;
  /// Pause between samples of the external sources (each sample may itself take a while:
  /// about 20 ms for the driver's PCIe counters).
  std::chrono::milliseconds external_period{50};
};

/// @brief One resource as the monitor sees it.
struct resource_reading {
  std::string name;
  double gbps = 0;         ///< the moving average, GB/s
  double ceiling_gbps = 0; ///< as registered (0: unknown)
  double utilization = 0;  ///< max(gbps, external_gbps) / ceiling_gbps (0: ceiling unknown)
  std::uint64_t bytes = 0; ///< recorded since the resource was added
  bool external = false;   ///< an external sample is known
  double external_gbps = 0;  ///< the latest external sample, GB/s
};

class bandwidth_monitor {
 public:
  /// GB/s measured outside the library, or std::nullopt when it cannot be had now.
  using external_source = std::function<std::optional<double>()>;

  explicit bandwidth_monitor(monitor_options options = {});
  /// @brief Stops the sampling thread, if it was started.
  ~bandwidth_monitor();
  bandwidth_monitor(const bandwidth_monitor&) = delete;
  bandwidth_monitor& operator=(const bandwidth_monitor&) = delete;

  /// @brief Adds a resource ("host", "cuda:0 h2d", "nvme0n1") with its ceiling in GB/s (0
  /// when unknown) and, optionally, an external source; returns its index for record() and
  /// reading().
  std::size_t add_resource(std::string name, double ceiling_gbps, external_source external = {});
  /// @brief `bytes` moved on resource `r` just now. Thread-safe.
  void record(std::size_t r, std::uint64_t bytes);
  /// @brief The resource now: windows that ended since the last look are folded in (empty
  /// windows count as idle).
  [[nodiscard]] resource_reading reading(std::size_t r);
  [[nodiscard]] std::vector<resource_reading> readings();
  [[nodiscard]] std::size_t size() const;

 private:
  struct resource {
    std::string name;
    double ceiling = 0;
    double average = 0;           // bytes per second
    std::int64_t window_start = 0;  // ns
    std::uint64_t in_window = 0;  // bytes of the open window
    std::uint64_t total = 0;
    external_source external;
    std::optional<double> external_gbps;
  };
  std::int64_t now() const;
  void roll(resource& r, std::int64_t t);
  void sample();  // the sampling thread

  monitor_options options_;
  mutable std::mutex mutex_;
  std::deque<resource> resources_;  // deque: indices stay valid as it grows
  std::condition_variable sampler_cv_;
  bool stop_ = false;
  std::thread sampler_;  // started by the first reading of a resource with an external source
};

}  // namespace lris::sched
