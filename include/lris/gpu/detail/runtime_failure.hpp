#pragma once
/// @file
/// @brief What LRIS_CUDA_TRY and LRIS_HIP_TRY do with a failed call: throw, naming the call,
/// the error and the device. A sticky error (the context cannot recover) also marks the
/// device lost for the rest of the process (lris/gpu/device_health.hpp) and throws
/// lris::device_lost; the library never ends the process, which may be an interpreter that
/// has more to do than use this device.

#include <string>

#include <fmt/format.h>

#include <lris/error.hpp>
#include <lris/gpu/device_health.hpp>

namespace lris::detail {

/// @brief A failed runtime call, as the try macros saw it.
struct runtime_failure {
  const char* runtime;       ///< "CUDA", "HIP"
  int code;                  ///< the runtime's error code
  const char* error_name;    ///< e.g. "cudaErrorInvalidValue"
  const char* error_string;  ///< the runtime's description
  int device;                ///< the device of the call, -1 when unknown
  bool sticky;               ///< the context is lost: every later call would fail
  bool out_of_memory;
  const char* call;
  const char* file;
  int line;
};

/// @brief Throws lris::device_lost for a sticky error (recording it as the device's loss when
/// it is the first) and for any error on a device already lost, naming the first failure;
/// else lris::out_of_memory, else `Error` (cuda_error, hip_error), naming the call, the error
/// and the device.
template <class Error>
[[noreturn]] void fail_runtime_call(const runtime_failure& f) {
  const std::string what = fmt::format("{} failed on device {}: {} ({}) at {}:{}", f.call,
                                       f.device, f.error_name, f.error_string, f.file, f.line);
  if (f.sticky) {
    const device_loss& first = record_device_loss(f.runtime, f.device, f.code, what);
    throw_device_lost(first, what);
  }
  // After a loss, other errors of the device are its consequences: the loss is the news.
  if (const device_loss* lost = find_device_loss(f.runtime, f.device)) {
    throw_device_lost(*lost, what);
  }
  if (f.out_of_memory) throw lris::out_of_memory(what, 0);
  throw Error(what, f.code);
}

}  // namespace lris::detail
