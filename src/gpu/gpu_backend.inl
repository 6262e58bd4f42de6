// gpu_backend<Runtime>'s members, written once for CUDA and HIP against src/gpu/runtime.hpp.
// Included by exactly one file per runtime (src/cuda/cuda_backend.cpp, src/hip/hip_backend.cpp),
// which then instantiates gpu_backend for its runtime.
#include <cstring>

#include <fmt/format.h>

#include <lris/error.hpp>

#include <lris/gpu/device_health.hpp>
#include <lris/gpu/gpu_backend.hpp>
#include <lris/system/pci_link.hpp>

#include "gpu/host_pages.hpp"
#include "gpu/runtime.hpp"

namespace lris {

namespace gpu_rt {

using runtime = LRIS_GPU_RUNTIME;
using backend = gpu_backend<runtime>;

// Every function of the backend that uses its device starts here. A device lost to a sticky
// error (device_health.hpp) throws device_lost naming the first failure, though the runtime
// would answer some calls (cudaDeviceGetPCIBusId does): the loss is what the caller must learn,
// every time. While no device of the process was lost this is one atomic load.
inline void check(int device, const char* operation) {
  if (const auto* loss = lris::detail::find_device_loss(LRIS_GPU_NAME, device)) {
    lris::detail::throw_device_lost(*loss, fmt::format("{}_backend::{}", runtime::name, operation));
  }
}

// Makes the backend's device current for this thread; cheap when it already is.
inline void use_device(int device) {
  int current = -1;
  LRIS_GPU_TRY_ON(device, LRIS_GPU(GetDevice)(&current));
  if (current != device) LRIS_GPU_TRY_ON(device, LRIS_GPU(SetDevice)(device));
}

// check(), then use_device().
inline void enter(int device, const char* operation) {
  check(device, operation);
  use_device(device);
}

inline LRIS_GPU(Stream_t) native(backend::stream& s) {
  LRIS_EXPECTS(!s.empty(), "{}_backend: use of a moved-from or empty stream",
               runtime::name);
  return static_cast<LRIS_GPU(Stream_t)>(s.native());
}
inline LRIS_GPU(Event_t) native(backend::event& e) {
  LRIS_EXPECTS(e.native() != nullptr, "{}_backend: use of a moved-from or empty event",
               runtime::name);
  return static_cast<LRIS_GPU(Event_t)>(e.native());
}

inline LRIS_GPU(MemcpyKind) to_memcpy_kind(copy_kind k) {
  switch (k) {
    case copy_kind::host_to_host: return LRIS_GPU(MemcpyHostToHost);
    case copy_kind::host_to_device: return LRIS_GPU(MemcpyHostToDevice);
    case copy_kind::device_to_host: return LRIS_GPU(MemcpyDeviceToHost);
    case copy_kind::device_to_device: return LRIS_GPU(MemcpyDeviceToDevice);
  }
  return LRIS_GPU(MemcpyDefault);
}

// Destructors may run after the runtime has begun shutting down (static destruction): then
// there is nothing left to free and the error is expected.
inline void quiet(LRIS_GPU(Error_t) e) noexcept {
  if (e != LRIS_GPU(Success)) (void)LRIS_GPU(GetLastError)();
}

}  // namespace gpu_rt

void detail::destroy_gpu_handle(gpu_rt::runtime, gpu_stream_tag, void* handle) noexcept {
  gpu_rt::quiet(LRIS_GPU(StreamDestroy)(static_cast<LRIS_GPU(Stream_t)>(handle)));
}

void detail::destroy_gpu_handle(gpu_rt::runtime, gpu_event_tag, void* handle) noexcept {
  gpu_rt::quiet(LRIS_GPU(EventDestroy)(static_cast<LRIS_GPU(Event_t)>(handle)));
}

void detail::destroy_gpu_handle(gpu_rt::runtime, gpu_graph_tag, void* handle) noexcept {
  gpu_rt::quiet(LRIS_GPU(GraphExecDestroy)(static_cast<LRIS_GPU(GraphExec_t)>(handle)));
}

template <class R>
int gpu_backend<R>::device_count() noexcept {
  int n = 0;
  if (LRIS_GPU(GetDeviceCount)(&n) != LRIS_GPU(Success)) {
    (void)LRIS_GPU(GetLastError)();
    return 0;
  }
  return n;
}

template <class R>
gpu_backend<R>::gpu_backend(int device) : device_(device) {
  const int n = device_count();
  LRIS_EXPECTS(device >= 0 && device < n, "{}_backend: device {} does not exist ({} {} device{})",
               name, device, n, LRIS_GPU_NAME, n == 1 ? "" : "s");
}

template <class R>
void* gpu_backend<R>::allocate_device(std::size_t bytes) {
  gpu_rt::enter(device_, "allocate_device");
  void* p = nullptr;
  const auto e = LRIS_GPU(Malloc)(&p, bytes == 0 ? 1 : bytes);
  if (e == LRIS_GPU(ErrorMemoryAllocation)) {
    (void)LRIS_GPU(GetLastError)();
    std::size_t free_bytes = 0, total = 0;
    gpu_rt::quiet(LRIS_GPU(MemGetInfo)(&free_bytes, &total));
    throw out_of_memory(fmt::format("{}_backend: cannot allocate {} bytes on device {} ({} of "
                                    "{} bytes free)", name, bytes, device_, free_bytes, total),
                        bytes);
  }
  LRIS_GPU_TRY_ON(device_, e);
  return p;
}

template <class R>
void gpu_backend<R>::deallocate_device(void* p, std::size_t) noexcept {
  if (p == nullptr) return;
  int current = -1;
  gpu_rt::quiet(LRIS_GPU(GetDevice)(&current));
  if (current != device_) gpu_rt::quiet(LRIS_GPU(SetDevice)(device_));
  gpu_rt::quiet(LRIS_GPU(Free)(p));
}

template <class R>
void* gpu_backend<R>::allocate_device_async(std::size_t bytes, stream& s) {
  gpu_rt::enter(device_, "allocate_device_async");
  void* p = nullptr;
  const auto e = LRIS_GPU(MallocAsync)(&p, bytes == 0 ? 1 : bytes, gpu_rt::native(s));
  if (e == LRIS_GPU(ErrorMemoryAllocation)) {
    (void)LRIS_GPU(GetLastError)();
    std::size_t free_bytes = 0, total = 0;
    gpu_rt::quiet(LRIS_GPU(MemGetInfo)(&free_bytes, &total));
    throw out_of_memory(fmt::format("{}_backend: cannot allocate {} bytes on device {} in stream "
                                    "order ({} of {} bytes free)",
                                    name, bytes, device_, free_bytes, total),
                        bytes);
  }
  LRIS_GPU_TRY_ON(device_, e);
  return p;
}

template <class R>
void gpu_backend<R>::deallocate_device_async(void* p, std::size_t, stream& s) noexcept {
  if (p == nullptr) return;
  int current = -1;
  gpu_rt::quiet(LRIS_GPU(GetDevice)(&current));
  if (current != device_) gpu_rt::quiet(LRIS_GPU(SetDevice)(device_));
  gpu_rt::quiet(LRIS_GPU(FreeAsync)(p, gpu_rt::native(s)));
}

// Pinned memory is a mapping of the process's (host_pages.hpp), registered: faster to make
// than the runtime's pinned allocation, and as fast for DMA. Kernels reach it through the same
// pointer only where the device can use host pointers of registered memory (every recent
// NVIDIA and AMD GPU); elsewhere the runtime allocates it.
namespace gpu_rt {
inline bool pins_by_registering(int device) noexcept {
  int can = 0;
  return LRIS_GPU(DeviceGetAttribute)(&can, attr_host_pointer_for_registered, device) ==
             LRIS_GPU(Success) &&
         can != 0;
}
}  // namespace gpu_rt

template <class R>
void* gpu_backend<R>::allocate_pinned(std::size_t bytes) {
  gpu_rt::enter(device_, "allocate_pinned");
  if (!gpu_rt::pins_by_registering(device_)) {
    void* p = nullptr;
    const auto e = gpu_rt::host_alloc_portable(&p, bytes == 0 ? 1 : bytes);
    if (e == LRIS_GPU(ErrorMemoryAllocation)) {
      (void)LRIS_GPU(GetLastError)();
      throw out_of_memory(fmt::format("{}_backend: cannot allocate {} bytes of pinned host "
                                      "memory", name, bytes), bytes);
    }
    LRIS_GPU_TRY_ON(device_, e);
    return p;
  }
  int error = 0;
  void* p = gpu_rt::map_host_pages(bytes, error);
  if (p == nullptr) {
    throw out_of_memory(fmt::format("{}_backend: cannot map {} bytes of host memory to pin: {}",
                                    name, bytes, std::strerror(error)), bytes);
  }
  const auto e = gpu_rt::host_register_portable(p, gpu_rt::host_pages_length(bytes));
  if (e == LRIS_GPU(Success)) return p;
  gpu_rt::unmap_host_pages(p, bytes);
  if (e == LRIS_GPU(ErrorMemoryAllocation)) {
    (void)LRIS_GPU(GetLastError)();
    throw out_of_memory(fmt::format("{}_backend: cannot pin {} bytes of host memory", name,
                                    bytes), bytes);
  }
  LRIS_GPU_TRY_ON(device_, e);
  return nullptr;  // not reached: LRIS_GPU_TRY_ON threw
}

template <class R>
void gpu_backend<R>::deallocate_pinned(void* p, std::size_t bytes) noexcept {
  if (p == nullptr) return;
  if (!gpu_rt::pins_by_registering(device_)) {
    gpu_rt::quiet(gpu_rt::host_free(p));
    return;
  }
  gpu_rt::quiet(LRIS_GPU(HostUnregister)(p));
  gpu_rt::unmap_host_pages(p, bytes);
}

template <class R>
void gpu_backend<R>::register_host(void* p, std::size_t bytes) {
  LRIS_EXPECTS(p != nullptr, "{}_backend::register_host: null pointer ({} bytes)", name, bytes);
  LRIS_EXPECTS(bytes > 0, "{}_backend::register_host: empty range at {}", name, p);
  gpu_rt::enter(device_, "register_host");
  const auto e = gpu_rt::host_register_portable(p, bytes);
  if (e == LRIS_GPU(ErrorHostMemoryAlreadyRegistered)) {
    (void)LRIS_GPU(GetLastError)();
    throw invalid_argument(fmt::format("{}_backend::register_host: [{}, +{}) overlaps a range "
                                       "already registered", name, p, bytes));
  }
  LRIS_GPU_TRY_ON(device_, e);
}

template <class R>
void gpu_backend<R>::unregister_host(void* p) {
  gpu_rt::enter(device_, "unregister_host");
  const auto e = LRIS_GPU(HostUnregister)(p);
  if (e == LRIS_GPU(ErrorHostMemoryNotRegistered) || e == LRIS_GPU(ErrorInvalidValue)) {
    (void)LRIS_GPU(GetLastError)();
    throw invalid_argument(fmt::format(
        "{}_backend::unregister_host: {} is not the start of a registered range", name, p));
  }
  LRIS_GPU_TRY_ON(device_, e);
}

template <class R>
bool gpu_backend<R>::is_pinned(const void* p) noexcept {
  return gpu_rt::memory_type(p) == LRIS_GPU(MemoryTypeHost);
}

template <class R>
typename gpu_backend<R>::stream gpu_backend<R>::make_stream() {
  gpu_rt::enter(device_, "make_stream");
  LRIS_GPU(Stream_t) s = nullptr;
  LRIS_GPU_TRY_ON(device_, LRIS_GPU(StreamCreateWithFlags)(&s, LRIS_GPU(StreamNonBlocking)));
  return stream(s);
}

template <class R>
typename gpu_backend<R>::event gpu_backend<R>::make_event() {
  gpu_rt::enter(device_, "make_event");
  LRIS_GPU(Event_t) e = nullptr;
  LRIS_GPU_TRY_ON(device_, LRIS_GPU(EventCreateWithFlags)(&e, LRIS_GPU(EventDisableTiming)));
  return event(e);
}

template <class R>
typename gpu_backend<R>::event gpu_backend<R>::make_timed_event() {
  gpu_rt::enter(device_, "make_timed_event");
  LRIS_GPU(Event_t) e = nullptr;
  LRIS_GPU_TRY_ON(device_, LRIS_GPU(EventCreateWithFlags)(&e, LRIS_GPU(EventDefault)));
  return event(e);
}

template <class R>
double gpu_backend<R>::elapsed_seconds(event& from, event& to) {
  gpu_rt::check(device_, "elapsed_seconds");
  float ms = 0;
  LRIS_GPU_TRY_ON(device_, LRIS_GPU(EventElapsedTime)(&ms, gpu_rt::native(from),
                                                      gpu_rt::native(to)));
  return static_cast<double>(ms) / 1e3;
}

template <class R>
void gpu_backend<R>::copy_async(void* dst, const void* src, std::size_t bytes, copy_kind kind,
                                 stream& s) {
  LRIS_EXPECTS(bytes == 0 || (dst != nullptr && src != nullptr),
               "{}_backend::copy_async: null pointer (dst {}, src {}, {} bytes)", name, dst, src,
               bytes);
  gpu_rt::enter(device_, "copy_async");
  LRIS_GPU_TRY_ON(device_, LRIS_GPU(MemcpyAsync)(dst, src, bytes, gpu_rt::to_memcpy_kind(kind),
                                                 gpu_rt::native(s)));
}

template <class R>
void gpu_backend<R>::copy_peer_async(void* dst, int dst_device, const void* src, int src_device,
                                      std::size_t bytes, stream& s) {
  const int n = device_count();
  LRIS_EXPECTS(dst_device >= 0 && dst_device < n && src_device >= 0 && src_device < n,
               "{}_backend::copy_peer_async: device {} -> {} but there are {} devices", name,
               src_device, dst_device, n);
  LRIS_EXPECTS(bytes == 0 || (dst != nullptr && src != nullptr),
               "{}_backend::copy_peer_async: null pointer (dst {}, src {}, {} bytes)", name, dst,
               src, bytes);
  // Either device lost spoils the copy.
  gpu_rt::check(src_device, "copy_peer_async");
  gpu_rt::check(dst_device, "copy_peer_async");
  gpu_rt::enter(device_, "copy_peer_async");
  LRIS_GPU_TRY_ON(device_, LRIS_GPU(MemcpyPeerAsync)(dst, dst_device, src, src_device, bytes,
                                                     gpu_rt::native(s)));
}

template <class R>
bool gpu_backend<R>::enable_peer_access(int peer) {
  const int n = device_count();
  LRIS_EXPECTS(peer >= 0 && peer < n, "{}_backend::enable_peer_access: device {} does not "
               "exist ({} devices)", name, peer, n);
  gpu_rt::check(device_, "enable_peer_access");
  if (peer == device_) return true;
  gpu_rt::check(peer, "enable_peer_access");
  int can = 0;
  LRIS_GPU_TRY_ON(device_, LRIS_GPU(DeviceCanAccessPeer)(&can, device_, peer));
  if (!can) return false;
  gpu_rt::use_device(device_);
  const auto e = LRIS_GPU(DeviceEnablePeerAccess)(peer, 0);
  if (e == LRIS_GPU(ErrorPeerAccessAlreadyEnabled)) {
    (void)LRIS_GPU(GetLastError)();
    return true;
  }
  LRIS_GPU_TRY_ON(device_, e);
  return true;
}

template <class R>
void gpu_backend<R>::copy_batch_async(const copy_item* items, std::size_t count, stream& s) {
  gpu_rt::enter(device_, "copy_batch_async");
  LRIS_GPU_NS::launch_batched_copy(items, count, gpu_rt::native(s));
}

template <class R>
void gpu_backend<R>::convert_async(void* dst, dtype to, const void* src, dtype from,
                                   std::size_t count, stream& s) {
  gpu_rt::enter(device_, "convert_async");
  LRIS_GPU_NS::launch_convert(src, from, dst, to, count, gpu_rt::native(s));
}

template <class R>
void gpu_backend<R>::record(event& e, stream& s) {
  gpu_rt::enter(device_, "record");
  LRIS_GPU_TRY_ON(device_, LRIS_GPU(EventRecord)(gpu_rt::native(e), gpu_rt::native(s)));
}

template <class R>
void gpu_backend<R>::wait(stream& s, event& e) {
  gpu_rt::enter(device_, "wait");
  LRIS_GPU_TRY_ON(device_, LRIS_GPU(StreamWaitEvent)(gpu_rt::native(s), gpu_rt::native(e), 0));
}

template <class R>
void gpu_backend<R>::wait_flag(stream& s, const std::uint32_t* flag) {
  LRIS_EXPECTS(flag != nullptr, "{}_backend::wait_flag: null flag", name);
  gpu_rt::enter(device_, "wait_flag");
  const auto e = gpu_rt::stream_wait_flag(gpu_rt::native(s), flag);
  if (e == LRIS_GPU(ErrorNotSupported)) {
    (void)LRIS_GPU(GetLastError)();
    throw unsupported(fmt::format("{}_backend::wait_flag: device {} or its driver cannot make a "
                                  "stream wait on memory", name, device_));
  }
  LRIS_GPU_TRY_ON(device_, e);
}

template <class R>
void gpu_backend<R>::synchronize(stream& s) {
  gpu_rt::check(device_, "synchronize");
  LRIS_GPU_TRY_ON(device_, LRIS_GPU(StreamSynchronize)(gpu_rt::native(s)));
}

template <class R>
void gpu_backend<R>::synchronize(event& e) {
  gpu_rt::check(device_, "synchronize");
  LRIS_GPU_TRY_ON(device_, LRIS_GPU(EventSynchronize)(gpu_rt::native(e)));
}

template <class R>
std::string gpu_backend<R>::pci_bus_id() const {
  gpu_rt::check(device_, "pci_bus_id");
  char id[64] = {};
  LRIS_GPU_TRY_ON(device_, LRIS_GPU(DeviceGetPCIBusId)(id, sizeof id, device_));
  return normalize_pci_bus_id(id);
}

template <class R>
bool gpu_backend<R>::query(event& e) {
  gpu_rt::check(device_, "query");
  const auto r = LRIS_GPU(EventQuery)(gpu_rt::native(e));
  if (r == LRIS_GPU(ErrorNotReady)) {
    (void)LRIS_GPU(GetLastError)();
    return false;
  }
  LRIS_GPU_TRY_ON(device_, r);
  return true;
}

template <class R>
void gpu_backend<R>::host_callback(stream& s, host_callback_fn fn, void* user) {
  gpu_rt::enter(device_, "host_callback");
  LRIS_GPU_TRY_ON(device_, gpu_rt::launch_host_func(gpu_rt::native(s), fn, user));
}

template <class R>
void gpu_backend<R>::begin_capture(stream& s) {
  gpu_rt::enter(device_, "begin_capture");
  LRIS_GPU_TRY_ON(device_, LRIS_GPU(StreamBeginCapture)(gpu_rt::native(s),
                                                        LRIS_GPU(StreamCaptureModeThreadLocal)));
}

template <class R>
typename gpu_backend<R>::graph gpu_backend<R>::end_capture(stream& s) {
  gpu_rt::enter(device_, "end_capture");
  LRIS_GPU(Graph_t) g = nullptr;
  const auto r = LRIS_GPU(StreamEndCapture)(gpu_rt::native(s), &g);
  if (r != LRIS_GPU(Success)) {
    (void)LRIS_GPU(GetLastError)();
    if (g != nullptr) gpu_rt::quiet(LRIS_GPU(GraphDestroy)(g));
    throw invalid_argument(fmt::format("{}_backend::end_capture on device {}: the capture "
                                       "failed: {} ({})", name, device_,
                                       LRIS_GPU(GetErrorString)(r), LRIS_GPU(GetErrorName)(r)));
  }
  LRIS_GPU(GraphExec_t) exec = nullptr;
  const auto i = LRIS_GPU(GraphInstantiateWithFlags)(&exec, g, 0);
  gpu_rt::quiet(LRIS_GPU(GraphDestroy)(g));
  LRIS_GPU_TRY_ON(device_, i);
  return graph(exec);
}

template <class R>
void gpu_backend<R>::launch(graph& g, stream& s) {
  gpu_rt::enter(device_, "launch");
  LRIS_EXPECTS(g.native() != nullptr, "{}_backend::launch: a moved-from or empty graph", name);
  LRIS_GPU_TRY_ON(device_, LRIS_GPU(GraphLaunch)(static_cast<LRIS_GPU(GraphExec_t)>(g.native()),
                                                 gpu_rt::native(s)));
}

template class gpu_backend<gpu_rt::runtime>;

}  // namespace lris
