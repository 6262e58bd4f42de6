#pragma once
/// @file
/// @brief host_pool: one copy of a model's tensors in host memory that every process on the
/// machine shares (a POSIX shared-memory segment, /dev/shm/lris-pool-<name>), placed on a
/// chosen NUMA node (a CXL memory expander is a NUMA node without CPUs), filled once and found
/// by name by every later process without touching the disk.
///
/// A tensor is claimed by the process that fills it, then published: its checksum (the LRIS
/// block checksum) is computed over the bytes in place and only then is it marked ready, so a
/// reader never sees a partial tensor. A filler that dies leaves its claims to the next process
/// that claims them (processes are told apart by pid and start time, as the shared semaphore
/// does). Each attached process is counted; the segment goes when the last one leaves, unless
/// the pool was made persistent (then host_pool::drop removes it).
///
/// Layout of the segment: a header (a robust process-shared mutex, sizes, the attached
/// processes), a directory of tensors, then the data, 2 MiB aligned. Tensors are placed one after
/// another (4 KiB aligned) and never moved; the pool does not reuse the room of a tensor.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <lris/element/dtype.hpp>

namespace lris::pool {

struct pool_options {
  /// The NUMA node the data lives on; -1: wherever the kernel places pages (first touch).
  int numa_node = -1;
  /// Entries of the directory: the most tensors the pool can hold.
  std::uint32_t max_tensors = 16384;
  /// Kept when the last process leaves, until host_pool::drop (`lris pool create`).
  bool persistent = false;
};

/// @brief A ready tensor of a pool: its bytes stay valid while the host_pool that gave it does.
struct pool_tensor {
  std::string_view name;
  dtype type = dtype::U8;
  std::vector<std::uint64_t> shape;
  const std::byte* data = nullptr;
  std::uint64_t bytes = 0;
  std::uint64_t offset = 0;    ///< in the pool's data
  std::uint64_t checksum = 0;  ///< LRIS block checksum, default block, seed 0
};

/// @brief What a pool holds, as host_pool::list() and info() tell it.
struct pool_info {
  std::string name;
  std::uint64_t data_bytes = 0;  ///< capacity
  std::uint64_t used_bytes = 0;  ///< placed so far
  std::uint32_t tensors = 0;     ///< ready
  std::uint32_t filling = 0;     ///< claimed, not published (by a live or a dead process)
  std::uint32_t users = 0;       ///< attached processes still alive
  int numa_node = -1;            ///< asked for; -1: none
  bool numa_bound = false;       ///< the data's pages are bound to it
  std::string numa_note;         ///< why not, when asked for and not bound
  bool persistent = false;
  std::uint64_t generation = 0;  ///< publications so far
};

/// @brief A tensor claimed for filling: write `bytes` bytes at `data`, then publish() it.
struct pool_claim {
  enum class state {
    claimed,  ///< this process fills it now (new, or taken over from a dead filler)
    ready,    ///< published already: find() has it
    busy,     ///< a live process fills it now
  };
  state what = state::busy;
  std::uint32_t index = 0;
  std::byte* data = nullptr;
  std::uint64_t bytes = 0;
  bool taken_over = false;  ///< claimed from a filler that died
};

class host_pool {
 public:
  /// @brief Makes the pool called `name` (letters, digits, '-', '_', '.') with `data_bytes` of
  /// room for tensors, and attaches to it.
  /// @throws lris::invalid_argument for a bad name, a size of 0, or a NUMA node that does not
  /// exist; lris::io_error (EEXIST) when a pool of that name exists, or naming what failed.
  static host_pool create(const std::string& name, std::uint64_t data_bytes,
                          pool_options options = {});
  /// @brief Attaches to the pool called `name`.
  /// @throws lris::io_error (ENOENT) when there is none; lris::format_error when the segment
  /// is not a pool of this version, or its creator died before finishing it.
  static host_pool attach(const std::string& name);
  /// @brief attach(name), or create(name, ...) when there is none: the first of several
  /// processes makes it, the others attach.
  static host_pool open(const std::string& name, std::uint64_t data_bytes,
                        pool_options options = {});
  /// @brief Removes the pool's name: processes attached keep using it, new ones do not find
  /// it; its memory goes when the last of them leaves. False when there was none.
  static bool drop(const std::string& name);
  /// @brief The pools on this machine. A pool that is not persistent and whose processes all
  /// died without leaving it is dropped here, its memory freed.
  [[nodiscard]] static std::vector<pool_info> list();

  host_pool(host_pool&& o) noexcept;
  host_pool& operator=(host_pool&& o) noexcept;
  host_pool(const host_pool&) = delete;
  host_pool& operator=(const host_pool&) = delete;
  /// @brief Detaches; the last process to leave a pool that is not persistent removes it.
  ~host_pool();

  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] pool_info info();
  /// @brief The data region (its bytes may be registered with a GPU runtime for DMA).
  [[nodiscard]] std::byte* data() const noexcept;
  [[nodiscard]] std::uint64_t data_bytes() const noexcept;

  /// @brief The ready tensor called `name`, if there is one.
  [[nodiscard]] std::optional<pool_tensor> find(std::string_view name);
  /// @brief Every ready tensor, in the order they were claimed.
  [[nodiscard]] std::vector<pool_tensor> tensors();
  /// @brief Waits until `name` is ready, or no live process fills it, or `timeout` passes.
  [[nodiscard]] std::optional<pool_tensor> wait(std::string_view name,
                                                std::chrono::milliseconds timeout);

  /// @brief Claims tensor `name` (`type`, `shape`, `bytes`) for this process to fill. A
  /// tensor of that name must have the same type, shape and size.
  /// @throws lris::invalid_argument naming the tensor for a name longer than 255 bytes, more
  /// than 8 dimensions, or a tensor of that name that differs; lris::out_of_memory naming the
  /// pool, the tensor and the room left when it does not fit, or when the directory is full.
  pool_claim claim(std::string_view name, dtype type, std::span<const std::uint64_t> shape,
                   std::uint64_t bytes);
  /// @brief A tensor a fill would claim: its name and size.
  struct wanted {
    std::string_view name;
    std::uint64_t bytes = 0;
  };
  /// @brief Refuses, before anything is claimed, a fill the pool cannot take whole: the
  /// tensors of `tensors` it does not hold yet (claimed in this order) need more directory
  /// entries or data bytes than are left. `what` names the fill in the message. Another
  /// process may claim meanwhile: claim() still checks each tensor.
  /// @throws lris::out_of_memory naming the pool, what the fill needs and what is left.
  void check_room(std::span<const wanted> tensors, std::string_view what);
  /// @brief Computes the tensor's checksum and marks it ready. Returns the checksum.
  /// @throws lris::invalid_argument when `c` is not a claim of this process.
  std::uint64_t publish(const pool_claim& c);
  /// @brief Gives a claim up (a failed fill): the next claimer takes it over.
  void abandon(const pool_claim& c) noexcept;
  /// @brief The pool's registration lock, held while alive: registrations of the pool with a
  /// GPU runtime (pool_registration) take turns across processes, since concurrent ones of the
  /// same memory fail.
  class registration_lock {
   public:
    registration_lock(registration_lock&& o) noexcept : mutex_(std::exchange(o.mutex_, nullptr)) {}
    registration_lock& operator=(registration_lock&&) = delete;
    registration_lock(const registration_lock&) = delete;
    registration_lock& operator=(const registration_lock&) = delete;
    ~registration_lock();

   private:
    friend class host_pool;
    explicit registration_lock(void* mutex) noexcept : mutex_(mutex) {}
    void* mutex_;  // the pool's registration mutex (in its shared memory)
  };
  [[nodiscard]] registration_lock lock_registration();

  /// @brief Computes the checksum of ready tensor `name` again and compares.
  /// @throws lris::integrity_error naming the pool, tensor, offset and both checksums.
  void verify(std::string_view name);

 private:
  struct header;
  struct entry;
  host_pool(std::string name, void* map, std::size_t map_bytes, bool attached, int fd);
  void lock();
  void unlock() noexcept;
  void detach() noexcept;
  [[nodiscard]] entry* entries() const noexcept;
  [[nodiscard]] pool_tensor view(const entry& e) const;
  std::optional<std::uint32_t> lookup(std::string_view name);

  std::string name_;
  void* map_ = nullptr;
  std::size_t map_bytes_ = 0;
  bool attached_ = false;  // counted among the pool's users (not so for list()'s look)
  int fd_ = -1;            // the segment, to tell whether its name still names it
  // This process's index of the directory (name -> entry), caught up as entries are added.
  std::unique_ptr<std::mutex> index_mutex_ = std::make_unique<std::mutex>();
  std::unordered_map<std::string, std::uint32_t> index_;
  std::uint32_t indexed_ = 0;
};

}  // namespace lris::pool
