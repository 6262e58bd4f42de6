#pragma once
// The GIL let go around work that takes no Python and taken back after it, made safe for the
// interpreter's end: CPython 3.12 and 3.13 end a thread that takes the GIL back while the
// interpreter finalizes (a daemon thread waiting for a load at exit) with pthread_exit, whose
// unwinding through C++ frames that may not throw ends the whole process (std::terminate).
// Such a thread waits forever instead, as CPython 3.14 makes its own threads do: the process
// is ending, and the thread would never run again. LRIS's own threads never take the GIL.

#include <nanobind/nanobind.h>

#include <cxxabi.h>
#include <unistd.h>

namespace lris::python {

/// @brief Whether the interpreter is finalizing and this thread is not the one doing it (the
/// process's first thread, whose id is the process's): taking the GIL now would end it with
/// pthread_exit. Needs no GIL.
[[nodiscard]] inline bool must_not_take_gil() noexcept {
#if PY_VERSION_HEX >= 0x030D0000
  const bool finalizing = Py_IsFinalizing() != 0;
#else
  const bool finalizing = _Py_IsFinalizing() != 0;
#endif
  return finalizing && ::gettid() != ::getpid();
}

/// @brief Never returns: what a thread does instead of taking the GIL as the process ends.
[[noreturn]] inline void wait_for_the_end() noexcept {
  for (;;) ::pause();
}

/// @brief The GIL let go for the scope (nanobind::gil_scoped_release), and taken back at its
/// end, unless the interpreter is ending by then, or begins to while this thread waits for the
/// GIL: then wait_for_the_end().
class gil_released {
 public:
  gil_released() noexcept : state_(PyEval_SaveThread()) {}
  ~gil_released() {
    if (must_not_take_gil()) wait_for_the_end();
    try {
      PyEval_RestoreThread(state_);
    } catch (const abi::__forced_unwind&) {  // the interpreter began to end while it waited
      wait_for_the_end();
    }
  }
  gil_released(const gil_released&) = delete;
  gil_released& operator=(const gil_released&) = delete;

 private:
  PyThreadState* state_;
};

}  // namespace lris::python
