#pragma once
/// @file
/// @brief gpu_backend<Runtime>: backend_policy over a GPU runtime, CUDA (cuda_backend) or HIP
/// (hip_backend). One declaration for both; each runtime's library (lris::cuda, lris::hip)
/// defines it for its runtime. This header includes no runtime header.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include <lris/concepts/backend_policy.hpp>
#include <lris/concepts/batch_backend.hpp>
#include <lris/concepts/convert_backend.hpp>
#include <lris/concepts/copy_item.hpp>
#include <lris/concepts/flag_wait_backend.hpp>
#include <lris/concepts/graph_backend.hpp>
#include <lris/concepts/pci_backend.hpp>
#include <lris/concepts/peer_backend.hpp>
#include <lris/concepts/stream_ordered_backend.hpp>
#include <lris/element/dtype.hpp>

namespace lris {

/// @brief The CUDA runtime (cudart), for gpu_backend and the kernels of lris::cuda.
struct cuda_runtime {
  static constexpr std::string_view name = "cuda";
};
/// @brief The HIP runtime (ROCm's amdhip64), for gpu_backend and the kernels of lris::hip.
struct hip_runtime {
  static constexpr std::string_view name = "hip";
};

template <class Runtime>
class gpu_backend;

namespace detail {
struct gpu_stream_tag {};
struct gpu_event_tag {};
struct gpu_graph_tag {};
// Defined by each runtime's library.
void destroy_gpu_handle(cuda_runtime, gpu_stream_tag, void* handle) noexcept;
void destroy_gpu_handle(cuda_runtime, gpu_event_tag, void* handle) noexcept;
void destroy_gpu_handle(cuda_runtime, gpu_graph_tag, void* handle) noexcept;
void destroy_gpu_handle(hip_runtime, gpu_stream_tag, void* handle) noexcept;
void destroy_gpu_handle(hip_runtime, gpu_event_tag, void* handle) noexcept;
void destroy_gpu_handle(hip_runtime, gpu_graph_tag, void* handle) noexcept;

/// @brief A move-only owner of a runtime handle (cudaStream_t, hipEvent_t, ...), or a borrowed
/// handle of the caller's, never destroyed here.
template <class Runtime, class Tag>
class gpu_handle {
 public:
  gpu_handle() = default;
  gpu_handle(gpu_handle&& o) noexcept
      : handle_(std::exchange(o.handle_, nullptr)), borrowed_(std::exchange(o.borrowed_, false)) {}
  gpu_handle& operator=(gpu_handle&& o) noexcept {
    if (this != &o) {
      reset();
      handle_ = std::exchange(o.handle_, nullptr);
      borrowed_ = std::exchange(o.borrowed_, false);
    }
    return *this;
  }
  ~gpu_handle() { reset(); }
  /// @brief The runtime's handle, for kernels and libraries of the caller's own (null for a
  /// borrowed legacy default stream).
  [[nodiscard]] void* native() const noexcept { return handle_; }
  /// @brief True for a moved-from or default-made handle: nothing to use.
  [[nodiscard]] bool empty() const noexcept { return handle_ == nullptr && !borrowed_; }
  /// @brief True for a handle the caller owns (gpu_backend::borrow_stream).
  [[nodiscard]] bool borrowed() const noexcept { return borrowed_; }

 private:
  friend class lris::gpu_backend<Runtime>;
  explicit gpu_handle(void* h, bool borrowed = false) noexcept : handle_(h), borrowed_(borrowed) {}
  void reset() noexcept {
    if (handle_ != nullptr && !borrowed_) {
      destroy_gpu_handle(Runtime{}, Tag{}, std::exchange(handle_, nullptr));
    }
    handle_ = nullptr;
    borrowed_ = false;
  }
  void* handle_ = nullptr;
  bool borrowed_ = false;
};
}  // namespace detail

/// @brief One GPU. Cheap to copy (it is a device ordinal); every call makes its device current
/// for the calling thread first, so threads need no cudaSetDevice/hipSetDevice of their own.
/// Once the device is lost to a sticky error (an illegal address, a kernel fault), every
/// function that uses it throws lris::device_lost naming the first failure, for the rest of
/// the process; the noexcept ones (deallocation) still return quietly.
template <class Runtime>
class gpu_backend {
 public:
  static constexpr std::string_view name = Runtime::name;

  /// @brief A non-blocking stream on the backend's device.
  using stream = detail::gpu_handle<Runtime, detail::gpu_stream_tag>;
  /// @brief An event without timing (cheaper to record and query).
  using event = detail::gpu_handle<Runtime, detail::gpu_event_tag>;
  /// @brief Work captured from streams, ready to launch (an instantiated graph).
  using graph = detail::gpu_handle<Runtime, detail::gpu_graph_tag>;

  /// @brief Device 0.
  gpu_backend() : gpu_backend(0) {}
  /// @brief Device `device`; throws lris::invalid_argument naming the device count when it does
  /// not exist (0 devices when there is no driver).
  explicit gpu_backend(int device);

  /// @brief Devices visible to this process; 0 without a driver or device.
  [[nodiscard]] static int device_count() noexcept;
  [[nodiscard]] int device() const noexcept { return device_; }
  /// @brief The device's PCI address, "0000:1b:00.0" (lower-case hex).
  [[nodiscard]] std::string pci_bus_id() const;
  friend bool operator==(const gpu_backend&, const gpu_backend&) = default;

  // ---- memory -------------------------------------------------------------------------------
  /// @brief Device memory; lris::out_of_memory naming the size and free memory on failure.
  [[nodiscard]] void* allocate_device(std::size_t bytes);
  void deallocate_device(void* p, std::size_t bytes) noexcept;
  /// @brief Device memory for work queued on `s` after the call, from the device's memory pool
  /// (cudaMallocAsync / hipMallocAsync): no device synchronization.
  /// @throws lris::out_of_memory naming the size and free memory.
  [[nodiscard]] void* allocate_device_async(std::size_t bytes, stream& s);
  /// @brief Frees `p` (from allocate_device_async) once the work queued on `s` before the call
  /// has run, without waiting for it (cudaFreeAsync / hipFreeAsync).
  void deallocate_device_async(void* p, std::size_t bytes, stream& s) noexcept;
  /// @brief Pinned host memory, portable (pinned for every device) and mapped: a kernel may
  /// read and write it over the link (zero copy) through the same pointer.
  [[nodiscard]] void* allocate_pinned(std::size_t bytes);
  void deallocate_pinned(void* p, std::size_t bytes) noexcept;
  /// @brief Pins (registers, portable) memory from any allocator.
  void register_host(void* p, std::size_t bytes);
  /// @brief Unregisters; lris::invalid_argument when `p` was not registered.
  void unregister_host(void* p);
  /// @brief True when the runtime knows `p` as pinned or registered host memory.
  [[nodiscard]] static bool is_pinned(const void* p) noexcept;

  // ---- streams and events -------------------------------------------------------------------
  [[nodiscard]] stream make_stream();
  /// @brief A stream of the caller's, named by its runtime handle (a framework's current
  /// stream: torch.cuda.current_stream().cuda_stream; null for the legacy default stream):
  /// work is queued on it as on any stream, and it is never destroyed here. It must be a
  /// stream of this backend's device and outlive the object.
  [[nodiscard]] static stream borrow_stream(void* native) noexcept { return stream(native, true); }
  [[nodiscard]] event make_event();
  /// @brief An event that keeps the time it completed, for elapsed_seconds().
  [[nodiscard]] event make_timed_event();
  /// @brief Seconds from `from` to `to` (both timed, recorded and completed; negative when
  /// `to` completed first).
  [[nodiscard]] double elapsed_seconds(event& from, event& to);
  void copy_async(void* dst, const void* src, std::size_t bytes, copy_kind kind, stream& s);
  /// @brief Copies device memory of `src_device` to device memory of `dst_device` on `s` (a
  /// stream of this backend's device): directly where enable_peer_access() succeeded, else
  /// staged by the driver through host memory.
  void copy_peer_async(void* dst, int dst_device, const void* src, int src_device,
                       std::size_t bytes, stream& s);
  /// @brief Lets this device access `peer`'s memory directly; false when the hardware cannot
  /// (copies then still work, through host memory). Enabling twice is not an error.
  bool enable_peer_access(int peer);
  /// @brief One kernel on `s` performs every copy of `items` (which must be pinned or device
  /// memory, as must every source and destination): see launch_batched_copy.
  void copy_batch_async(const copy_item* items, std::size_t count, stream& s);
  /// @brief Queues on `s` the conversion of `count` elements of `from` at `src` into `to` at
  /// `dst` (device or pinned memory): see launch_convert.
  /// @throws lris::unsupported when lris::can_convert(from, to) is false.
  void convert_async(void* dst, dtype to, const void* src, dtype from, std::size_t count,
                     stream& s);
  void record(event& e, stream& s);
  void wait(stream& s, event& e);
  /// @brief Work queued on `s` after this call waits until the word at `flag` (pinned memory of
  /// this backend) is nonzero: a wait on memory by the device (cuStreamWaitValue32,
  /// hipStreamWaitValue32), no host thread involved.
  /// @throws lris::unsupported where the driver cannot.
  void wait_flag(stream& s, const std::uint32_t* flag);
  void synchronize(stream& s);
  void synchronize(event& e);
  [[nodiscard]] bool query(event& e);
  /// @brief Runs `fn(user)` on a runtime thread once `s` reaches this point; `fn` must not call
  /// the runtime.
  void host_callback(stream& s, host_callback_fn fn, void* user);

  // ---- graphs -------------------------------------------------------------------------------
  /// @brief Work queued on `s` from now on is captured, not run (a stream that waits for an
  /// event recorded on `s` joins the capture), until end_capture(s). Thread-local mode: other
  /// threads may go on using the runtime meanwhile.
  void begin_capture(stream& s);
  /// @brief Ends the capture begun on `s` and instantiates what it captured.
  /// @throws lris::invalid_argument naming the runtime's error when the capture was invalidated
  /// (work of a joined stream never waited for, a wait for an event recorded outside it).
  [[nodiscard]] graph end_capture(stream& s);
  /// @brief Queues `g`'s work on `s`, once per call.
  void launch(graph& g, stream& s);

 private:
  int device_ = 0;
};

}  // namespace lris
