#pragma once
// lris bench --contention: a critical 64 MiB host -> device (or device -> host) transfer's
// latency while bulk background transfers saturate the same link direction, with and without
// the broker's tokens, in one process and across two.

#include <chrono>
#include <cstddef>
#include <string>

#include <nlohmann/json.hpp>

#include <lris/sched/bandwidth_broker.hpp>

namespace lris::tool {

struct contention_options {
  std::size_t critical_bytes = std::size_t{64} << 20;
  std::size_t background_bytes = std::size_t{64} << 20;  // each background copy
  unsigned background = 4;                               // background threads
  unsigned samples = 200;                                // critical transfers per mode
  std::chrono::microseconds in_flight{0};  // the broker's in_flight; 0: its default
  std::chrono::microseconds spin{-1};      // the broker's spin; negative: its default
  bool to_device = true;                    // false: device -> pinned
  bool two_process = true;
  bool tty = false;
};

/// Each of a broker's resources: capacity, ceiling, bytes moved, grants and waits by
/// priority, and the throttle's decisions.
nlohmann::json status_json(sched::bandwidth_broker& s);

/// Runs every mode on CUDA device 0 when there is one, else on the host backend (whose
/// "device" memory is host memory: the same code, a demonstration rather than a measurement
/// of a link). Returns the results as JSON.
nlohmann::json contention_bench(const contention_options& o);

/// The second process of the two-process modes: `o.background` bulk transfers at background
/// priority from `start_ns` (steady clock) for `seconds`; prints the completion times of the
/// copies inside the window. `shared` is the broker's shared name, empty for none.
int contention_child(const contention_options& o, const std::string& backend,
                     const std::string& shared, double ceiling_gbps, long long start_ns,
                     double seconds);

}  // namespace lris::tool
