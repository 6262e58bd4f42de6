#pragma once
/// @file
/// @brief captured_pass: a pass through a residency manager's units captured as one graph
/// (residency_manager::capture), launched again with residency_manager::replay.

#include <cstddef>
#include <cstdint>
#include <vector>

#include <lris/cache/eviction_policy.hpp>
#include <lris/concepts/graph_backend.hpp>

namespace lris::cache {

template <backend_policy Backend, eviction_policy Policy>
class residency_manager;

/// @brief The work of one pass (the caller's kernels and the copies that bring its units in),
/// captured once for each placement of the units the declared cycle goes through (a cycle
/// that streams units through a few places may need two passes, or more, to come back to the
/// same places); move-only. Only the manager that captured it launches it.
template <graph_backend Backend>
class captured_pass {
 public:
  captured_pass(captured_pass&&) noexcept = default;
  captured_pass& operator=(captured_pass&&) noexcept = default;
  captured_pass(const captured_pass&) = delete;
  captured_pass& operator=(const captured_pass&) = delete;

  /// @brief Graphs captured: one per placement the cycle goes through.
  [[nodiscard]] std::size_t graphs() const noexcept { return stages_.size(); }
  /// @brief Bytes that graph `i` copies to the device when launched (the units it streams).
  [[nodiscard]] std::uint64_t copy_bytes(std::size_t i) const { return stages_.at(i).copy_bytes; }
  /// @brief Acquires in the pass.
  [[nodiscard]] std::uint64_t acquires() const noexcept {
    return stages_.empty() ? 0 : stages_.front().acquires;
  }

 private:
  template <backend_policy, eviction_policy>
  friend class residency_manager;
  struct placement {
    bool resident = false;
    bool prefetched = false;
    std::uint64_t offset = 0;
    friend bool operator==(const placement& a, const placement& b) {
      return a.resident == b.resident && (!a.resident || a.offset == b.offset);
    }
  };
  // One graph: the pass from the units' placement `start` to `end`.
  struct stage {
    typename Backend::graph graph;
    std::vector<placement> start, end;
    std::uint64_t copy_bytes = 0;
    std::uint64_t acquires = 0;
  };
  captured_pass() = default;
  const void* owner_ = nullptr;
  const void* arena_ = nullptr;  // the device memory its graphs' addresses are in
  std::vector<stage> stages_;
};

}  // namespace lris::cache
