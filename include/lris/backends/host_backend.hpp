#pragma once
/// @file
/// @brief host_backend: a complete backend_policy model that runs on any machine.
///
/// "Device" memory is host memory, streams are ordered work queues on their own threads,
/// events mark points in them, and copies go through the multi-threaded copy engine. Every
/// pipeline runs on it, so CI tests every transfer path without a GPU.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string_view>
#include <thread>
#include <vector>

#include <lris/concepts/backend_policy.hpp>
#include <lris/concepts/batch_backend.hpp>
#include <lris/concepts/convert_backend.hpp>
#include <lris/concepts/flag_wait_backend.hpp>
#include <lris/concepts/graph_backend.hpp>
#include <lris/concepts/stream_ordered_backend.hpp>
#include <lris/backends/detail/host_capture.hpp>
#include <lris/backends/detail/serial_queue.hpp>
#include <lris/detail/spin_wait.hpp>
#include <lris/detail/thread_pool.hpp>
#include <lris/error.hpp>
#include <lris/element/convert.hpp>

namespace lris {

namespace detail {
struct host_event_state {
  std::mutex mutex;
  std::condition_variable cv;
  std::uint64_t recorded = 0;              // number of record() calls
  std::atomic<std::uint64_t> completed{0};  // highest record() the stream has passed
  std::chrono::steady_clock::time_point at;  // when it was passed
  std::shared_ptr<host_capture> capture;     // the capture its last record() was in, if any

  void complete(std::uint64_t target) {
    {
      std::lock_guard lock(mutex);
      if (completed.load() < target) {
        at = std::chrono::steady_clock::now();
        completed.store(target, std::memory_order_release);
      }
    }
    cv.notify_all();
  }
  void wait_for(std::uint64_t target) {
    if (detail::spin_until([&] { return completed.load(std::memory_order_acquire) >= target; })) {
      return;
    }
    std::unique_lock lock(mutex);
    cv.wait(lock, [&] { return completed.load() >= target; });
  }
};

// Registrations are process-wide, like a driver's page-locked ranges.
struct host_registry {
  std::mutex mutex;
  std::map<std::uintptr_t, std::size_t> ranges;  // start -> bytes

  static host_registry& instance() {
    static host_registry r;
    return r;
  }
};
}  // namespace detail

/// @brief The host backend. Cheap to copy; all copies refer to the same process-wide engine.
class host_backend {
 public:
  static constexpr std::string_view name = "host";

  /// @brief An ordered queue of work running on its own thread.
  class stream {
   public:
    stream() : queue_(std::make_unique<detail::serial_queue>()) {}

   private:
    friend class host_backend;
    std::unique_ptr<detail::serial_queue> queue_;
    std::shared_ptr<detail::host_capture> capture_;  // the capture it is in, if any
  };

  /// @brief A point in a stream. query() is true once the stream has passed the last record().
  class event {
   public:
    event() : state_(std::make_shared<detail::host_event_state>()) {}

   private:
    friend class host_backend;
    std::shared_ptr<detail::host_event_state> state_;
  };

  /// @brief Work captured from streams: run by launch() as one task, in the order it was
  /// queued.
  class graph {
   private:
    friend class host_backend;
    std::shared_ptr<const std::vector<std::function<void()>>> tasks_;
  };

  /// @brief "Devices" of the host backend: each is host memory, and they all share it. There
  /// are several, so that code driving many devices (a fan-out to N GPUs) runs and is tested
  /// on any machine.
  static constexpr int devices = 8;

  /// @brief The host backend on "device" 0.
  host_backend() = default;
  /// @brief The host backend on "device" `device` (0 to devices - 1).
  explicit host_backend(int device) : device_(device) {
    LRIS_EXPECTS(device >= 0 && device < device_count(),
                 "host_backend: device {} does not exist (the host backend has {} devices)",
                 device, device_count());
  }

  [[nodiscard]] static int device_count() noexcept { return devices; }
  [[nodiscard]] int device() const noexcept { return device_; }
  friend bool operator==(const host_backend&, const host_backend&) = default;

  // ---- memory -------------------------------------------------------------------------------
  /// @brief "Device" memory: 256-byte aligned host memory.
  [[nodiscard]] void* allocate_device(std::size_t bytes) { return aligned(bytes, 256, "device"); }
  void deallocate_device(void* p, std::size_t) noexcept { std::free(p); }
  /// @brief "Device" memory for work on `s`: host memory, so it is usable at once.
  [[nodiscard]] void* allocate_device_async(std::size_t bytes, stream& s) {
    (void)queue(s);  // a moved-from stream is an error here too
    return allocate_device(bytes);
  }
  /// @brief Frees `p` once the work queued on `s` before the call has run.
  void deallocate_device_async(void* p, std::size_t, stream& s) noexcept {
    if (p == nullptr) return;
    if (s.queue_ == nullptr) {  // a moved-from stream has no work in flight
      std::free(p);
      return;
    }
    try {
      queue(s).submit([p] { std::free(p); });
    } catch (...) {  // no memory to queue the free: wait for the stream instead
      s.queue_->drain();
      std::free(p);
    }
  }
  /// @brief "Pinned" memory: page-aligned host memory (nothing needs locking without a DMA
  /// engine).
  [[nodiscard]] void* allocate_pinned(std::size_t bytes) { return aligned(bytes, 4096, "pinned"); }
  void deallocate_pinned(void* p, std::size_t) noexcept { std::free(p); }

  /// @brief Marks [p, p + bytes) as pinned. Overlapping an existing registration is an error,
  /// as with device runtimes.
  void register_host(void* p, std::size_t bytes) {
    LRIS_EXPECTS(p != nullptr, "host_backend::register_host: null pointer ({} bytes)", bytes);
    LRIS_EXPECTS(bytes > 0, "host_backend::register_host: empty range at {}", p);
    auto& reg = detail::host_registry::instance();
    const auto start = reinterpret_cast<std::uintptr_t>(p);
    std::lock_guard lock(reg.mutex);
    auto it = reg.ranges.upper_bound(start);
    const bool overlaps_next = it != reg.ranges.end() && it->first < start + bytes;
    const bool overlaps_prev =
        it != reg.ranges.begin() && std::prev(it)->first + std::prev(it)->second > start;
    LRIS_EXPECTS(!overlaps_next && !overlaps_prev,
                 "host_backend::register_host: [{}, +{}) overlaps a range already registered", p,
                 bytes);
    reg.ranges.emplace(start, bytes);
  }
  /// @brief Ends the registration that starts at `p`.
  void unregister_host(void* p) {
    auto& reg = detail::host_registry::instance();
    std::lock_guard lock(reg.mutex);
    const auto n = reg.ranges.erase(reinterpret_cast<std::uintptr_t>(p));
    LRIS_EXPECTS(n == 1, "host_backend::unregister_host: {} is not the start of a registered range",
                 p);
  }
  /// @brief True when [p, p + bytes) lies inside one registered range.
  [[nodiscard]] static bool is_registered(const void* p, std::size_t bytes) {
    auto& reg = detail::host_registry::instance();
    const auto start = reinterpret_cast<std::uintptr_t>(p);
    std::lock_guard lock(reg.mutex);
    auto it = reg.ranges.upper_bound(start);
    if (it == reg.ranges.begin()) return false;
    --it;
    return start + bytes <= it->first + it->second;
  }

  // ---- streams and events -------------------------------------------------------------------
  [[nodiscard]] stream make_stream() { return stream{}; }
  [[nodiscard]] event make_event() { return event{}; }
  /// @brief Every host event keeps the time the stream passed it.
  [[nodiscard]] event make_timed_event() { return event{}; }
  /// @brief Seconds from `from` to `to` (both passed; negative when `to` was passed first).
  [[nodiscard]] double elapsed_seconds(event& from, event& to) {
    std::chrono::steady_clock::time_point a, b;
    {
      std::lock_guard lock(from.state_->mutex);
      a = from.state_->at;
    }
    {
      std::lock_guard lock(to.state_->mutex);
      b = to.state_->at;
    }
    return std::chrono::duration<double>(b - a).count();
  }

  /// @brief Queues a copy on `s`; it runs on the copy engine's threads when its turn comes.
  void copy_async(void* dst, const void* src, std::size_t bytes, copy_kind, stream& s) {
    LRIS_EXPECTS(bytes == 0 || (dst != nullptr && src != nullptr),
                 "host_backend::copy_async: null pointer (dst {}, src {}, {} bytes)", dst, src,
                 bytes);
    submit(s, [dst, src, bytes] {
      const auto pool_owner = detail::default_thread_pool();
      auto& pool = *pool_owner;
      detail::parallel_memcpy(pool, dst, src, bytes, pool.size(), std::size_t{4} << 20);
    });
  }
  /// @brief Queues a copy between two devices' memory on `s` (all of it host memory).
  void copy_peer_async(void* dst, int dst_device, const void* src, int src_device,
                       std::size_t bytes, stream& s) {
    LRIS_EXPECTS(dst_device >= 0 && dst_device < devices && src_device >= 0 &&
                     src_device < devices,
                 "host_backend::copy_peer_async: device {} -> {}: the host backend has {} devices",
                 src_device, dst_device, devices);
    copy_async(dst, src, bytes, copy_kind::device_to_device, s);
  }
  /// @brief Every device of the host backend reaches every other's memory.
  [[nodiscard]] bool enable_peer_access(int peer) const noexcept {
    return peer >= 0 && peer < devices;
  }
  /// @brief Queues every copy of `items` on `s`, spread over the copy engine's threads.
  void copy_batch_async(const copy_item* items, std::size_t count, stream& s) {
    LRIS_EXPECTS(count == 0 || items != nullptr, "host_backend::copy_batch_async: null items");
    submit(s, [items, count] {
      const auto pool_owner = detail::default_thread_pool();
      auto& pool = *pool_owner;
      detail::parallel_for(pool, count, pool.size() + 1, [items](std::size_t i) {
        std::memcpy(items[i].dst, items[i].src, items[i].bytes);
      });
    });
  }
  /// @brief Queues on `s` the conversion of `count` elements of `from` at `src` into `to` at
  /// `dst` (lris::convert).
  /// @throws lris::unsupported now when lris::can_convert(from, to) is false.
  void convert_async(void* dst, dtype to, const void* src, dtype from, std::size_t count,
                     stream& s) {
    if (!can_convert(from, to)) convert(src, from, dst, to, 0);  // throws, naming both
    LRIS_EXPECTS(count == 0 || (dst != nullptr && src != nullptr),
                 "host_backend::convert_async: null pointer (dst {}, src {}, {} elements)", dst,
                 src, count);
    submit(s, [=] { convert(src, from, dst, to, count); });
  }
  /// @brief Marks the point `s` has reached. In a capture it only orders the capture's work
  /// (a stream that waits for `e` joins the capture), as on a GPU.
  void record(event& e, stream& s) {
    std::shared_ptr<detail::host_capture> c = capture_of(s);
    std::uint64_t target;
    {
      std::lock_guard lock(e.state_->mutex);
      e.state_->capture = c;
      if (c) return;
      target = ++e.state_->recorded;
    }
    queue(s).submit([st = e.state_, target] { st->complete(target); });
  }
  /// @brief Work queued on `s` after this call waits for `e`'s last record().
  /// @throws lris::invalid_argument, as a GPU's runtime would fail: a stream being captured
  /// waiting for an event recorded outside its capture, or any stream waiting for an event
  /// last recorded in a capture that has ended.
  void wait(stream& s, event& e) {
    std::shared_ptr<detail::host_capture> c = capture_of(s);
    std::shared_ptr<detail::host_capture> in;
    std::uint64_t target;
    {
      std::lock_guard lock(e.state_->mutex);
      in = e.state_->capture;
      target = e.state_->recorded;
    }
    if (in) {
      if (!in->is_open()) {
        throw invalid_argument("host_backend::wait: the event was last recorded in a capture "
                               "that has ended");
      }
      if (c && c != in) {
        throw invalid_argument("host_backend::wait: the event was recorded in another capture");
      }
      s.capture_ = std::move(in);  // joins it (or is in it already): ordered by the capture
      return;
    }
    if (c) {
      throw invalid_argument("host_backend::wait: a stream being captured cannot wait for an "
                             "event recorded outside the capture");
    }
    queue(s).submit([st = e.state_, target] { st->wait_for(target); });
  }
  /// @brief Work queued on `s` after this call waits until the word at `flag` is nonzero
  /// (set with an atomic store; a notify wakes the stream at once, else it polls).
  void wait_flag(stream& s, const std::uint32_t* flag) {
    LRIS_EXPECTS(flag != nullptr, "host_backend::wait_flag: null flag");
    submit(s, [flag] {
      std::atomic_ref<std::uint32_t> word(*const_cast<std::uint32_t*>(flag));
      while (word.load(std::memory_order_acquire) == 0) word.wait(0, std::memory_order_acquire);
    });
  }
  /// @throws lris::invalid_argument for a stream being captured (nothing of it runs).
  void synchronize(stream& s) {
    if (capture_of(s)) {
      throw invalid_argument("host_backend::synchronize: the stream is being captured");
    }
    queue(s).drain();
  }
  /// @throws lris::invalid_argument for an event last recorded in a capture.
  void synchronize(event& e) {
    std::uint64_t target;
    {
      std::lock_guard lock(e.state_->mutex);
      not_captured(*e.state_, "synchronize");
      target = e.state_->recorded;
    }
    e.state_->wait_for(target);
  }
  /// @throws lris::invalid_argument for an event last recorded in a capture.
  [[nodiscard]] bool query(event& e) {
    std::lock_guard lock(e.state_->mutex);
    not_captured(*e.state_, "query");
    return e.state_->completed >= e.state_->recorded;
  }
  void host_callback(stream& s, host_callback_fn fn, void* user) {
    submit(s, [fn, user] { fn(user); });
  }

  // ---- graphs -------------------------------------------------------------------------------
  /// @brief Work queued on `s` from now on, and on the streams that join by waiting for an
  /// event recorded in the capture, is kept for a graph instead of run.
  /// @throws lris::invalid_argument when `s` is being captured already.
  void begin_capture(stream& s) {
    if (capture_of(s)) {
      throw invalid_argument("host_backend::begin_capture: the stream is being captured already");
    }
    s.capture_ = std::make_shared<detail::host_capture>();
    s.capture_->origin = &queue(s);
  }
  /// @brief The work captured since begin_capture(s).
  /// @throws lris::invalid_argument when `s` did not begin a capture.
  [[nodiscard]] graph end_capture(stream& s) {
    std::shared_ptr<detail::host_capture> c = capture_of(s);
    if (!c || c->origin != &queue(s)) {
      throw invalid_argument("host_backend::end_capture: the stream did not begin a capture");
    }
    graph g;
    {
      std::lock_guard lock(c->mutex);
      c->open = false;
      g.tasks_ = std::make_shared<const std::vector<std::function<void()>>>(std::move(c->tasks));
    }
    s.capture_.reset();
    return g;
  }
  /// @brief Queues `g`'s work on `s`, one task running it all in order.
  void launch(graph& g, stream& s) {
    LRIS_EXPECTS(g.tasks_ != nullptr, "host_backend::launch: a moved-from or empty graph");
    submit(s, [tasks = g.tasks_] {
      for (const auto& t : *tasks) t();
    });
  }

 private:
  // The open capture `s` is in, if any (it leaves one that has closed).
  static std::shared_ptr<detail::host_capture> capture_of(stream& s) {
    if (s.capture_ && !s.capture_->is_open()) s.capture_.reset();
    return s.capture_;
  }
  static void not_captured(detail::host_event_state& st, const char* what) {
    if (st.capture) {
      throw invalid_argument(fmt::format("host_backend::{}: the event was last recorded in a "
                                         "capture", what));
    }
  }
  // Runs `task` in `s`'s order, or keeps it for the graph when `s` is being captured.
  static void submit(stream& s, std::function<void()> task) {
    if (auto c = capture_of(s)) {
      c->add(std::move(task));
      return;
    }
    queue(s).submit(std::move(task));
  }
  static detail::serial_queue& queue(stream& s) {
    LRIS_EXPECTS(s.queue_ != nullptr, "host_backend: use of a moved-from stream");
    return *s.queue_;
  }
  static void* aligned(std::size_t bytes, std::size_t alignment, const char* what) {
    const std::size_t rounded = (std::max<std::size_t>(bytes, 1) + alignment - 1) & ~(alignment - 1);
    if (rounded < bytes) {
      throw out_of_memory(fmt::format("host_backend: cannot allocate {} bytes of {} memory "
                                      "(size overflows)", bytes, what), bytes);
    }
    void* p = std::aligned_alloc(alignment, rounded);
    if (p == nullptr) {
      throw out_of_memory(fmt::format("host_backend: cannot allocate {} bytes of {} memory",
                                      bytes, what), bytes);
    }
    return p;
  }

  int device_ = 0;
};

static_assert(backend_policy<host_backend>);
static_assert(batch_backend<host_backend>);
static_assert(convert_backend<host_backend>);
static_assert(stream_ordered_backend<host_backend>);
static_assert(flag_wait_backend<host_backend>);
static_assert(graph_backend<host_backend>);

}  // namespace lris
