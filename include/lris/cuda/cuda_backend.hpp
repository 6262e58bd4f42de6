#pragma once
/// @file
/// @brief cuda_backend: backend_policy over the CUDA runtime. This header does not include CUDA
/// headers; link lris::cuda.

#include <cstddef>
#include <string_view>
#include <utility>

#include <lris/concepts/backend_policy.hpp>

namespace lris {

class cuda_backend;

namespace detail {
struct cuda_stream_tag {};
struct cuda_event_tag {};
void destroy_cuda_handle(cuda_stream_tag, void* handle) noexcept;
void destroy_cuda_handle(cuda_event_tag, void* handle) noexcept;

/// @brief A move-only owner of a CUDA runtime handle (cudaStream_t, cudaEvent_t).
template <class Tag>
class cuda_handle {
 public:
  cuda_handle() = default;
  cuda_handle(cuda_handle&& o) noexcept : handle_(std::exchange(o.handle_, nullptr)) {}
  cuda_handle& operator=(cuda_handle&& o) noexcept {
    if (this != &o) {
      reset();
      handle_ = std::exchange(o.handle_, nullptr);
    }
    return *this;
  }
  ~cuda_handle() { reset(); }
  /// @brief The runtime's handle, for kernels and libraries of the caller's own.
  [[nodiscard]] void* native() const noexcept { return handle_; }

 private:
  friend class lris::cuda_backend;
  explicit cuda_handle(void* h) noexcept : handle_(h) {}
  void reset() noexcept {
    if (handle_ != nullptr) destroy_cuda_handle(Tag{}, std::exchange(handle_, nullptr));
  }
  void* handle_ = nullptr;
};
}  // namespace detail

/// @brief One CUDA device. Cheap to copy (it is a device ordinal); every call makes its device
/// current for the calling thread first, so threads need no cudaSetDevice of their own.
class cuda_backend {
 public:
  static constexpr std::string_view name = "cuda";

  /// @brief A non-blocking CUDA stream (cudaStreamNonBlocking) on the backend's device.
  using stream = detail::cuda_handle<detail::cuda_stream_tag>;
  /// @brief A CUDA event without timing (cudaEventDisableTiming: cheaper to record and query).
  using event = detail::cuda_handle<detail::cuda_event_tag>;

  /// @brief Device 0.
  cuda_backend() : cuda_backend(0) {}
  /// @brief Device `device`; throws lris::invalid_argument naming the device count when it does
  /// not exist (0 devices when there is no driver).
  explicit cuda_backend(int device);

  /// @brief Devices visible to this process; 0 without a driver or device.
  [[nodiscard]] static int device_count() noexcept;
  [[nodiscard]] int device() const noexcept { return device_; }
  friend bool operator==(const cuda_backend&, const cuda_backend&) = default;

  // ---- memory -------------------------------------------------------------------------------
  /// @brief cudaMalloc; lris::out_of_memory naming the size and free memory on failure.
  [[nodiscard]] void* allocate_device(std::size_t bytes);
  void deallocate_device(void* p, std::size_t bytes) noexcept;
  /// @brief cudaHostAlloc (portable: pinned for every device).
  [[nodiscard]] void* allocate_pinned(std::size_t bytes);
  void deallocate_pinned(void* p, std::size_t bytes) noexcept;
  /// @brief cudaHostRegister (portable) of memory from any allocator.
  void register_host(void* p, std::size_t bytes);
  /// @brief cudaHostUnregister; lris::invalid_argument when `p` was not registered.
  void unregister_host(void* p);
  /// @brief True when the runtime knows [p, p + bytes) as pinned or registered host memory.
  [[nodiscard]] static bool is_pinned(const void* p) noexcept;

  // ---- streams and events -------------------------------------------------------------------
  [[nodiscard]] stream make_stream();
  [[nodiscard]] event make_event();
  void copy_async(void* dst, const void* src, std::size_t bytes, copy_kind kind, stream& s);
  /// @brief Copies device memory of `src_device` to device memory of `dst_device` on `s` (a
  /// stream of this backend's device): over NVLink or PCIe peer-to-peer where
  /// enable_peer_access() succeeded, else staged by the driver through host memory.
  void copy_peer_async(void* dst, int dst_device, const void* src, int src_device,
                       std::size_t bytes, stream& s);
  /// @brief Lets this device access `peer`'s memory directly; false when the hardware cannot
  /// (copies then still work, through host memory). Enabling twice is not an error.
  bool enable_peer_access(int peer);
  /// @brief One kernel on `s` performs every copy of `items` (which must be pinned or device
  /// memory, as must every source and destination): see lris::cuda::launch_batched_copy.
  void copy_batch_async(const copy_item* items, std::size_t count, stream& s);
  void record(event& e, stream& s);
  void wait(stream& s, event& e);
  void synchronize(stream& s);
  void synchronize(event& e);
  [[nodiscard]] bool query(event& e);
  /// @brief cudaLaunchHostFunc: `fn` must not call CUDA.
  void host_callback(stream& s, host_callback_fn fn, void* user);

 private:
  int device_ = 0;
};

static_assert(backend_policy<cuda_backend>);
static_assert(batch_backend<cuda_backend>);

}  // namespace lris
