#pragma once
// A load's progress reported to a Python callable(bytes_done, bytes_total) -> bool.

#include <nanobind/nanobind.h>

#include <cstdint>
#include <exception>
#include <utility>

#include <lris/formats/load_options.hpp>

namespace lris::python {

/// @brief Calls `fn` from the load's threads one at a time (under the GIL) and only with a
/// count above the last, so that the callback sees the bytes done grow. False or an exception
/// from `fn` cancels the load; rethrow() then raises that exception in place of lris.Cancelled.
class progress_bridge {
 public:
  explicit progress_bridge(nanobind::object fn) : fn_(std::move(fn)) {}
  progress_bridge(const progress_bridge&) = delete;
  progress_bridge& operator=(const progress_bridge&) = delete;

  /// @brief The load's callback (empty for None); refers to this bridge.
  [[nodiscard]] progress_fn callback() {
    if (fn_.is_none()) return {};
    return [this](std::uint64_t done, std::uint64_t total) {
      nanobind::gil_scoped_acquire gil;
      if (error_) return false;
      if (done <= reported_ && !(done == 0 && reported_ == 0)) return true;
      reported_ = done;
      try {
        nanobind::object r = fn_(done, total);
        return r.is_none() || nanobind::cast<bool>(r);
      } catch (...) {
        error_ = std::current_exception();
        return false;
      }
    };
  }
  /// @brief Raises what the callback raised, if it did.
  void rethrow() const {
    if (error_) std::rethrow_exception(error_);
  }
  /// @brief Once the load is over (under the GIL): lets go of the callable and hands over what
  /// it raised, if anything, leaving nothing here. Kept, a raised exception would hold the
  /// frames it went through, and through them whatever holds this bridge: a cycle the
  /// collector cannot see into.
  [[nodiscard]] std::exception_ptr end() {
    fn_ = nanobind::none();
    return std::exchange(error_, nullptr);
  }

 private:
  nanobind::object fn_;
  std::exception_ptr error_;
  std::uint64_t reported_ = 0;
};

}  // namespace lris::python
