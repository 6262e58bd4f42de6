#pragma once
/// @file
/// @brief LRIS_HIP_TRY: check a HIP runtime call. Sticky errors (the context is lost and every
/// later call would fail) abort with a message; everything else throws lris::hip_error naming
/// the call, the error and the device. Includes the HIP runtime header: for lris::hip only.

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

[[noreturn]] inline void fail(hipError_t e, const char* call, const char* file, int line) {
  int device = -1;
  (void)hipGetDevice(&device);
  lris::detail::fail_runtime_call<hip_error>(
      {"HIP", static_cast<int>(e), hipGetErrorName(e), hipGetErrorString(e), device,
       is_sticky(e), e == hipErrorOutOfMemory, call, file, line});
}

}  // namespace lris::hip::detail

/// @brief Evaluates a hipError_t expression and throws (or aborts) when it is not hipSuccess.
#define LRIS_HIP_TRY(call)                                                     \
  do {                                                                         \
    const hipError_t lris_hip_status_ = (call);                                \
    if (lris_hip_status_ != hipSuccess) {                                      \
      (void)hipGetLastError(); /* clear a non-sticky error so later calls work */ \
      ::lris::hip::detail::fail(lris_hip_status_, #call, __FILE__, __LINE__);  \
    }                                                                          \
  } while (false)
