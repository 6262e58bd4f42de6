#pragma once
// The GPU runtime a translation unit is compiled for, under one set of names (C++17, so that
// kernels compiled by nvcc and hipcc in that mode can include it): the code shared
// by the CUDA and HIP backends (src/gpu/*.inl, kernels/common/*.cuh) is written against these.
// The build defines LRIS_GPU_CUDA or LRIS_GPU_HIP for the file. Where CUDA and HIP spell a
// call, type or constant the same way after the prefix, LRIS_GPU(Name) gives it (cudaName or
// hipName); the few that differ are named in lris::gpu_rt.

#include <cstddef>
#include <cstdint>
#include <string>

#if defined(LRIS_GPU_CUDA) == defined(LRIS_GPU_HIP)
#error "define exactly one of LRIS_GPU_CUDA and LRIS_GPU_HIP before including src/gpu/runtime.hpp"
#endif

// "cudaGetDevice" / "hipGetDevice", for messages.
#define LRIS_GPU_STR(name) LRIS_GPU_STR_(LRIS_GPU(name))
#define LRIS_GPU_STR_(x) LRIS_GPU_STR__(x)
#define LRIS_GPU_STR__(x) #x

#if defined(LRIS_GPU_CUDA)
#include <cuda.h>
#include <cuda_runtime.h>

#include <lris/cuda/cuda_try.hpp>

#define LRIS_GPU(name) cuda##name
#define LRIS_GPU_TRY(call) LRIS_CUDA_TRY(call)
#define LRIS_GPU_TRY_ON(device, call) LRIS_CUDA_TRY_ON(device, call)
#define LRIS_GPU_NS cuda
#define LRIS_GPU_RUNTIME cuda_runtime  // lris::cuda_runtime (C++20 code only)
#define LRIS_GPU_NAME "CUDA"
#define LRIS_GPU_PREFIX "cuda::"
#include <fmt/format.h>
#include <lris/cuda/batched_copy.hpp>
#include <lris/cuda/checksum.hpp>
#include <lris/cuda/convert.hpp>
#include <lris/cuda/device_info.hpp>

#if defined(__CUDACC__)
// `v` of lane `lane` among groups of `width` lanes; every lane of the warp takes part.
#define LRIS_SHFL(v, lane, width) __shfl_sync(0xffffffffu, (v), (lane), (width))
namespace lris::gpu_rt {
// A load the caches need not keep (read once, streaming).
__device__ __forceinline__ unsigned long long load_streaming(const unsigned long long* p) {
  return __ldcs(p);
}
}  // namespace lris::gpu_rt
#endif

namespace lris::gpu_rt {
using error_type = cuda_error;
using device_prop = cudaDeviceProp;
inline constexpr auto attr_multiprocessors = cudaDevAttrMultiProcessorCount;
inline constexpr auto attr_memory_pools = cudaDevAttrMemoryPoolsSupported;
inline constexpr auto attr_cc_major = cudaDevAttrComputeCapabilityMajor;
inline constexpr auto attr_host_pointer_for_registered = cudaDevAttrCanUseHostPointerForRegisteredMem;
inline cudaError_t host_alloc_portable(void** p, std::size_t bytes) {
  return cudaHostAlloc(p, bytes, cudaHostAllocPortable | cudaHostAllocMapped);
}
inline cudaError_t host_free(void* p) { return cudaFreeHost(p); }
inline cudaError_t host_register_portable(void* p, std::size_t bytes) {
  return cudaHostRegister(p, bytes, cudaHostRegisterPortable | cudaHostRegisterMapped);
}
inline constexpr const char* visibility_variables[] = {"CUDA_VISIBLE_DEVICES"};
inline constexpr const char* no_driver_reason = "no CUDA driver: libcuda.so.1 could not be loaded";
/// "sm_90".
inline std::string arch_name(const cudaDeviceProp& p) {
  return fmt::format("sm_{}{}", p.major, p.minor);
}
/// 13000 -> "13.0".
inline std::string format_version(int version) {
  if (version <= 0) return "none";
  return fmt::format("{}.{}", version / 1000, version % 1000 / 10);
}
/// Runs fn(user) on a runtime thread once `s` gets there.
inline cudaError_t launch_host_func(cudaStream_t s, void (*fn)(void*) noexcept, void* user) {
  return cudaLaunchHostFunc(s, fn, user);
}
/// The memory type of `p` (cudaMemoryTypeUnregistered for memory the runtime does not know).
inline cudaMemoryType memory_type(const void* p) {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    (void)cudaGetLastError();
    return cudaMemoryTypeUnregistered;
  }
  return a.type;
}
/// Work queued on `s` afterwards waits until the word at `flag` (pinned host memory) is
/// nonzero. The runtime has no call for it: the driver's cuStreamWaitValue32, looked up
/// through the runtime (so nothing links libcuda). cudaErrorNotSupported where the driver
/// lacks it.
inline cudaError_t stream_wait_flag(cudaStream_t s, const std::uint32_t* flag) {
  using wait_value_fn = CUresult (*)(CUstream, CUdeviceptr, cuuint32_t, unsigned int);
  void* fn = nullptr;
#if CUDART_VERSION >= 12000
  cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSuccess;
#endif
#if CUDART_VERSION >= 12050
  cudaError_t e = cudaGetDriverEntryPointByVersion("cuStreamWaitValue32", &fn, 12000,
                                                   cudaEnableDefault, &found);
#elif CUDART_VERSION >= 12000
  cudaError_t e = cudaGetDriverEntryPoint("cuStreamWaitValue32", &fn, cudaEnableDefault, &found);
#else
  cudaError_t e = cudaGetDriverEntryPoint("cuStreamWaitValue32", &fn, cudaEnableDefault);
#endif
  if (e != cudaSuccess) return e;
#if CUDART_VERSION >= 12000
  if (found != cudaDriverEntryPointSuccess) return cudaErrorNotSupported;
#endif
  if (fn == nullptr) return cudaErrorNotSupported;
  void* device_flag = nullptr;
  e = cudaHostGetDevicePointer(&device_flag, const_cast<std::uint32_t*>(flag), 0);
  if (e != cudaSuccess) return e;
  const CUresult r = reinterpret_cast<wait_value_fn>(fn)(
      s, reinterpret_cast<CUdeviceptr>(device_flag), 1, CU_STREAM_WAIT_VALUE_GEQ);
  if (r == CUDA_SUCCESS) return cudaSuccess;
  return r == CUDA_ERROR_NOT_SUPPORTED ? cudaErrorNotSupported : cudaErrorUnknown;
}
}  // namespace lris::gpu_rt

#else  // LRIS_GPU_HIP
#ifndef __HIP_PLATFORM_AMD__
#define __HIP_PLATFORM_AMD__ 1
#endif
#include <hip/hip_runtime.h>

#include <lris/hip/hip_try.hpp>

#define LRIS_GPU(name) hip##name
#define LRIS_GPU_TRY(call) LRIS_HIP_TRY(call)
#define LRIS_GPU_TRY_ON(device, call) LRIS_HIP_TRY_ON(device, call)
#define LRIS_GPU_NS hip
#define LRIS_GPU_RUNTIME hip_runtime  // lris::hip_runtime (C++20 code only)
#define LRIS_GPU_NAME "HIP"
#define LRIS_GPU_PREFIX "hip::"
#include <fmt/format.h>
#include <lris/hip/batched_copy.hpp>
#include <lris/hip/checksum.hpp>
#include <lris/hip/convert.hpp>
#include <lris/hip/device_info.hpp>

#if defined(__HIPCC__)
// `v` of lane `lane` among groups of `width` lanes (a wavefront has no partial-mask form).
#define LRIS_SHFL(v, lane, width) __shfl((v), (lane), (width))
namespace lris::gpu_rt {
__device__ __forceinline__ unsigned long long load_streaming(const unsigned long long* p) {
  return __builtin_nontemporal_load(p);
}
}  // namespace lris::gpu_rt
#endif

namespace lris::gpu_rt {
using error_type = hip_error;
using device_prop = hipDeviceProp_t;
inline constexpr auto attr_multiprocessors = hipDeviceAttributeMultiprocessorCount;
inline constexpr auto attr_memory_pools = hipDeviceAttributeMemoryPoolsSupported;
inline constexpr auto attr_cc_major = hipDeviceAttributeComputeCapabilityMajor;
inline constexpr auto attr_host_pointer_for_registered =
    hipDeviceAttributeCanUseHostPointerForRegisteredMem;
inline hipError_t host_alloc_portable(void** p, std::size_t bytes) {
  return hipHostMalloc(p, bytes, hipHostMallocPortable | hipHostMallocMapped);
}
inline hipError_t host_free(void* p) { return hipHostFree(p); }
inline hipError_t host_register_portable(void* p, std::size_t bytes) {
  return hipHostRegister(p, bytes, hipHostRegisterPortable | hipHostRegisterMapped);
}
inline constexpr const char* visibility_variables[] = {"HIP_VISIBLE_DEVICES",
                                                       "ROCR_VISIBLE_DEVICES"};
inline constexpr const char* no_driver_reason =
    "no HIP driver: the ROCm runtime found no usable amdgpu kernel driver (/dev/kfd)";
/// "gfx90a": the architecture without its feature flags (":sramecc+:xnack-").
inline std::string arch_name(const hipDeviceProp_t& p) {
  const std::string full = p.gcnArchName;
  return full.substr(0, full.find(':'));
}
/// HIP_VERSION encoding, 10000000 * major + 100000 * minor + patch: "5.2.21153".
inline std::string format_version(int version) {
  if (version <= 0) return "none";
  return fmt::format("{}.{}.{}", version / 10000000, version / 100000 % 100, version % 100000);
}
/// Runs fn(user) on a runtime thread once `s` gets there. ROCm 5.2 declares hipLaunchHostFunc
/// but its library does not export it; a stream callback does the same through a thunk.
inline hipError_t launch_host_func(hipStream_t s, void (*fn)(void*) noexcept, void* user) {
  struct thunk {
    void (*fn)(void*) noexcept;
    void* user;
  };
  auto* t = new thunk{fn, user};
  const hipError_t e = hipStreamAddCallback(
      s,
      [](hipStream_t, hipError_t, void* p) {
        auto* t = static_cast<thunk*>(p);
        t->fn(t->user);
        delete t;
      },
      t, 0);
  if (e != hipSuccess) delete t;
  return e;
}
// HIP 5 has no "unregistered" memory type: the call fails for such memory, as CUDA's did
// before 11; -1 stands for it.
inline int memory_type(const void* p) {
  hipPointerAttribute_t a{};
  if (hipPointerGetAttributes(&a, p) != hipSuccess) {
    (void)hipGetLastError();
    return -1;
  }
  return a.memoryType;
}
/// Work queued on `s` afterwards waits until the word at `flag` (pinned host memory) is
/// nonzero.
inline hipError_t stream_wait_flag(hipStream_t s, const std::uint32_t* flag) {
  void* device_flag = nullptr;
  hipError_t e = hipHostGetDevicePointer(&device_flag, const_cast<std::uint32_t*>(flag), 0);
  if (e != hipSuccess) return e;
  return hipStreamWaitValue32(s, device_flag, 1, hipStreamWaitValueGte, 0xffffffffu);
}
}  // namespace lris::gpu_rt
#endif
