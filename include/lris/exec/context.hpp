#pragma once
/// @file
/// @brief lris::context: what the transfers of a process share, and who owns it.
///
/// A context owns the threads that move bytes (compute lanes by priority, blocking io apart),
/// the bandwidth broker whose tokens every chunk takes, the calibrated profiles, the driver's
/// link counters (NVML, loaded on first use) and a registry of objects made once per context:
/// the pinned staging rings and io engines that its pipelines share (exec::staging_of) and the
/// default pipelines of lris::copy. Pipelines hang off a context; nothing else in LRIS is
/// process-wide, apart from facts that are process-wide by nature (which host memory is
/// registered, a GPU context lost to a sticky error).
///
/// There is one settable default per process (default_context()), shared even by shared
/// objects that each link LRIS statically. Destroying a context with work in flight is safe:
/// pipelines and their transfers keep it alive, and its threads finish what was queued before
/// they stop. In the child of a fork() a context made before the fork throws lris::error on
/// use, naming both processes; default_context() there makes a new one.

#include <condition_variable>
#include <cstddef>
#include <thread>
#include <vector>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <typeindex>
#include <utility>

#include <lris/config.hpp>
#include <lris/detail/fork_guard.hpp>
#include <lris/detail/thread_pool.hpp>
#include <lris/exec/profile.hpp>
#include <lris/sched/nvml_pcie.hpp>
#include <lris/sched/bandwidth_broker.hpp>

namespace lris {

struct context_options {
  /// Threads of the compute lanes (CPU copies, DMA issue, checksums); 0: usable_cpus(), the
  /// CPUs this process may use (affinity mask and cgroup quota), not the machine's.
  unsigned threads = 0;
  /// At most this many compute threads run background work at once; 0: half of them.
  unsigned background_threads = 0;
  /// Threads for blocking io (reads and writes that wait on a disk); 0: twice `threads`, at
  /// least 8, since each mostly waits.
  unsigned io_threads = 0;
  /// The bandwidth broker's settings. Ceilings it is not given come from the calibrated
  /// profile of each resource's backend.
  sched::broker_options broker = {};
  /// The calibrated profiles' file; empty: default_profile_path().
  std::filesystem::path profile_path = {};
};

class context {
 public:
  /// @brief A new context. Its threads start now, so that a first transfer does not wait for
  /// them.
  /// @throws lris::invalid_argument for bad broker options.
  [[nodiscard]] static std::shared_ptr<context> make(context_options options = {});

  context(const context&) = delete;
  context& operator=(const context&) = delete;
  /// @brief Lets go of the registry's objects, then finishes every task queued on its threads
  /// and joins them, then stops the broker. Never runs on one of its own threads: a last
  /// reference dropped there hands the destruction to a thread of its own.
  ~context();

  /// @brief Threads for CPU work: critical work first, background work on at most
  /// options().background_threads of them at once.
  [[nodiscard]] detail::thread_pool& compute() { return *compute_; }
  /// @brief Threads for work that blocks on io.
  [[nodiscard]] detail::thread_pool& io() { return *io_; }
  /// @brief The bandwidth broker of this context's pipelines.
  [[nodiscard]] const std::shared_ptr<sched::bandwidth_broker>& broker() const noexcept {
    return broker_;
  }
  /// @brief The driver's PCIe counters (NVML), loaded on first get().
  [[nodiscard]] const std::shared_ptr<sched::lazy_nvml_pcie>& nvml() const noexcept {
    return nvml_;
  }
  /// @brief The calibrated profile of `backend` ("host:0", "cuda:1"), read once.
  /// @throws lris::format_error naming the file and key for a malformed profile file.
  [[nodiscard]] const transfer_profile& profile(std::string_view backend);
  /// @brief The calibrated cold-read method of storage device `disk` ("disk 259:1"), read
  /// once.
  /// @throws lris::format_error naming the file and key for a malformed profile file.
  [[nodiscard]] const disk_profile& storage_profile(std::string_view disk);
  [[nodiscard]] const context_options& options() const noexcept { return options_; }

  /// @brief The object of type T this context keeps under `key`, made by `make()` (returning a
  /// std::unique_ptr<T>) on first use. It lives until the context is destroyed. An object
  /// that must refer back to the context gets a non-owning pointer to it (unowned()). `make`
  /// may itself ask for other objects of the registry.
  template <class T, class Make>
  [[nodiscard]] T& cached(int key, Make&& make) {
    check_process();
    std::lock_guard lock(registry_mutex_);
    auto& slot = registry_[{std::type_index(typeid(T)), key}];
    if (!slot) {
      std::unique_ptr<T> made = make();
      slot = std::shared_ptr<void>(made.release(), [](void* p) { delete static_cast<T*>(p); });
    }
    return *static_cast<T*>(slot.get());
  }

  /// @brief A non-owning pointer to this context, for objects it owns (the registry's).
  [[nodiscard]] std::shared_ptr<context> unowned() noexcept {
    return std::shared_ptr<context>(std::shared_ptr<void>(), this);
  }

  /// @brief Runs `then` on a compute thread once `ready()` is true: a poller thread of the
  /// context (started on first use) asks every pending `ready` in turn, spinning briefly, then
  /// sleeping for tens of microseconds while nothing is ready. For work that ends on a device
  /// and has callbacks to run (transfer::on_complete). A context destroyed with work pending
  /// runs each `then` on the destroying thread.
  void when_ready(std::function<bool()> ready, std::function<void()> then);

  /// @brief Throws lris::error in the child of a fork() made after this context.
  void check_process() const { fork_.check("this lris::context"); }

 private:
  explicit context(context_options options);
  double ceiling(std::string_view resource);

  context_options options_;
  detail::fork_guard fork_;
  std::mutex profiles_mutex_;
  std::map<std::string, transfer_profile, std::less<>> profiles_;
  std::map<std::string, disk_profile, std::less<>> disk_profiles_;
  std::shared_ptr<sched::lazy_nvml_pcie> nvml_;
  std::shared_ptr<sched::bandwidth_broker> broker_;
  std::unique_ptr<detail::thread_pool> io_;
  std::unique_ptr<detail::thread_pool> compute_;
  void poll();
  [[nodiscard]] bool on_poller_thread() {
    std::lock_guard lock(watch_mutex_);
    return poller_.joinable() && poller_.get_id() == std::this_thread::get_id();
  }
  std::mutex watch_mutex_;
  std::condition_variable watch_cv_;
  std::vector<std::pair<std::function<bool()>, std::function<void()>>> watched_;
  bool watch_stop_ = false;
  std::thread poller_;
  // Recursive: an object made for the registry may ask for others (a default pipeline for its
  // staging).
  std::recursive_mutex registry_mutex_;
  std::map<std::pair<std::type_index, int>, std::shared_ptr<void>> registry_;
};

/// @brief Shared ownership of a context, as pipelines and their transfers hold it.
using context_ptr = std::shared_ptr<context>;

/// @brief The process's default context, made on first use (and made anew in the child of a
/// fork()). Every pipeline that names no context uses it. One per process, also when LRIS is
/// linked statically into several shared objects (the storage is one symbol, unique process
/// wide with GCC's STB_GNU_UNIQUE binding). The first default is never destroyed: transfers may
/// still run while static objects go away at exit.
[[nodiscard]] LRIS_EXPORT std::shared_ptr<context> default_context();

/// @brief Makes `c` the default for pipelines made from now on, and returns the previous one
/// (pipelines made earlier keep theirs). Null restores a fresh default on next use. Keep the
/// previous one while transfers started through its default pipelines (lris::copy) may still
/// run or call back.
LRIS_EXPORT std::shared_ptr<context> set_default_context(std::shared_ptr<context> c);

namespace detail {
/// @brief Where the default lives: an inline function's static, which GCC gives one address in
/// the whole process (STB_GNU_UNIQUE) even across shared objects loaded with RTLD_LOCAL.
struct default_context_slot {
  std::mutex mutex;
  std::shared_ptr<context> current;
  std::uint64_t generation = 0;  // fork_generation() when `current` was made
};
[[nodiscard]] LRIS_EXPORT inline default_context_slot& default_slot() {
  static default_context_slot* slot = new default_context_slot;  // never destroyed
  return *slot;
}
}  // namespace detail

}  // namespace lris
