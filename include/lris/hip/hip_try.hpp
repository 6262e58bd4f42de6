#pragma once
/// @file
/// @brief LRIS_HIP_TRY: check a HIP runtime call. Everything throws, naming the call, the
/// error and the device: lris::device_lost for sticky errors (the context is lost and every
/// later call on the device fails; the device is marked lost for the rest of the process) and
/// for any error of a device already lost, lris::out_of_memory, else lris::hip_error.
/// Includes the HIP runtime header: for lris::hip only.

#ifndef __HIP_PLATFORM_AMD__
#define __HIP_PLATFORM_AMD__ 1
#endif
#include <hip/hip_runtime_api.h>

#include <lris/gpu/detail/runtime_failure.hpp>

namespace lris::hip::detail {

/// @brief True for errors after which the HIP context is unusable.
[[nodiscard]] inline bool is_sticky(hipError_t e) noexcept {
  switch (e) {
    case hipErrorIllegalAddress:
    case hipErrorLaunchFailure:
    case hipErrorAssert:
    case hipErrorECCNotCorrectable:
      return true;
    default:
      return false;
  }
}

/// @brief Throws for a failed call (see lris::detail::fail_runtime_call). `device` is the
/// device the call was for, or -1 for the calling thread's current device.
[[noreturn]] inline void fail(hipError_t e, int device, const char* call, const char* file,
                              int line) {
  if (device < 0 && hipGetDevice(&device) != hipSuccess) device = -1;
  lris::detail::fail_runtime_call<hip_error>(
      {"HIP", static_cast<int>(e), hipGetErrorName(e), hipGetErrorString(e), device,
       is_sticky(e), e == hipErrorOutOfMemory, call, file, line});
}

}  // namespace lris::hip::detail

/// @brief Evaluates a hipError_t expression and throws when it is not hipSuccess; an error
/// is reported for the calling thread's current device.
#define LRIS_HIP_TRY(call) LRIS_HIP_TRY_IMPL_(-1, call, #call)

/// @brief LRIS_HIP_TRY for a call on `device`, which the error then names (the thread's
/// current device may be another, e.g. for a stream's synchronization).
#define LRIS_HIP_TRY_ON(device, call) LRIS_HIP_TRY_IMPL_(device, call, #call)

// Both of the above; `text` is the call as written, before its macros expand.
#define LRIS_HIP_TRY_IMPL_(device, call, text)                                         \
  do {                                                                                 \
    const hipError_t lris_hip_status_ = (call);                                        \
    if (lris_hip_status_ != hipSuccess) {                                              \
      (void)hipGetLastError(); /* clear a non-sticky error so later calls work */      \
      ::lris::hip::detail::fail(lris_hip_status_, (device), text, __FILE__, __LINE__); \
    }                                                                                  \
  } while (false)
