#pragma once
/// @file
/// @brief LRIS_CUDA_TRY: check a CUDA runtime call. Sticky errors (the context is lost and every
/// later call would fail) abort with a message; everything else throws lris::cuda_error naming
/// the call, the error and the device. Includes the CUDA runtime header: for lris::cuda only.

#include <cuda_runtime_api.h>

#include <lris/gpu/detail/runtime_failure.hpp>

namespace lris::cuda::detail {

/// @brief True for errors after which the CUDA context is unusable.
[[nodiscard]] inline bool is_sticky(cudaError_t e) noexcept {
  switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorMisalignedAddress:
    case cudaErrorIllegalInstruction:
    case cudaErrorInvalidPc:
    case cudaErrorHardwareStackError:
    case cudaErrorAssert:
    case cudaErrorECCUncorrectable:
      return true;
    default:
      return false;
  }
}

[[noreturn]] inline void fail(cudaError_t e, const char* call, const char* file, int line) {
  int device = -1;
  (void)cudaGetDevice(&device);
  lris::detail::fail_runtime_call<cuda_error>(
      {"CUDA", static_cast<int>(e), cudaGetErrorName(e), cudaGetErrorString(e), device,
       is_sticky(e), e == cudaErrorMemoryAllocation, call, file, line});
}

}  // namespace lris::cuda::detail

/// @brief Evaluates a cudaError_t expression and throws (or aborts) when it is not cudaSuccess.
#define LRIS_CUDA_TRY(call)                                                      \
  do {                                                                           \
    const cudaError_t lris_cuda_status_ = (call);                                \
    if (lris_cuda_status_ != cudaSuccess) {                                      \
      (void)cudaGetLastError(); /* clear a non-sticky error so later calls work */ \
      ::lris::cuda::detail::fail(lris_cuda_status_, #call, __FILE__, __LINE__);  \
    }                                                                            \
  } while (false)
