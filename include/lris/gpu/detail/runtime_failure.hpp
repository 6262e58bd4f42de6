#pragma once
/// @file
/// @brief What LRIS_CUDA_TRY and LRIS_HIP_TRY do with a failed call: one message, then abort
/// (sticky errors: the context cannot recover) or throw.

#include <cstdio>
#include <cstdlib>
#include <string>

#include <fmt/format.h>

#include <lris/error.hpp>

namespace lris::detail {

/// @brief A failed runtime call, as the try macros saw it.
struct runtime_failure {
  const char* runtime;       ///< "CUDA", "HIP"
  int code;                  ///< the runtime's error code
  const char* error_name;    ///< e.g. "cudaErrorInvalidValue"
  const char* error_string;  ///< the runtime's description
  int device;                ///< the current device, -1 when unknown
  bool sticky;               ///< the context is lost: every later call would fail
  bool out_of_memory;
  const char* call;
  const char* file;
  int line;
};

/// @brief Aborts for sticky errors; throws lris::out_of_memory, else `Error` (cuda_error,
/// hip_error), naming the call, the error and the device.
template <class Error>
[[noreturn]] void fail_runtime_call(const runtime_failure& f) {
  const std::string what = fmt::format("{} failed on device {}: {} ({}) at {}:{}", f.call,
                                       f.device, f.error_name, f.error_string, f.file, f.line);
  if (f.sticky) {
    std::fprintf(stderr, "lris: fatal %s error, the context cannot recover: %s\n", f.runtime,
                 what.c_str());
    std::abort();
  }
  if (f.out_of_memory) throw lris::out_of_memory(what, 0);
  throw Error(what, f.code);
}

}  // namespace lris::detail
