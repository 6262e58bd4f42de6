#include <lris/cuda/cuda_backend.hpp>

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <lris/cuda/batched_copy.hpp>
#include <lris/cuda/cuda_try.hpp>
#include <lris/error.hpp>

namespace lris {

namespace {

// Makes the backend's device current for this thread; cheap when it already is.
void use_device(int device) {
  int current = -1;
  LRIS_CUDA_TRY(cudaGetDevice(&current));
  if (current != device) LRIS_CUDA_TRY(cudaSetDevice(device));
}

cudaStream_t native(cuda_backend::stream& s) {
  LRIS_EXPECTS(s.native() != nullptr, "cuda_backend: use of a moved-from or empty stream");
  return static_cast<cudaStream_t>(s.native());
}
cudaEvent_t native(cuda_backend::event& e) {
  LRIS_EXPECTS(e.native() != nullptr, "cuda_backend: use of a moved-from or empty event");
  return static_cast<cudaEvent_t>(e.native());
}

cudaMemcpyKind to_cuda(copy_kind k) {
  switch (k) {
    case copy_kind::host_to_host: return cudaMemcpyHostToHost;
    case copy_kind::host_to_device: return cudaMemcpyHostToDevice;
    case copy_kind::device_to_host: return cudaMemcpyDeviceToHost;
    case copy_kind::device_to_device: return cudaMemcpyDeviceToDevice;
  }
  return cudaMemcpyDefault;
}

// Destructors may run after the runtime has begun shutting down (static destruction): then
// there is nothing left to free and the error is expected.
void quiet(cudaError_t e) noexcept {
  if (e != cudaSuccess) (void)cudaGetLastError();
}

}  // namespace

void detail::destroy_cuda_handle(cuda_stream_tag, void* handle) noexcept {
  quiet(cudaStreamDestroy(static_cast<cudaStream_t>(handle)));
}

void detail::destroy_cuda_handle(cuda_event_tag, void* handle) noexcept {
  quiet(cudaEventDestroy(static_cast<cudaEvent_t>(handle)));
}

int cuda_backend::device_count() noexcept {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

cuda_backend::cuda_backend(int device) : device_(device) {
  const int n = device_count();
  LRIS_EXPECTS(device >= 0 && device < n, "cuda_backend: device {} does not exist ({} CUDA device{})",
               device, n, n == 1 ? "" : "s");
}

void* cuda_backend::allocate_device(std::size_t bytes) {
  use_device(device_);
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, bytes == 0 ? 1 : bytes);
  if (e == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    std::size_t free_bytes = 0, total = 0;
    quiet(cudaMemGetInfo(&free_bytes, &total));
    throw out_of_memory(fmt::format("cuda_backend: cannot allocate {} bytes on device {} ({} of "
                                    "{} bytes free)", bytes, device_, free_bytes, total),
                        bytes);
  }
  LRIS_CUDA_TRY(e);
  return p;
}

void cuda_backend::deallocate_device(void* p, std::size_t) noexcept {
  if (p == nullptr) return;
  int current = -1;
  quiet(cudaGetDevice(&current));
  if (current != device_) quiet(cudaSetDevice(device_));
  quiet(cudaFree(p));
}

void* cuda_backend::allocate_pinned(std::size_t bytes) {
  use_device(device_);
  void* p = nullptr;
  const cudaError_t e = cudaHostAlloc(&p, bytes == 0 ? 1 : bytes, cudaHostAllocPortable);
  if (e == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    throw out_of_memory(fmt::format("cuda_backend: cannot allocate {} bytes of pinned host memory",
                                    bytes), bytes);
  }
  LRIS_CUDA_TRY(e);
  return p;
}

void cuda_backend::deallocate_pinned(void* p, std::size_t) noexcept {
  if (p != nullptr) quiet(cudaFreeHost(p));
}

void cuda_backend::register_host(void* p, std::size_t bytes) {
  LRIS_EXPECTS(p != nullptr, "cuda_backend::register_host: null pointer ({} bytes)", bytes);
  LRIS_EXPECTS(bytes > 0, "cuda_backend::register_host: empty range at {}", p);
  use_device(device_);
  const cudaError_t e = cudaHostRegister(p, bytes, cudaHostRegisterPortable);
  if (e == cudaErrorHostMemoryAlreadyRegistered) {
    (void)cudaGetLastError();
    throw invalid_argument(fmt::format("cuda_backend::register_host: [{}, +{}) overlaps a range "
                                       "already registered", p, bytes));
  }
  LRIS_CUDA_TRY(e);
}

void cuda_backend::unregister_host(void* p) {
  use_device(device_);
  const cudaError_t e = cudaHostUnregister(p);
  if (e == cudaErrorHostMemoryNotRegistered || e == cudaErrorInvalidValue) {
    (void)cudaGetLastError();
    throw invalid_argument(fmt::format(
        "cuda_backend::unregister_host: {} is not the start of a registered range", p));
  }
  LRIS_CUDA_TRY(e);
}

bool cuda_backend::is_pinned(const void* p) noexcept {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return a.type == cudaMemoryTypeHost;
}

cuda_backend::stream cuda_backend::make_stream() {
  use_device(device_);
  cudaStream_t s = nullptr;
  LRIS_CUDA_TRY(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  return stream(s);
}

cuda_backend::event cuda_backend::make_event() {
  use_device(device_);
  cudaEvent_t e = nullptr;
  LRIS_CUDA_TRY(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  return event(e);
}

void cuda_backend::copy_async(void* dst, const void* src, std::size_t bytes, copy_kind kind,
                              stream& s) {
  LRIS_EXPECTS(bytes == 0 || (dst != nullptr && src != nullptr),
               "cuda_backend::copy_async: null pointer (dst {}, src {}, {} bytes)", dst, src,
               bytes);
  use_device(device_);
  LRIS_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, to_cuda(kind), native(s)));
}

void cuda_backend::copy_peer_async(void* dst, int dst_device, const void* src, int src_device,
                                   std::size_t bytes, stream& s) {
  const int n = device_count();
  LRIS_EXPECTS(dst_device >= 0 && dst_device < n && src_device >= 0 && src_device < n,
               "cuda_backend::copy_peer_async: device {} -> {} but there are {} devices",
               src_device, dst_device, n);
  LRIS_EXPECTS(bytes == 0 || (dst != nullptr && src != nullptr),
               "cuda_backend::copy_peer_async: null pointer (dst {}, src {}, {} bytes)", dst, src,
               bytes);
  use_device(device_);
  LRIS_CUDA_TRY(cudaMemcpyPeerAsync(dst, dst_device, src, src_device, bytes, native(s)));
}

bool cuda_backend::enable_peer_access(int peer) {
  const int n = device_count();
  LRIS_EXPECTS(peer >= 0 && peer < n, "cuda_backend::enable_peer_access: device {} does not "
               "exist ({} devices)", peer, n);
  if (peer == device_) return true;
  int can = 0;
  LRIS_CUDA_TRY(cudaDeviceCanAccessPeer(&can, device_, peer));
  if (!can) return false;
  use_device(device_);
  const cudaError_t e = cudaDeviceEnablePeerAccess(peer, 0);
  if (e == cudaErrorPeerAccessAlreadyEnabled) {
    (void)cudaGetLastError();
    return true;
  }
  LRIS_CUDA_TRY(e);
  return true;
}

void cuda_backend::copy_batch_async(const copy_item* items, std::size_t count, stream& s) {
  use_device(device_);
  cuda::launch_batched_copy(items, count, native(s));
}

void cuda_backend::record(event& e, stream& s) {
  use_device(device_);
  LRIS_CUDA_TRY(cudaEventRecord(native(e), native(s)));
}

void cuda_backend::wait(stream& s, event& e) {
  use_device(device_);
  LRIS_CUDA_TRY(cudaStreamWaitEvent(native(s), native(e), 0));
}

void cuda_backend::synchronize(stream& s) { LRIS_CUDA_TRY(cudaStreamSynchronize(native(s))); }

void cuda_backend::synchronize(event& e) { LRIS_CUDA_TRY(cudaEventSynchronize(native(e))); }

bool cuda_backend::query(event& e) {
  const cudaError_t r = cudaEventQuery(native(e));
  if (r == cudaErrorNotReady) {
    (void)cudaGetLastError();
    return false;
  }
  LRIS_CUDA_TRY(r);
  return true;
}

void cuda_backend::host_callback(stream& s, host_callback_fn fn, void* user) {
  use_device(device_);
  LRIS_CUDA_TRY(cudaLaunchHostFunc(native(s), fn, user));
}

}  // namespace lris
