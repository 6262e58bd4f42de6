#pragma once
// A load's progress reported to a Python callable(bytes_done, bytes_total) -> bool.

#include <nanobind/nanobind.h>

#include <cxxabi.h>

#include <cstdint>
#include <exception>
#include <utility>

#include <lris/formats/load_options.hpp>

#include "gil.hpp"

namespace lris::python {

/// @brief Calls `fn` from the load's threads one at a time (under the GIL) and only with a
/// count above the last, so that the callback sees the bytes done grow. A false value (None
/// goes on) or an exception from `fn` cancels the load; rethrow() then raises that exception in
/// place of lris.Cancelled.
class progress_bridge {
 public:
  explicit progress_bridge(nanobind::object fn) : fn_(std::move(fn)) {}
  progress_bridge(const progress_bridge&) = delete;
  progress_bridge& operator=(const progress_bridge&) = delete;

  /// @brief The load's callback (empty for None); refers to this bridge.
  [[nodiscard]] progress_fn callback() {
    if (fn_.is_none()) return {};
    return [this](std::uint64_t done, std::uint64_t total) {
      if (must_not_take_gil()) return false;  // the interpreter is ending: so does the load
      return with_gil([&] {
        if (error_ || fn_.is_none()) return false;  // let go (forget()): nobody awaits the load
        if (done <= reported_ && !(done == 0 && reported_ == 0)) return true;
        reported_ = done;
        try {
          nanobind::object r = fn_(done, total);
          if (r.is_none()) return true;
          const int go_on = PyObject_IsTrue(r.ptr());  // any object's truth, as `if r:` takes it
          if (go_on < 0) throw nanobind::python_error();
          return go_on != 0;
        } catch (const abi::__forced_unwind&) {
          throw;  // the interpreter ends this thread: with_gil waits for the end
        } catch (...) {
          error_ = std::current_exception();
          return false;
        }
      });
    };
  }
  /// @brief The callable, for the garbage collector's traversal (under the GIL); null when
  /// there is none.
  [[nodiscard]] PyObject* callable() const noexcept { return fn_.is_none() ? nullptr : fn_.ptr(); }
  /// @brief Lets go of the callable (the collector's clear, under the GIL): later progress
  /// cancels the load.
  void forget() { fn_ = nanobind::none(); }
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
