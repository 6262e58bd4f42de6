#pragma once
/// @file
/// @brief LRIS_CUDA_TRY: check a CUDA runtime call. Everything throws, naming the call, the
/// error and the device: lris::device_lost for sticky errors (the context is lost and every
/// later call on the device fails; the device is marked lost for the rest of the process) and
/// for any error of a device already lost, lris::out_of_memory, else lris::cuda_error.
/// Includes the CUDA runtime header: for lris::cuda only.

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

/// @brief Throws for a failed call (see lris::detail::fail_runtime_call). `device` is the
/// device the call was for, or -1 for the calling thread's current device.
[[noreturn]] inline void fail(cudaError_t e, int device, const char* call, const char* file,
                              int line) {
  if (device < 0 && cudaGetDevice(&device) != cudaSuccess) device = -1;
  lris::detail::fail_runtime_call<cuda_error>(
      {"CUDA", static_cast<int>(e), cudaGetErrorName(e), cudaGetErrorString(e), device,
       is_sticky(e), e == cudaErrorMemoryAllocation, call, file, line});
}

}  // namespace lris::cuda::detail

/// @brief Evaluates a cudaError_t expression and throws when it is not cudaSuccess; an error
/// is reported for the calling thread's current device.
#define LRIS_CUDA_TRY(call) LRIS_CUDA_TRY_IMPL_(-1, call, #call)

/// @brief LRIS_CUDA_TRY for a call on `device`, which the error then names (the thread's
/// current device may be another, e.g. for a stream's synchronization).
#define LRIS_CUDA_TRY_ON(device, call) LRIS_CUDA_TRY_IMPL_(device, call, #call)

// Both of the above; `text` is the call as written, before its macros expand.
#define LRIS_CUDA_TRY_IMPL_(device, call, text)                                          \
  do {                                                                                   \
    const cudaError_t lris_cuda_status_ = (call);                                        \
    if (lris_cuda_status_ != cudaSuccess) {                                              \
      (void)cudaGetLastError(); /* clear a non-sticky error so later calls work */       \
      ::lris::cuda::detail::fail(lris_cuda_status_, (device), text, __FILE__, __LINE__); \
    }                                                                                    \
  } while (false)
