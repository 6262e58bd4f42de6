#pragma once
/// @file
/// @brief residency_manager: units of tensors (layers, blocks, experts) kept in pinned host
/// memory, brought into one device's memory on demand under a hard byte budget, and evicted by
/// a policy; kernels use a unit through a lease that orders their stream after its copy.
///
/// The whole budget is allocated when the manager is made (one block of device memory) and
/// units are placed in it (cache::range_allocator): nothing is allocated on the device after
/// that. A unit's bytes are copied into pinned host memory once, when it is added, and the
/// caller's memory is not kept. acquire() makes the caller's stream wait for the unit's copy
/// (an event, never a host synchronization); release() records the stream's last use, and a
/// unit evicted later is overwritten only after every use released so far. A leased unit is
/// never evicted. With a declared order, each acquire brings in the units that follow it, up
/// to a lookahead in bytes. sleep() gives the device memory back and wake() copies the resident
/// units back.
///
/// Threads: acquire() queues its unit's copies on the caller's thread (and reads a unit kept
/// in files there). What a prefetch cannot queue at once (the link's tokens are busy) and the
/// reads of units kept in files that come ahead go to the manager's prefetch thread, started
/// when first needed and joined when the manager goes; it takes the manager's lock only to
/// queue copies, never while it reads.

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <concepts>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <lris/cache/belady.hpp>
#include <lris/cache/captured_pass.hpp>
#include <lris/cache/eviction_policy.hpp>
#include <lris/cache/range_allocator.hpp>
#include <lris/cache/simulate.hpp>
#include <lris/cache/static_priority.hpp>
#include <lris/concepts/backend_policy.hpp>
#include <lris/concepts/copy_item.hpp>
#include <lris/concepts/graph_backend.hpp>
#include <lris/error.hpp>
#include <lris/io/engine.hpp>
#include <lris/io/file.hpp>
#include <lris/pool/far_memory.hpp>
#include <lris/priority.hpp>
#include <lris/sched/bandwidth_broker.hpp>

namespace lris::cache {

/// @brief A tensor of a unit as it is added: its name and its bytes in host memory (copied).
struct unit_tensor {
  std::string name;
  std::span<const std::byte> bytes;
};

/// @brief A tensor of a unit whose bytes stay in a file, read each time the unit comes in (for
/// models bigger than host memory): `bytes` bytes at `offset` of `path`.
struct file_tensor {
  std::string name;
  std::filesystem::path path;
  std::uint64_t offset = 0;
  std::uint64_t bytes = 0;
};

/// @brief A tensor of a unit whose bytes stay in host memory the caller keeps: `bytes` bytes at
/// `offset` of the unit's block.
struct placed_tensor {
  std::string name;
  std::uint64_t offset = 0;
  std::uint64_t bytes = 0;
};

struct residency_options {
  /// Device bytes for resident units and units being brought in, together; all allocated
  /// when the manager is made.
  std::uint64_t budget_bytes = 0;
  /// Every tensor's place on the device is aligned to this (a power of two).
  std::size_t alignment = 256;
  /// Copies take tokens of the device's host-to-device link from this broker (a context's:
  /// `lris::default_context()->broker()`): a demand fetch at critical priority, waiting for
  /// them; a prefetch at `prefetch_priority` only if they are free now (else its place is
  /// kept and its copies are left for a later acquire), so that it never delays a demand fetch
  /// or another process's critical transfer. Null: copies take no tokens.
  std::shared_ptr<sched::bandwidth_broker> broker = nullptr;
  priority prefetch_priority = priority::background;
  /// With a broker, copies go in pieces of at most this many bytes, each under its own tokens:
  /// a prefetch holds the link for one piece at a time, and a unit larger than the link's
  /// tokens still comes in ahead, piece by piece, as tokens free up.
  std::uint64_t piece_bytes = std::uint64_t{8} << 20;
  /// Times each acquire's wait for its unit's copy with events (residency_stats::stall_seconds).
  bool time_stalls = true;
  /// Pinned host memory through which units read from files come in: two slots of half this,
  /// taken when the first such unit is added. A slot is read whole (one large read), then
  /// copied in pieces; one slot is read while the other's copies run.
  std::uint64_t file_staging_bytes = std::uint64_t{128} << 20;
  /// Reads of units kept in files go through this engine (O_DIRECT for data not in the page
  /// cache, many operations in flight); null: the manager makes one with io_options{} when the
  /// first such unit is added.
  std::shared_ptr<io::io_engine> io = nullptr;
  /// The latest acquires kept for belady_hit_bytes() to replay (older ones are dropped, half
  /// of them at a time, so that a long-running process does not grow).
  std::size_t history = std::size_t{1} << 20;
};

/// @brief What a manager did since it was made.
struct residency_stats {
  std::uint64_t acquires = 0;
  std::uint64_t hit_bytes = 0;         ///< acquired while kept resident: not moved for it
  std::uint64_t miss_bytes = 0;        ///< brought in by an acquire (the stream waits)
  std::uint64_t prefetched_bytes = 0;  ///< brought in ahead of the declared order
  std::uint64_t prefetch_hit_bytes = 0;  ///< acquired after coming in ahead (moved, in time
                                         ///< or not: streamed bytes are miss + prefetched)
  std::uint64_t evictions = 0;
  std::uint64_t evicted_bytes = 0;
  std::uint64_t high_water_bytes = 0;  ///< most device bytes placed at once
  std::uint64_t budget_bytes = 0;
  std::uint64_t pinned_host_bytes = 0;  ///< pinned host memory holding the units
  std::uint64_t sleeps = 0;
  std::uint64_t woken_bytes = 0;        ///< copied back by wake()
  std::uint64_t file_read_bytes = 0;    ///< read from files (or far memory) for units kept there
  /// Time spent reading them, summed over the threads that read (acquiring threads and the
  /// prefetch thread): file_read_bytes / file_read_seconds is the rate the reads ran at.
  double file_read_seconds = 0;
  /// Time the acquiring streams waited for units' copies, timed by events on the device:
  /// summed over acquires, counting those whose copies have completed.
  double stall_seconds = 0;
  std::uint64_t stalls = 0;  ///< acquires that waited for a copy
  std::uint64_t replays = 0;        ///< captured passes launched by replay()
  std::uint64_t replayed_bytes = 0;  ///< copied to the device by them (not in the counts above)
};

/// @brief What one unit went through.
struct unit_stats {
  std::uint64_t acquires = 0;
  std::uint64_t hit_bytes = 0;
  std::uint64_t prefetch_hit_bytes = 0;
  std::uint64_t miss_bytes = 0;
  std::uint64_t evictions = 0;
  double stall_seconds = 0;
  std::uint64_t stalls = 0;
};

/// @brief What happened between two snapshots `before` and `after` (a pass): counters are
/// differences; the budget, high-water mark and pinned bytes are `after`'s.
[[nodiscard]] inline residency_stats operator-(const residency_stats& after,
                                               const residency_stats& before) {
  residency_stats d = after;
  d.acquires -= before.acquires;
  d.hit_bytes -= before.hit_bytes;
  d.miss_bytes -= before.miss_bytes;
  d.prefetched_bytes -= before.prefetched_bytes;
  d.prefetch_hit_bytes -= before.prefetch_hit_bytes;
  d.evictions -= before.evictions;
  d.evicted_bytes -= before.evicted_bytes;
  d.sleeps -= before.sleeps;
  d.woken_bytes -= before.woken_bytes;
  d.file_read_bytes -= before.file_read_bytes;
  d.file_read_seconds -= before.file_read_seconds;
  d.stall_seconds -= before.stall_seconds;
  d.stalls -= before.stalls;
  d.replays -= before.replays;
  d.replayed_bytes -= before.replayed_bytes;
  return d;
}

/// @brief `s` as a JSON object, one key per field.
[[nodiscard]] inline std::string to_json(const residency_stats& s) {
  return fmt::format(
      "{{\"acquires\": {}, \"hit_bytes\": {}, \"miss_bytes\": {}, \"prefetched_bytes\": {}, "
      "\"prefetch_hit_bytes\": {}, \"evictions\": {}, \"evicted_bytes\": {}, "
      "\"high_water_bytes\": {}, \"budget_bytes\": {}, \"pinned_host_bytes\": {}, "
      "\"sleeps\": {}, \"woken_bytes\": {}, \"file_read_bytes\": {}, "
      "\"file_read_seconds\": {:.6f}, \"stall_seconds\": {:.6f}, \"stalls\": {}, "
      "\"replays\": {}, \"replayed_bytes\": {}}}",
      s.acquires, s.hit_bytes, s.miss_bytes, s.prefetched_bytes, s.prefetch_hit_bytes,
      s.evictions, s.evicted_bytes, s.high_water_bytes, s.budget_bytes, s.pinned_host_bytes,
      s.sleeps, s.woken_bytes, s.file_read_bytes, s.file_read_seconds, s.stall_seconds,
      s.stalls, s.replays, s.replayed_bytes);
}

template <backend_policy Backend, eviction_policy Policy = static_priority>
class residency_manager {
  using stream_type = typename Backend::stream;
  using event_type = typename Backend::event;

  struct unit_state {
    std::string name;
    std::vector<std::string> tensor_names;
    std::vector<std::uint64_t> offsets;  // of each tensor within the unit
    std::uint64_t bytes = 0;
    std::byte* host = nullptr;           // pinned; null for a unit kept in files
    bool external = false;               // `host` is the caller's (a host pool's): not freed
    struct source {                      // where a unit kept in files has its bytes
      std::size_t file;                  // in files_ (unless `far`)
      std::uint64_t file_offset, unit_offset, bytes;
      std::size_t tensor;
      pool::far_memory* far = nullptr;   // read from far memory at file_offset instead
    };
    std::vector<source> sources;
    std::uint64_t offset = 0;            // in the arena, while resident
    bool resident = false;
    bool pinned = false;
    bool prefetched = false;             // brought in ahead and not acquired since
    std::uint64_t queued = 0;            // bytes whose copies are queued, this residency
    std::uint64_t ahead = 0;             // of which queued ahead (by prefetch)
    unsigned leases = 0;
    std::shared_ptr<event_type> ready;   // after its last piece; new each residency
    std::vector<event_type> last_uses;   // released since it came in
    unit_stats stats;
  };
  // An acquiring stream's wait, to be timed once both events have completed.
  struct stall_probe {
    unit_id unit;
    event_type acquired;                 // on the acquiring stream, before its wait
    std::shared_ptr<event_type> ready;
  };
  static constexpr bool timed =
      requires(Backend b, event_type e) {
        { b.make_timed_event() } -> std::same_as<event_type>;
        { b.elapsed_seconds(e, e) } -> std::convertible_to<double>;
      };

 public:
  /// @brief A unit in device memory for as long as it is held; move-only. Release it with
  /// residency_manager::release() on the last stream that uses it.
  class lease {
   public:
    lease() = default;
    lease(lease&& o) noexcept : m_(std::exchange(o.m_, nullptr)), unit_(o.unit_) {}
    lease& operator=(lease&& o) noexcept {
      if (this != &o) {
        m_ = std::exchange(o.m_, nullptr);
        unit_ = o.unit_;
      }
      return *this;
    }
    lease(const lease&) = delete;
    lease& operator=(const lease&) = delete;
    /// @brief A lease dropped without release() keeps its unit resident (never evicted) until
    /// the manager goes: nothing tells when its last use ends.
    ~lease() = default;

    [[nodiscard]] bool held() const noexcept { return m_ != nullptr; }
    [[nodiscard]] unit_id unit() const noexcept { return unit_; }
    /// @brief The device address of tensor `i` of the unit.
    /// @throws lris::invalid_argument after release, or for a tensor the unit does not have.
    [[nodiscard]] std::byte* tensor(std::size_t i) const {
      check("tensor()");
      return m_->tensor_address(unit_, i);
    }
    /// @brief The device address of the tensor called `name`.
    [[nodiscard]] std::byte* tensor(std::string_view name) const {
      check("tensor()");
      return m_->tensor_address(unit_, m_->tensor_index(unit_, name));
    }

   private:
    friend class residency_manager;
    lease(residency_manager* m, unit_id u) : m_(m), unit_(u) {}
    void check(const char* what) const {
      if (m_ == nullptr) {
        throw invalid_argument(fmt::format("residency lease of unit {}: {} on a lease that was "
                                           "released (or moved from)", unit_, what));
      }
    }
    residency_manager* m_ = nullptr;
    unit_id unit_ = 0;
  };

  /// @brief Takes `options.budget_bytes` of `backend`'s device memory now.
  /// @throws lris::invalid_argument for a budget of less than one aligned range, or an
  /// alignment not a power of two; lris::out_of_memory when the device cannot give the budget.
  residency_manager(Backend backend, residency_options options, Policy policy = {})
      : be_(std::move(backend)), opt_(options), policy_(std::move(policy)),
        ranges_(options.budget_bytes, options.alignment), copy_(be_.make_stream()) {
    if (ranges_.capacity() == 0) {
      throw invalid_argument(fmt::format(
          "residency_manager: the budget is {} bytes{}", options.budget_bytes,
          options.budget_bytes == 0 ? std::string()
                                    : fmt::format(", less than one range of the alignment, {}",
                                                  options.alignment)));
    }
    arena_ = static_cast<std::byte*>(be_.allocate_device(ranges_.capacity()));
    stats_.budget_bytes = ranges_.capacity();
    policy_.reset(0);
    if (opt_.broker) {
      link_ = opt_.broker->resource(
          sched::link_resource(fmt::format("{}:{}", Backend::name, be_.device()), true));
      // A piece fits the link's tokens with room for another in flight.
      piece_ = std::max<std::uint64_t>(
          1, std::min(opt_.piece_bytes == 0 ? ~std::uint64_t{0} : opt_.piece_bytes,
                      opt_.broker->capacity(link_) / 2));
    }
  }
  residency_manager(const residency_manager&) = delete;
  residency_manager& operator=(const residency_manager&) = delete;
  /// @brief Waits for the copies in flight, then frees the device and pinned memory. Work the
  /// callers queued on their streams with leases must have finished.
  ~residency_manager() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    more_.notify_all();
    if (worker_.joinable()) worker_.join();
    try {
      be_.synchronize(copy_);
    } catch (...) {  // a lost device: nothing left to wait for
    }
    for (auto& u : units_) {
      if (u.host != nullptr && !u.external) be_.deallocate_pinned(u.host, u.bytes == 0 ? 1 : u.bytes);
    }
    if (slot_bytes_ > 0) {
      opt_.io->unregister_memory(slots_io_);
      be_.deallocate_pinned(slots_, 2 * slot_bytes_);
    }
    if (arena_ != nullptr) be_.deallocate_device(arena_, ranges_.capacity());
  }

  /// @brief A unit being made: its pinned host block, laid out as the unit will be on the
  /// device, for the caller to fill (e.g. read from files straight into it) before add_unit().
  /// Move-only; a draft never added frees its block.
  class unit_draft {
   public:
    unit_draft(unit_draft&& o) noexcept
        : be_(o.be_), s_(std::move(o.s_)) { o.s_.host = nullptr; }
    unit_draft& operator=(unit_draft&&) = delete;
    unit_draft(const unit_draft&) = delete;
    unit_draft& operator=(const unit_draft&) = delete;
    ~unit_draft() {
      if (s_.host != nullptr) be_.deallocate_pinned(s_.host, s_.bytes == 0 ? 1 : s_.bytes);
    }
    [[nodiscard]] const std::string& name() const noexcept { return s_.name; }
    [[nodiscard]] std::size_t tensors() const noexcept { return s_.offsets.size(); }
    /// @brief Where tensor `i`'s bytes go (pinned host memory).
    [[nodiscard]] std::byte* tensor(std::size_t i) const { return s_.host + s_.offsets.at(i); }

   private:
    friend class residency_manager;
    unit_draft(Backend be, unit_state s) : be_(std::move(be)), s_(std::move(s)) {}
    Backend be_;
    unit_state s_;
  };

  /// @brief The size of one tensor of a unit to be made.
  struct tensor_size {
    std::string name;
    std::uint64_t bytes = 0;
  };

  /// @brief A unit of `tensors` (in that order, each aligned as the options say), its pinned
  /// block allocated and not yet filled; add_unit() makes it one of the manager's.
  /// @throws lris::invalid_argument when two tensors share a name or the unit is larger than
  /// the budget; lris::out_of_memory when pinned memory runs out.
  [[nodiscard]] unit_draft draft_unit(std::string name, std::span<const tensor_size> tensors) {
    unit_state u = layout(std::move(name), tensors);
    u.host = static_cast<std::byte*>(be_.allocate_pinned(u.bytes == 0 ? 1 : u.bytes));
    return unit_draft(be_, std::move(u));
  }

 private:
  // A unit's tensors laid out as they will be on the device, each aligned.
  unit_state layout(std::string name, std::span<const tensor_size> tensors) const {
    unit_state u;
    u.name = std::move(name);
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      for (std::size_t j = 0; j < i; ++j) {
        if (tensors[j].name == tensors[i].name) {
          throw invalid_argument(fmt::format("residency_manager: unit \"{}\" has two tensors "
                                             "called \"{}\"", u.name, tensors[i].name));
        }
      }
      u.tensor_names.push_back(tensors[i].name);
      u.offsets.push_back(u.bytes);
      u.bytes += ranges_.rounded(tensors[i].bytes);
    }
    if (ranges_.rounded(u.bytes) > ranges_.capacity()) {
      throw invalid_argument(fmt::format("residency_manager: unit \"{}\" needs {} bytes, more "
                                         "than the budget of {} bytes", u.name, u.bytes,
                                         ranges_.capacity()));
    }
    return u;
  }
  std::size_t open_file(const std::filesystem::path& path) {
    for (std::size_t i = 0; i < files_.size(); ++i) {
      if (files_[i].path() == path) return i;
    }
    files_.emplace_back(path, io::open_mode::read);
    return files_.size() - 1;
  }

 public:

  /// @brief Makes `draft` (filled by the caller) a unit of the manager's.
  /// @throws lris::invalid_argument when a unit of its name exists (the draft is kept).
  unit_id add_unit(unit_draft&& draft) {
    std::lock_guard lock(mutex_);
    check_new_name(draft.s_.name);
    unit_state u = std::move(draft.s_);
    draft.s_.host = nullptr;
    stats_.pinned_host_bytes += u.bytes;
    units_.push_back(std::move(u));
    policy_.reset(units_.size());  // a policy learns units only as a whole
    return static_cast<unit_id>(units_.size() - 1);
  }

  /// @brief Registers a unit: its tensors are copied into pinned host memory (one block, laid
  /// out as they will be on the device), and the caller's memory is not kept.
  /// @throws as draft_unit() and add_unit(unit_draft&&) do.
  unit_id add_unit(std::string name, std::span<const unit_tensor> tensors) {
    std::vector<tensor_size> sizes;
    for (const auto& t : tensors) sizes.push_back({t.name, t.bytes.size()});
    unit_draft d = draft_unit(std::move(name), sizes);
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      if (!tensors[i].bytes.empty()) {
        std::memcpy(d.tensor(i), tensors[i].bytes.data(), tensors[i].bytes.size());
      }
    }
    return add_unit(std::move(d));
  }

  /// @brief Registers a unit whose bytes stay in host memory the caller keeps for as long as
  /// the manager lives (a host pool's: one copy for every process), `bytes` bytes at `host`
  /// laid out as the unit will be on the device: each tensor at its offset, a multiple of the
  /// alignment. Nothing is copied now, and the memory is not counted in pinned_host_bytes.
  /// Registered memory (pool_registration) is copied by DMA; pageable memory works, slower.
  /// @throws lris::invalid_argument naming the tensor for an offset not aligned or a tensor
  /// reaching past `bytes`, when two tensors share a name, a unit of the name exists, or the
  /// unit is larger than the budget.
  unit_id add_host_unit(std::string name, std::byte* host, std::uint64_t bytes,
                        std::span<const placed_tensor> tensors) {
    unit_state u;
    u.name = std::move(name);
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      const placed_tensor& t = tensors[i];
      if (t.offset % opt_.alignment != 0 || t.offset > bytes || t.bytes > bytes - t.offset) {
        throw invalid_argument(fmt::format(
            "residency_manager: unit \"{}\", tensor \"{}\": {} bytes at offset {} of a block of "
            "{} bytes ({})", u.name, t.name, t.bytes, t.offset, bytes,
            t.offset % opt_.alignment != 0
                ? fmt::format("the offset is not a multiple of the alignment, {}", opt_.alignment)
                : std::string("past its end")));
      }
      for (std::size_t j = 0; j < i; ++j) {
        if (tensors[j].name == t.name) {
          throw invalid_argument(fmt::format("residency_manager: unit \"{}\" has two tensors "
                                             "called \"{}\"", u.name, t.name));
        }
      }
      u.tensor_names.push_back(t.name);
      u.offsets.push_back(t.offset);
    }
    u.bytes = bytes;
    if (ranges_.rounded(u.bytes) > ranges_.capacity()) {
      throw invalid_argument(fmt::format("residency_manager: unit \"{}\" needs {} bytes, more "
                                         "than the budget of {} bytes", u.name, u.bytes,
                                         ranges_.capacity()));
    }
    u.host = host;
    u.external = true;
    std::lock_guard lock(mutex_);
    check_new_name(u.name);
    units_.push_back(std::move(u));
    policy_.reset(units_.size());
    return static_cast<unit_id>(units_.size() - 1);
  }

  /// @brief Registers a unit whose tensors stay in files (nothing is copied now, no pinned
  /// host memory is kept): each time it comes in, its bytes are read through pinned staging
  /// slots and copied to the device piece by piece.
  /// @throws lris::io_error naming the file when it cannot be opened; lris::invalid_argument
  /// when a tensor reaches past its file's end (naming both), two tensors share a name, a unit
  /// of the name exists, or the unit is larger than the budget; lris::out_of_memory when the
  /// staging slots cannot be pinned.
  unit_id add_file_unit(std::string name, std::span<const file_tensor> tensors) {
    unit_state u = layout_of(std::move(name), tensors);
    std::lock_guard lock(mutex_);
    check_new_name(u.name);
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      const std::size_t f = open_file(tensors[i].path);
      const std::uint64_t size = files_[f].size();
      if (tensors[i].offset > size || tensors[i].bytes > size - tensors[i].offset) {
        throw invalid_argument(fmt::format(
            "residency_manager: unit \"{}\", tensor \"{}\": {} bytes at offset {} reach past "
            "the end of {} ({} bytes)", u.name, tensors[i].name, tensors[i].bytes,
            tensors[i].offset, tensors[i].path.string(), size));
      }
      if (tensors[i].bytes > 0) {
        u.sources.push_back({f, tensors[i].offset, u.offsets[i], tensors[i].bytes, i});
      }
    }
    return add_staged_unit(std::move(u));
  }

  /// @brief Registers a unit whose tensors stay in far memory (pool::far_memory: memory behind
  /// a CXL link or a fabric, or host memory made to cost as much): each time it comes in, its
  /// bytes are read through `far` (its latency, cap and faults) into the pinned staging slots
  /// and copied to the device piece by piece, as a unit kept in files is. Each tensor's
  /// `offset` is in `far`'s region, which must outlive the manager.
  /// @throws lris::invalid_argument naming the tensor when it reaches past the region, when two
  /// tensors share a name, a unit of the name exists, or the unit is larger than the budget;
  /// lris::out_of_memory when the staging slots cannot be pinned.
  unit_id add_far_unit(std::string name, pool::far_memory& far,
                       std::span<const placed_tensor> tensors) {
    unit_state u = layout_of(std::move(name), tensors);
    std::lock_guard lock(mutex_);
    check_new_name(u.name);
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      if (tensors[i].offset > far.size() || tensors[i].bytes > far.size() - tensors[i].offset) {
        throw invalid_argument(fmt::format(
            "residency_manager: unit \"{}\", tensor \"{}\": {} bytes at offset {} reach past "
            "the end of the far memory ({} bytes)", u.name, tensors[i].name, tensors[i].bytes,
            tensors[i].offset, far.size()));
      }
      if (tensors[i].bytes > 0) {
        u.sources.push_back({0, tensors[i].offset, u.offsets[i], tensors[i].bytes, i, &far});
      }
    }
    return add_staged_unit(std::move(u));
  }

 private:
  // layout() of tensors given with their names and sizes (file_tensor, placed_tensor).
  template <class Tensor>
  unit_state layout_of(std::string name, std::span<const Tensor> tensors) const {
    std::vector<tensor_size> sizes;
    for (const auto& t : tensors) sizes.push_back({t.name, t.bytes});
    return layout(std::move(name), sizes);
  }
  // Under the lock: no unit of the manager's is called `name`.
  void check_new_name(const std::string& name) const {
    for (const auto& v : units_) {
      if (v.name == name) {
        throw invalid_argument(fmt::format("residency_manager: a unit called \"{}\" exists", name));
      }
    }
  }
  // A unit read through the staging slots (kept in files or far memory), its slots made with
  // the first one. Under the lock.
  unit_id add_staged_unit(unit_state u) {
    if (slot_bytes_ == 0) {
      if (!opt_.io) opt_.io = std::make_shared<io::io_engine>();
      // Whole pages, so that O_DIRECT reads land in the slots straight.
      slot_bytes_ = (std::max<std::uint64_t>(1, opt_.file_staging_bytes / 2) + 4095) &
                    ~std::uint64_t{4095};
      slots_ = static_cast<std::byte*>(be_.allocate_pinned(2 * slot_bytes_));
      slot_done_[0] = be_.make_event();
      slot_done_[1] = be_.make_event();
      slots_io_ = opt_.io->register_memory({slots_, 2 * slot_bytes_});
    }
    units_.push_back(std::move(u));
    policy_.reset(units_.size());
    return static_cast<unit_id>(units_.size() - 1);
  }

 public:

  /// @brief Keeps unit `u` resident once it is in: never a victim.
  void pin(unit_id u) {
    std::lock_guard lock(mutex_);
    state(u, "pin").pinned = true;
  }

  /// @brief Declares the order units are acquired in (a cycle when `cyclic`): each acquire of
  /// a unit in it brings in the units after it, up to `lookahead_bytes`. Replaces the last one.
  void declare_order(std::vector<unit_id> order, bool cyclic, std::uint64_t lookahead_bytes) {
    std::lock_guard lock(mutex_);
    for (const unit_id u : order) (void)state(u, "declare_order");
    order_ = std::move(order);
    cyclic_ = cyclic;
    lookahead_ = lookahead_bytes;
    position_.assign(units_.size(), no_position);
    for (std::size_t i = 0; i < order_.size(); ++i) {
      if (position_[order_[i]] == no_position) position_[order_[i]] = i;
    }
  }

  /// @brief Unit `u` in device memory for work queued on `s` from now on: `s` waits for its
  /// copy (an event). Brings it in where it is not resident, evicting unleased, unpinned units
  /// as the policy chooses.
  /// @throws lris::invalid_argument for an unknown unit; lris::out_of_memory naming the sizes
  /// when it cannot fit beside the units that are leased or pinned; lris::io_error naming the
  /// unit, tensor, offset and file when a unit kept in files cannot be read (it is left out).
  lease acquire(unit_id u, stream_type& s) { return acquire(u, s, {}); }

  /// @brief As acquire(u, s), and cancellable: `should_stop` is polled before each piece of
  /// the unit's copies and during its reads from files. True ends the acquire with
  /// lris::cancelled naming the unit, which is left out (its place is free again; copies
  /// queued already run first). A wait for the link's tokens is not cut short: tokens come
  /// back as the copies ahead finish. A stop during the prefetch that follows a successful
  /// acquire ends the prefetch (the units it had not brought are left out); the lease is
  /// returned. Units the prefetch thread brings (read from files, or waiting for tokens) are
  /// not this acquire's: the stop does not reach them.
  lease acquire(unit_id u, stream_type& s, std::function<bool()> should_stop) {
    std::lock_guard lock(mutex_);
    should_stop_ = std::move(should_stop);
    const struct clear_stop {
      std::function<bool()>& f;
      ~clear_stop() { f = nullptr; }
    } clear{should_stop_};
    unit_state& x = state(u, "acquire");
    if (arena_ == nullptr) {
      throw invalid_argument(fmt::format("residency_manager::acquire of unit \"{}\": the manager "
                                         "is asleep; wake() it first", x.name));
    }
    if (capturing_ && x.host == nullptr) {
      throw invalid_argument(fmt::format("residency_manager::acquire of unit \"{}\" in a "
                                         "captured pass: it is kept in files, and reads cannot "
                                         "be captured", x.name));
    }
    if (!capturing_) harvest_stalls();  // queries no event outside a capture in it
    ++stats_.acquires;
    ++x.stats.acquires;
    if (x.resident && !x.prefetched) {
      stats_.hit_bytes += x.bytes;
      x.stats.hit_bytes += x.bytes;
    } else {
      if (!x.resident) place(u, {});
      const std::uint64_t ahead = x.prefetched ? x.ahead : 0;  // came ahead; the rest now
      stats_.prefetch_hit_bytes += ahead;
      x.stats.prefetch_hit_bytes += ahead;
      stats_.miss_bytes += x.bytes - ahead;
      x.stats.miss_bytes += x.bytes - ahead;
      x.prefetched = false;
      try {
        queue_copies(u, priority::critical, true);
      } catch (...) {  // a file that cannot be read: the unit is not in
        evict(u);
        throw;
      }
    }
    policy_.on_access(u, tick_++);
    if (history_.size() >= std::max<std::size_t>(2, opt_.history)) {
      history_.erase(history_.begin(), history_.begin() + static_cast<std::ptrdiff_t>(history_.size() / 2));
    }
    history_.push_back(u);
    ++x.leases;
    if constexpr (timed) {
      if (opt_.time_stalls && !capturing_ && x.ready) {
        stall_probe probe{u, take_spare_timed(), x.ready};
        be_.record(probe.acquired, s);
        probes_.push_back(std::move(probe));
      }
    }
    if (x.ready) be_.wait(s, *x.ready);  // none: its copies completed before a capture
    prefetch_after(u);
    return lease(this, u);
  }

  /// @brief Ends `l`: the unit's use by work queued on `s` so far is its last, as far as this
  /// lease goes (an event recorded on `s`; an eviction waits for it before overwriting).
  /// @throws lris::invalid_argument for a lease already released, moved from, or of another
  /// manager.
  void release(lease&& l, stream_type& s) {
    if (l.m_ != this) {
      throw invalid_argument(fmt::format(
          "residency_manager: release of a lease of unit {} that {}", l.unit_,
          l.m_ == nullptr ? "was released already (or moved from)" : "another manager gave"));
    }
    std::lock_guard lock(mutex_);
    unit_state& x = units_[l.unit_];
    event_type e = spare_events_.empty() ? be_.make_event() : take_spare();
    be_.record(e, s);
    x.last_uses.push_back(std::move(e));
    --x.leases;
    l.m_ = nullptr;
  }

  /// @brief Gives the device memory back and keeps the units in pinned host memory: waits for
  /// every copy and released use, then frees the budget's block. Units resident now come back
  /// with wake(), in one pass of copies. acquire() meanwhile is an error.
  /// @throws lris::invalid_argument while a unit is leased, or when asleep already.
  void sleep() {
    std::lock_guard lock(mutex_);
    if (arena_ == nullptr) throw invalid_argument("residency_manager::sleep: asleep already");
    for (const auto& u : units_) {
      if (u.leases > 0) {
        throw invalid_argument(fmt::format("residency_manager::sleep: unit \"{}\" is leased ({} "
                                           "lease{})", u.name, u.leases, u.leases > 1 ? "s" : ""));
      }
    }
    be_.synchronize(copy_);
    harvest_stalls();
    for (unit_id v = 0; v < units_.size(); ++v) {
      if (units_[v].resident && units_[v].queued < units_[v].bytes) evict(v);  // half in
    }
    wait_all_uses();
    be_.deallocate_device(arena_, ranges_.capacity());
    arena_ = nullptr;
    ++stats_.sleeps;
  }

  /// @brief Takes the budget's device memory again and copies back every unit that was
  /// resident when sleep() was called, each to where it was; work queued on a stream after
  /// acquire() waits for its copy as ever.
  /// @throws lris::invalid_argument when awake; lris::out_of_memory when the device cannot
  /// give the budget (the manager stays asleep).
  void wake() {
    std::lock_guard lock(mutex_);
    if (arena_ != nullptr) throw invalid_argument("residency_manager::wake: awake already");
    arena_ = static_cast<std::byte*>(be_.allocate_device(ranges_.capacity()));
    std::exception_ptr failed;
    for (unit_id v = 0; v < units_.size(); ++v) {
      unit_state& u = units_[v];
      if (!u.resident) continue;
      if (u.host == nullptr) {  // kept in files: read again
        u.queued = 0;
        u.ready.reset();
        try {
          queue_copies(v, priority::critical, true);
        } catch (...) {  // the others still come back; the first error is thrown after
          evict(v);
          if (!failed) failed = std::current_exception();
          continue;
        }
      } else {
        if (u.bytes > 0) be_.copy_async(arena_ + u.offset, u.host, u.bytes, copy_kind::host_to_device, copy_);
        u.ready = std::make_shared<event_type>(new_ready_event());
        be_.record(*u.ready, copy_);
      }
      stats_.woken_bytes += u.bytes;
    }
    if (failed) std::rethrow_exception(failed);
  }
  [[nodiscard]] bool asleep() const {
    std::lock_guard lock(mutex_);
    return arena_ == nullptr;
  }
  /// @brief The budget's block of device memory (budget_bytes long; null while asleep): every
  /// address a lease gives lies in it. A new block after wake(), perhaps elsewhere.
  [[nodiscard]] std::byte* arena() const {
    std::lock_guard lock(mutex_);
    return arena_;
  }

  /// @brief The counters so far; stall times count the acquires whose waits have completed.
  [[nodiscard]] residency_stats stats() {
    std::lock_guard lock(mutex_);
    harvest_stalls();
    return stats_;
  }
  /// @brief What unit `u` went through so far.
  [[nodiscard]] unit_stats stats(unit_id u) {
    std::lock_guard lock(mutex_);
    harvest_stalls();
    return state(u, "stats").stats;
  }
  /// @brief What the Belady oracle would have hit over the same acquires (the latest
  /// residency_options::history of them; no pinning) with the budget less the declared
  /// lookahead (the room prefetching takes): the bound a policy that keeps the lookahead free
  /// is measured against. On a cycle static_priority keeps (budget - staging) / model of every
  /// pass, a little less.
  [[nodiscard]] std::uint64_t belady_hit_bytes() const {
    std::lock_guard lock(mutex_);
    return belady_locked(order_.empty() ? 0 : lookahead_);
  }
  /// @brief The same with `staging_bytes` of the budget set aside (0: the whole budget is the
  /// oracle's: no policy of this budget hits more).
  [[nodiscard]] std::uint64_t belady_hit_bytes(std::uint64_t staging_bytes) const {
    std::lock_guard lock(mutex_);
    return belady_locked(staging_bytes);
  }
  /// @brief The unit called `name`, if there is one.
  [[nodiscard]] std::optional<unit_id> find(std::string_view name) const {
    std::lock_guard lock(mutex_);
    for (std::size_t i = 0; i < units_.size(); ++i) {
      if (units_[i].name == name) return static_cast<unit_id>(i);
    }
    return std::nullopt;
  }
  [[nodiscard]] std::size_t units() const {
    std::lock_guard lock(mutex_);
    return units_.size();
  }
  [[nodiscard]] bool resident(unit_id u) const {
    std::lock_guard lock(mutex_);
    return state(u, "resident").resident;
  }
  [[nodiscard]] std::uint64_t unit_bytes(unit_id u) const {
    std::lock_guard lock(mutex_);
    return state(u, "unit_bytes").bytes;
  }
  /// @brief Calls `f(policy)` under the manager's lock, e.g. to set scores
  /// (score_policy::set_score); `f` must not call the manager.
  template <class F>
  void with_policy(F&& f) {
    std::lock_guard lock(mutex_);
    f(policy_);
  }

  /// @brief Captures a pass as graphs for replay(): runs `pass()` (its acquires, kernels and
  /// releases on `s`) with `s` captured, so that neither the kernels nor the copies that bring
  /// its units in run now. Where the pass leaves the units elsewhere than it found them (a
  /// cycle streaming units through a few places may alternate), `pass()` is captured again
  /// from there, until the units come back to where a captured pass found them: at most
  /// `max_graphs` times. Nothing is allocated, read or timed in a captured pass and its copies
  /// take no tokens: it is for units in pinned host memory, visited in a declared cycle (run a
  /// pass or two without capture first, so that the cycle's placement settles). No other
  /// thread may use the manager meanwhile. The manager's state and statistics stay as they
  /// were before the call.
  /// @throws lris::invalid_argument when asleep, while a unit is leased, when the declared
  /// order has a unit kept in files or `pass` acquires one, or when the units do not come back
  /// within `max_graphs` passes (naming a unit and its places); what `pass` throws, after the
  /// capture is ended and dropped.
  template <class Pass>
    requires graph_backend<Backend> && std::invocable<Pass&>
  [[nodiscard]] captured_pass<Backend> capture(stream_type& s, Pass&& pass,
                                               std::size_t max_graphs = 4) {
    captured_pass<Backend> g;
    g.owner_ = this;
    std::unique_lock lock(mutex_);
    g.arena_ = arena_;
    capture_state before = settle_for_capture("capture");
    const struct put_back_state {
      residency_manager& m;
      capture_state& before;
      ~put_back_state() { m.restore(before); }
    } restorer{*this, before};
    capturing_ = true;
    for (;;) {
      typename captured_pass<Backend>::stage st;
      st.start = placements();
      const residency_stats at_start = stats_;
      capture_one(lock, s, pass);
      st.graph = be_.end_capture(s);
      st.end = placements();
      const residency_stats d = stats_ - at_start;
      st.copy_bytes = d.miss_bytes + d.prefetched_bytes;
      st.acquires = d.acquires;
      g.stages_.push_back(std::move(st));
      drop_capture_events();
      for (const auto& earlier : g.stages_) {
        if (earlier.start == g.stages_.back().end) return g;
      }
      if (g.stages_.size() >= max_graphs) {
        throw invalid_argument(fmt::format(
            "residency_manager::capture: after {} pass{} the units are not back where a captured "
            "pass found them ({}); declare the pass's order as a cycle and run a pass or two "
            "without capture first", g.stages_.size(), g.stages_.size() > 1 ? "es" : "",
            moved_unit(g.stages_.front().start)));
      }
    }
  }

  /// @brief Queues the captured pass `g` on `s`: the graph captured from where the units are
  /// now (if none was, first the copies that put them where the first graph starts), after
  /// every use released so far and every copy queued. Later acquires and copies wait for it.
  /// A replay's copies take no tokens and are counted in residency_stats::replays and
  /// replayed_bytes only.
  /// @throws lris::invalid_argument for a pass another manager captured, when asleep, while a
  /// unit is leased (the graph may overwrite it), or when wake() has taken the budget's memory
  /// back at another address since the capture.
  template <graph_backend B = Backend>
  void replay(captured_pass<B>& g, stream_type& s) {
    std::lock_guard lock(mutex_);
    if (g.owner_ != this || g.stages_.empty()) {
      throw invalid_argument("residency_manager::replay: the pass was captured by another "
                             "manager (or moved from)");
    }
    check_quiet("replay");
    if (g.arena_ != arena_) {
      throw invalid_argument(fmt::format(
          "residency_manager::replay: the pass was captured before sleep(), and wake() took the "
          "budget's memory back at another address ({} then, {} now); capture it again",
          g.arena_, static_cast<const void*>(arena_)));
    }
    const auto now = placements();
    auto st = std::find_if(g.stages_.begin(), g.stages_.end(),
                           [&](const auto& x) { return x.start == now; });
    if (st == g.stages_.end()) {
      st = g.stages_.begin();
      move_to(st->start, true);
    }
    for (unit_id v = 0; v < units_.size(); ++v) {  // a prefetch's copies still to queue
      if (units_[v].resident && units_[v].queued < units_[v].bytes) {
        queue_copies(v, priority::critical, true);
      }
    }
    event_type e = spare_events_.empty() ? be_.make_event() : take_spare();
    be_.record(e, copy_);
    be_.wait(s, e);
    spare_events_.push_back(std::move(e));
    for (auto& u : units_) {
      for (event_type& l : u.last_uses) {
        be_.wait(s, l);
        spare_events_.push_back(std::move(l));
      }
      u.last_uses.clear();
    }
    for (event_type& l : overwritten_) {
      be_.wait(s, l);
      spare_events_.push_back(std::move(l));
    }
    overwritten_.clear();
    be_.launch(st->graph, s);
    auto done = std::make_shared<event_type>(new_ready_event());  // timed, for stall probes
    be_.record(*done, s);
    be_.wait(copy_, *done);  // copies queued from now on overwrite nothing the graph still uses
    move_to(st->end, false, done);  // where the graph leaves them
    ++stats_.replays;
    stats_.replayed_bytes += st->copy_bytes;
  }

 private:
  static constexpr std::size_t no_position = static_cast<std::size_t>(-1);

  // What capture() puts back when it ends: the manager as it was before the pass ran.
  struct capture_state {
    std::vector<unit_state> units;  // residency only: no events
    range_allocator ranges;
    Policy policy;
    residency_stats stats;
    std::vector<unit_id> history;
    std::uint64_t tick;
    std::size_t last_position;
  };

  // Throws unless the manager is awake and holds no lease.
  void check_quiet(const char* what) const {
    if (arena_ == nullptr) {
      throw invalid_argument(fmt::format("residency_manager::{}: the manager is asleep; wake() "
                                         "it first", what));
    }
    for (const auto& u : units_) {
      if (u.leases > 0) {
        throw invalid_argument(fmt::format("residency_manager::{}: unit \"{}\" is leased ({} "
                                           "lease{}); release it first", what, u.name, u.leases,
                                           u.leases > 1 ? "s" : ""));
      }
    }
  }

  // Before a capture: every copy queued and completed and every use waited for, so that the
  // captured work depends on nothing outside it; returns the state to put back after.
  capture_state settle_for_capture(const char* what) {
    check_quiet(what);
    for (const unit_id v : order_) {
      if (units_[v].host == nullptr) {
        throw invalid_argument(fmt::format("residency_manager::{}: unit \"{}\" of the declared "
                                           "order is kept in files, and reads cannot be "
                                           "captured", what, units_[v].name));
      }
    }
    for (unit_id v = 0; v < units_.size(); ++v) {
      unit_state& y = units_[v];
      if (y.resident && y.queued < y.bytes) queue_copies(v, priority::critical, true);
    }
    be_.synchronize(copy_);
    wait_all_uses();
    for (auto& u : units_) u.ready.reset();  // complete: an acquire has nothing to wait for
    in_flight_.clear();
    harvest_stalls();  // every probe's events have completed
    capture_state c{{}, ranges_, policy_, stats_, history_, tick_, last_position_};
    for (const auto& u : units_) copy_residency(c.units.emplace_back(), u);
    return c;
  }

  // Blocks until every released use, of resident and evicted units, has run; their events
  // are spare again.
  void wait_all_uses() {
    for (auto& u : units_) {
      for (event_type& e : u.last_uses) be_.synchronize(e);
      for (event_type& e : u.last_uses) spare_events_.push_back(std::move(e));
      u.last_uses.clear();
    }
    for (event_type& e : overwritten_) be_.synchronize(e);
    for (event_type& e : overwritten_) spare_events_.push_back(std::move(e));
    overwritten_.clear();
  }

  // Where `from` is and what it went through, into `to` (no name, tensors or events).
  static void copy_residency(unit_state& to, const unit_state& from) noexcept {
    to.offset = from.offset;
    to.resident = from.resident;
    to.prefetched = from.prefetched;
    to.queued = from.queued;
    to.ahead = from.ahead;
    to.stats = from.stats;
  }

  // Begins a capture on `s` with the copy stream joined, runs `pass` unlocked, and joins the
  // copy stream back; the caller ends the capture. On an exception the capture is ended and
  // dropped.
  template <class Pass>
  void capture_one(std::unique_lock<std::mutex>& lock, stream_type& s, Pass& pass) {
    event_type fork = spare_events_.empty() ? be_.make_event() : take_spare();
    be_.begin_capture(s);
    try {
      be_.record(fork, s);
      be_.wait(copy_, fork);  // the copy stream joins the capture
      spare_events_.push_back(std::move(fork));
      lock.unlock();
      pass();
      lock.lock();
      event_type join = spare_events_.empty() ? be_.make_event() : take_spare();
      be_.record(join, copy_);
      be_.wait(s, join);
      spare_events_.push_back(std::move(join));
    } catch (...) {
      if (!lock.owns_lock()) lock.lock();
      try {
        (void)be_.end_capture(s);  // dropped; nothing of it ran
      } catch (...) {  // invalidated already: the error that did it is the one to report
      }
      throw;
    }
  }

  // After a captured pass: the events it recorded order nothing that runs.
  void drop_capture_events() noexcept {
    for (auto& u : units_) {
      u.ready.reset();
      u.last_uses.clear();
    }
    overwritten_.clear();
    in_flight_.clear();
  }

  // After capturing: the state before (nothing captured ran).
  void restore(capture_state& c) noexcept {
    drop_capture_events();
    for (unit_id v = 0; v < units_.size(); ++v) copy_residency(units_[v], c.units[v]);
    ranges_ = std::move(c.ranges);
    policy_ = std::move(c.policy);
    stats_ = c.stats;
    history_ = std::move(c.history);
    tick_ = c.tick;
    last_position_ = c.last_position;
    capturing_ = false;
    more_.notify_one();
  }

  // Where each unit is now.
  std::vector<typename captured_pass<Backend>::placement> placements() const
    requires graph_backend<Backend>
  {
    std::vector<typename captured_pass<Backend>::placement> p;
    for (const auto& u : units_) p.push_back({u.resident, u.prefetched, u.offset});
    return p;
  }

  // The first unit not where `start` says, described; empty when every unit is.
  std::string moved_unit(const std::vector<typename captured_pass<Backend>::placement>& start)
      const requires graph_backend<Backend>
  {
    const auto where = [](const auto& p) {
      return p.resident ? fmt::format("at offset {}", p.offset) : std::string("out of the budget");
    };
    const auto now = placements();
    for (unit_id v = 0; v < units_.size(); ++v) {
      if (now[v] == start[v]) continue;
      return fmt::format("unit \"{}\" {} (it was {})", units_[v].name, where(now[v]),
                         where(start[v]));
    }
    return {};
  }

  // Puts every unit where `p` says. By copies (`copy`): units elsewhere are evicted and the
  // missing ones placed and copied in on the copy stream, as misses. After a replay (not
  // `copy`): the graph has moved the bytes already; only the bookkeeping follows it, and the
  // units it left are ready with `done`.
  void move_to(const std::vector<typename captured_pass<Backend>::placement>& p, bool copy,
               const std::shared_ptr<event_type>& done = nullptr)
    requires graph_backend<Backend>
  {
    for (unit_id v = 0; v < units_.size(); ++v) {
      unit_state& u = units_[v];
      if (!u.resident || (p[v].resident && u.offset == p[v].offset)) continue;
      if (copy) {
        evict(v);
      } else {
        ranges_.free(u.offset, u.bytes);
        u.resident = false;
        policy_.on_evict(v);
      }
    }
    for (unit_id v = 0; v < units_.size(); ++v) {
      unit_state& u = units_[v];
      if (p[v].resident && !u.resident) {
        if (!ranges_.allocate_at(p[v].offset, u.bytes)) {  // cannot be: every other unit is out
          throw invalid_argument(fmt::format("residency_manager::replay: unit \"{}\" cannot be "
                                             "placed at offset {}", u.name, p[v].offset));
        }
        u.offset = p[v].offset;
        u.resident = true;
        u.queued = copy ? 0 : u.bytes;
        u.ahead = 0;
        u.ready.reset();
        policy_.on_insert(v, tick_);
        if (copy) {
          wait_overwritten();
          queue_copies(v, priority::critical, true);
          stats_.miss_bytes += u.bytes;
          u.stats.miss_bytes += u.bytes;
        }
      }
      if (!copy) {
        u.ahead = 0;
        u.prefetched = u.resident && p[v].prefetched;
        u.ready = u.resident ? done : nullptr;
      }
    }
  }

  std::uint64_t belady_locked(std::uint64_t staging) const {
    std::vector<std::uint64_t> bytes;
    for (const auto& u : units_) bytes.push_back(ranges_.rounded(u.bytes));
    belady oracle(history_);
    const std::uint64_t room = ranges_.capacity() - std::min(ranges_.capacity(), staging);
    std::uint64_t largest = 0;
    for (const unit_id u : history_) largest = std::max(largest, bytes[u]);
    if (history_.empty() || room < largest) return 0;
    return simulate(oracle, bytes, history_, room).hit_bytes;
  }


  const unit_state& state(unit_id u, const char* what) const {
    if (u >= units_.size()) {
      throw invalid_argument(fmt::format("residency_manager::{}: unit {} is not registered ({} "
                                         "units)", what, u, units_.size()));
    }
    return units_[u];
  }
  unit_state& state(unit_id u, const char* what) {
    return const_cast<unit_state&>(std::as_const(*this).state(u, what));
  }
  std::byte* tensor_address(unit_id u, std::size_t i) {
    std::lock_guard lock(mutex_);
    const unit_state& x = units_[u];
    if (i >= x.offsets.size()) {
      throw invalid_argument(fmt::format("residency lease of unit \"{}\": tensor {} of {}",
                                         x.name, i, x.offsets.size()));
    }
    return arena_ + x.offset + x.offsets[i];
  }
  std::size_t tensor_index(unit_id u, std::string_view name) {
    std::lock_guard lock(mutex_);
    const unit_state& x = units_[u];
    for (std::size_t i = 0; i < x.tensor_names.size(); ++i) {
      if (x.tensor_names[i] == name) return i;
    }
    throw invalid_argument(fmt::format("residency lease of unit \"{}\": no tensor called \"{}\"",
                                       x.name, name));
  }
  event_type take_spare() {
    event_type e = std::move(spare_events_.back());
    spare_events_.pop_back();
    return e;
  }
  event_type take_spare_timed() {
    if constexpr (timed) {
      if (spare_timed_.empty()) return be_.make_timed_event();
      event_type e = std::move(spare_timed_.back());
      spare_timed_.pop_back();
      return e;
    } else {
      return be_.make_event();
    }
  }
  event_type new_ready_event() {
    if constexpr (timed) {
      if (opt_.time_stalls) return be_.make_timed_event();
    }
    return be_.make_event();
  }
  // Adds the waits of acquires whose events have completed, oldest first.
  void harvest_stalls() {
    if constexpr (timed) {
      std::size_t done = 0;
      for (; done < probes_.size(); ++done) {
        stall_probe& p = probes_[done];
        if (!be_.query(p.acquired) || !be_.query(*p.ready)) break;
        const double wait = be_.elapsed_seconds(p.acquired, *p.ready);
        if (wait > 0) {
          stats_.stall_seconds += wait;
          ++stats_.stalls;
          units_[p.unit].stats.stall_seconds += wait;
          ++units_[p.unit].stats.stalls;
        }
        spare_timed_.push_back(std::move(p.acquired));
      }
      probes_.erase(probes_.begin(), probes_.begin() + static_cast<std::ptrdiff_t>(done));
    }
  }

  // Places `u` in the arena, evicting as the policy says (never a unit in `keep`); its copies
  // are queued by queue_copies(). Work queued on the copy stream from now on waits for the
  // last uses of what it evicted. For a prefetch (`keep` not empty), false when no room can
  // be made (nothing changes); a demand throws.
  bool place(unit_id u, std::span<const unit_id> keep) {
    unit_state& x = units_[u];
    std::optional<std::uint64_t> at = ranges_.allocate(x.bytes);
    std::vector<unit_id> candidates;
    while (!at) {
      candidates.clear();
      for (unit_id v = 0; v < units_.size(); ++v) {
        const unit_state& y = units_[v];
        if (y.resident && y.leases == 0 && !y.pinned && v != u &&
            std::find(keep.begin(), keep.end(), v) == keep.end()) {
          candidates.push_back(v);
        }
      }
      if (candidates.empty()) {
        if (!keep.empty()) return false;
        std::uint64_t held = 0;
        for (const auto& y : units_) held += y.resident ? ranges_.rounded(y.bytes) : 0;
        throw out_of_memory(fmt::format(
            "residency_manager: unit \"{}\" ({} bytes) does not fit: {} of the budget's {} "
            "bytes hold units that are leased or pinned (largest free range {} bytes)",
            x.name, x.bytes, held, ranges_.capacity(), ranges_.largest_free()), x.bytes);
      }
      evict(policy_.victim(candidates, tick_));
      at = ranges_.allocate(x.bytes);
    }
    x.offset = *at;
    x.resident = true;
    x.queued = 0;
    x.ahead = 0;
    x.ready.reset();
    stats_.high_water_bytes = std::max(stats_.high_water_bytes, ranges_.used());
    wait_overwritten();
    policy_.on_insert(u, tick_);
    return true;
  }

  // Work queued on the copy stream from now on waits for the last uses of the units evicted.
  void wait_overwritten() {
    for (event_type& e : overwritten_) {
      be_.wait(copy_, e);
      spare_events_.push_back(std::move(e));
    }
    overwritten_.clear();
  }

  // Queues the copies of the bytes of `u` not queued yet, in pieces under the link's tokens at
  // `p`: all of them when `wait` (waiting for tokens), else as many as the tokens free now
  // allow. Records the unit's ready event after the last. True when every byte is queued.
  bool queue_copies(unit_id u, priority p, bool wait, std::size_t max_pieces = ~std::size_t{0}) {
    unit_state& x = units_[u];
    for (std::size_t pieces = 0; x.queued < x.bytes; ++pieces) {
      if (pieces == max_pieces) return false;
      if (should_stop_ && should_stop_()) {
        throw cancelled(fmt::format("residency_manager: {} of unit \"{}\" cancelled with {} of "
                                    "its {} bytes queued", wait ? "acquire" : "prefetch", x.name,
                                    x.queued, x.bytes));
      }
      std::uint64_t n = x.bytes - x.queued;
      const bool tokened = opt_.broker && !capturing_;  // a graph's copies take no tokens
      if (tokened) n = std::min(n, piece_);
      std::size_t k = 0;  // the staging slot that holds the bytes, for a unit kept in files
      if (x.host == nullptr) {
        k = staged_slot(u, x.queued);
        n = std::min(n, slots_info_[k].to - x.queued);
      }
      sched::resource_tokens tokens;
      if (tokened) {
        tokens = opt_.broker->try_acquire(link_, n, p);
        if (tokens.bytes() == 0 && !wait) return false;
        if (tokens.bytes() == 0) {
          // While the copies ahead hold the tokens, the next slot's read can run.
          if (x.host == nullptr) read_ahead(u, k);
          tokens = opt_.broker->acquire(link_, n, p);
        }
      }
      if (x.host == nullptr) {
        const std::byte* from = slots_ + k * slot_bytes_ + (x.queued - slots_info_[k].from);
        be_.copy_async(arena_ + x.offset + x.queued, from, n, copy_kind::host_to_device, copy_);
        be_.record(slot_done_[k], copy_);
        slot_used_[k] = true;
      } else {
        be_.copy_async(arena_ + x.offset + x.queued, x.host + x.queued, n,
                       copy_kind::host_to_device, copy_);
      }
      x.queued += n;
      if (!wait) x.ahead += n;
      if (tokens.bytes() > 0) {
        // Given back when the piece is done (the broker's thread asks an event of its own).
        auto done = std::make_shared<event_type>(spare_events_.empty() ? be_.make_event() : take_spare());
        be_.record(*done, copy_);
        opt_.broker->release_when([be = be_, done]() mutable { return be.query(*done); },
                                  std::move(tokens), link_, &copy_);
        while (!in_flight_.empty() && be_.query(*in_flight_.front())) in_flight_.pop_front();
        in_flight_.push_back(std::move(done));
      }
    }
    if (!x.ready) {
      x.ready = std::make_shared<event_type>(new_ready_event());
      be_.record(*x.ready, copy_);
    }
    return true;
  }

  // A read of bytes [from, from + n) of a unit kept in files into `to`, with what it needs
  // copied out of the unit's state, so that it can run without the lock.
  struct read_job {
    std::string unit;
    std::vector<std::string> tensor_names;
    std::vector<typename unit_state::source> sources;
    std::vector<const io::file*> files;  // of each source (files_ never moves them)
    std::uint64_t from = 0, n = 0;
    std::byte* to = nullptr;
    std::function<bool()> should_stop;
  };
  read_job make_read_job(unit_id u, std::uint64_t from, std::uint64_t n, std::byte* to) const {
    const unit_state& x = units_[u];
    std::vector<const io::file*> files;
    for (const auto& src : x.sources) files.push_back(src.far != nullptr ? nullptr : &files_[src.file]);
    return {x.name, x.tensor_names, x.sources, std::move(files), from, n, to, should_stop_};
  }

  struct read_result {
    std::uint64_t bytes = 0;
    double seconds = 0;
  };
  // Runs `job` through the io engine, the gaps between tensors zeroed; returns the bytes read
  // and the time it took. Errors name the unit, the tensor, the offset and the file.
  read_result run_read(const read_job& job) const {
    const auto start = std::chrono::steady_clock::now();
    std::uint64_t at_gap = job.from, read = 0;  // the sources are in unit order
    for (std::size_t i = 0; i < job.sources.size(); ++i) {
      const auto& src = job.sources[i];
      const std::uint64_t a = std::max(job.from, src.unit_offset);
      const std::uint64_t b = std::min(job.from + job.n, src.unit_offset + src.bytes);
      if (a >= b) continue;
      if (a > at_gap) std::memset(job.to + (at_gap - job.from), 0, a - at_gap);
      at_gap = b;
      const io::file* f = job.files[i];
      const std::uint64_t at = src.file_offset + (a - src.unit_offset);
      const auto where = [&] {
        return fmt::format("residency_manager: unit \"{}\", tensor \"{}\": reading {} bytes at "
                           "offset {} of {}", job.unit, job.tensor_names[src.tensor], b - a, at,
                           f != nullptr ? f->path().string() : std::string("far memory"));
      };
      try {
        if (src.far != nullptr) {
          src.far->read(at, {job.to + (a - job.from), static_cast<std::size_t>(b - a)});
        } else {
          opt_.io->read(*f, at, {job.to + (a - job.from), b - a}, job.should_stop);
        }
      } catch (const cancelled&) {
        throw cancelled(where() + ": cancelled");
      } catch (const io_error& e) {
        throw io_error(e.code().value(), fmt::format("{}: {}", where(), e.what()));
      } catch (const error& e) {  // e.g. the file was cut short after the unit was added
        throw io_error(EIO, fmt::format("{}: {}", where(), e.what()));
      }
      read += b - a;
    }
    if (job.from + job.n > at_gap) std::memset(job.to + (at_gap - job.from), 0, job.from + job.n - at_gap);
    return {read, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()};
  }

  void count_read(const read_result& r) {
    stats_.file_read_bytes += r.bytes;
    stats_.file_read_seconds += r.seconds;
  }

  // The slot that holds the bytes of unit `u` at `at`, if one does (and is not being read).
  std::optional<std::size_t> find_staged(unit_id u, std::uint64_t at) const {
    for (std::size_t k = 0; k < 2; ++k) {
      const slot_state& sl = slots_info_[k];
      if (!sl.reading && sl.unit == u && sl.from <= at && at < sl.to) return k;
    }
    return std::nullopt;
  }

  // The slot to fill next: not being read (only the prefetch thread reads unlocked, into one
  // slot at a time); what it held is forgotten.
  std::size_t take_slot() {
    const std::size_t k = slots_info_[next_slot_].reading ? next_slot_ ^ 1 : next_slot_;
    next_slot_ = k ^ 1;
    slots_info_[k] = {};
    return k;
  }

  // The slot holding the bytes of unit `u` (kept in files) at `at`: one already read, else a
  // slot read now (as much of the unit as it holds), on the caller's thread.
  std::size_t staged_slot(unit_id u, std::uint64_t at) {
    for (std::size_t k = 0; k < 2; ++k) {  // the prefetch thread reads them now: wait for it
      const slot_state& sl = slots_info_[k];
      if (sl.reading && sl.unit == u && sl.from <= at && at < sl.to) settle_read(k);
    }
    if (const auto k = find_staged(u, at)) return *k;
    const std::size_t k = take_slot();
    if (slot_used_[k]) be_.synchronize(slot_done_[k]);  // its last copy is done
    const std::uint64_t n = std::min(slot_bytes_, units_[u].bytes - at);
    count_read(run_read(make_read_job(u, at, n, slots_ + k * slot_bytes_)));
    slots_info_[k] = {u, at, at + n, false};
    return k;
  }

  // Reads the bytes of unit `u` that follow those in slot `k` into the other slot, when it is
  // free now (not being read, its copies done) and they are not staged yet: a read on the
  // caller's thread that overlaps the copies from slot `k`.
  void read_ahead(unit_id u, std::size_t k) {
    const std::uint64_t at = slots_info_[k].to;
    const std::size_t j = k ^ 1;
    if (at >= units_[u].bytes || find_staged(u, at) || slots_info_[j].reading ||
        (slot_used_[j] && !be_.query(slot_done_[j]))) {
      return;
    }
    const std::uint64_t n = std::min(slot_bytes_, units_[u].bytes - at);
    slots_info_[j] = {};
    next_slot_ = k;  // j is taken
    count_read(run_read(make_read_job(u, at, n, slots_ + j * slot_bytes_)));
    slots_info_[j] = {u, at, at + n, false};
  }

  // For the prefetch thread: reads the bytes of unit `v` at its first byte not queued into a
  // slot with `lock` released, so that acquires go on meanwhile. An acquire that needs those
  // bytes waits for the read (see staged_slot); whoever holds the lock first after it ends
  // settles the slot. A read that fails leaves the unit out (its acquire reads again and says
  // why).
  void read_unlocked(std::unique_lock<std::mutex>& lock, unit_id v) {
    const std::uint64_t at = units_[v].queued;
    const std::uint64_t n = std::min(slot_bytes_, units_[v].bytes - at);
    const std::size_t k = take_slot();
    slots_info_[k] = {v, at, at + n, true};
    {
      std::lock_guard r(read_mutex_);
      read_outcome_ = {};
    }
    read_job job = make_read_job(v, at, n, slots_ + k * slot_bytes_);
    job.should_stop = [this] { return stop_.load(); };  // the manager is going
    const bool used = slot_used_[k];
    lock.unlock();
    read_outcome outcome;
    try {
      if (used) be_.synchronize(slot_done_[k]);  // nobody else touches slot k while it is read
      outcome.read = run_read(job);
    } catch (...) {
      outcome.failed = true;
    }
    outcome.done = true;
    {
      std::lock_guard r(read_mutex_);
      read_outcome_ = outcome;
    }
    read_done_.notify_all();
    lock.lock();
    if (slots_info_[k].reading) settle_read(k);
  }

  // Settles the prefetch thread's read into slot `k` once it has ended: its bytes counted, the
  // slot holding them (or nothing, after a failure, and the unit left out if only the prefetch
  // wanted it).
  void settle_read(std::size_t k) {
    read_outcome outcome;
    {
      std::unique_lock r(read_mutex_);
      read_done_.wait(r, [&] { return read_outcome_.done; });
      outcome = read_outcome_;
    }
    slot_state& sl = slots_info_[k];
    count_read(outcome.read);
    const unit_id v = sl.unit;
    const std::uint64_t at = sl.from;
    sl.reading = false;
    if (outcome.failed) {
      sl = {};
      unit_state& y = units_[v];
      if (y.resident && y.prefetched && y.queued == at) evict(v);
    }
  }


  void evict(unit_id v) {
    unit_state& y = units_[v];
    ranges_.free(y.offset, y.bytes);
    y.resident = false;
    y.prefetched = false;
    y.queued = 0;
    y.ahead = 0;
    y.ready.reset();
    ++y.stats.evictions;
    for (event_type& e : y.last_uses) overwritten_.push_back(std::move(e));
    y.last_uses.clear();
    ++stats_.evictions;
    stats_.evicted_bytes += y.bytes;
    policy_.on_evict(v);
  }

  // Brings in the units after `u` in the declared order, up to the lookahead: takes their places
  // now and queues the copies the link's tokens allow now; the prefetch thread queues the rest
  // as tokens free up, and reads the units kept in files (off the caller's thread).
  void prefetch_after(unit_id u) {
    if (order_.empty() || lookahead_ == 0 || u >= position_.size() || position_[u] == no_position) {
      return;
    }
    last_position_ = position_[u];
    std::vector<unit_id> ahead;
    std::uint64_t bytes = 0;
    for (std::size_t k = 1; k < order_.size() + (cyclic_ ? 1 : 0); ++k) {
      const std::size_t i = position_[u] + k;
      if (!cyclic_ && i >= order_.size()) break;
      const unit_id v = order_[i % order_.size()];
      if (v == u) break;
      bytes += units_[v].bytes;
      if (bytes > lookahead_) break;
      ahead.push_back(v);
    }
    std::vector<unit_id> keep = {u};
    bool left = false;  // copies left for the prefetch thread
    for (const unit_id v : ahead) {
      keep.push_back(v);
      unit_state& y = units_[v];
      if (y.resident && !y.prefetched) continue;  // in already
      if (!y.resident) {
        // Its place is taken now, while the units ahead are kept, even when the link's tokens
        // are busy: the copies follow as they free up (or on demand), and what it evicts is a
        // unit the order needs later, never the one just used.
        if (!place(v, keep)) break;
        y.prefetched = true;
      }
      if (left || y.host == nullptr) {  // behind another's copies, or read from files
        left = left || y.queued < y.bytes;
        continue;
      }
      const std::uint64_t before = y.queued;
      try {
        left = !queue_copies(v, opt_.prefetch_priority, false);
      } catch (const std::exception&) {  // left out; its acquire will say why
        stats_.prefetched_bytes += y.queued - before;
        evict(v);
        break;
      }
      stats_.prefetched_bytes += y.queued - before;
    }
    if (left) {
      if (!worker_.joinable()) worker_ = std::thread([this] { prefetch_thread(); });
      more_.notify_one();
    }
  }

  // The unit nearest after the last acquire in the declared order whose prefetched copies are
  // not all queued, if any.
  std::optional<unit_id> unfinished_prefetch() const {
    for (std::size_t k = 1; k <= order_.size(); ++k) {
      const unit_id v = order_[(last_position_ + k) % order_.size()];
      const unit_state& y = units_[v];
      if (y.resident && y.prefetched && y.queued < y.bytes) return v;
    }
    return std::nullopt;
  }

  // The prefetch thread: queues the copies prefetch_after() left, a piece at a time as the
  // link's tokens free up (read from the files first for units kept there), nearest first.
  // Started by the first prefetch that leaves copies; ends with the manager.
  // Nothing it meets leaves the thread (that would end the process): after an error it could
  // not pin on one unit (memory for a read, say), the thread ends, and acquires bring in on
  // demand what it would have brought ahead.
  void prefetch_thread() noexcept {
    try {
      prefetch_loop();
    } catch (...) {
    }
  }
  void prefetch_loop() {
    std::unique_lock lock(mutex_);
    while (!stop_) {
      const std::optional<unit_id> v =
          arena_ == nullptr || capturing_ ? std::nullopt : unfinished_prefetch();
      if (!v) {
        more_.wait(lock);
        continue;
      }
      unit_state& y = units_[*v];
      if (y.host == nullptr && !find_staged(*v, y.queued)) {
        read_unlocked(lock, *v);
        continue;
      }
      const std::uint64_t before = y.queued;
      try {
        queue_copies(*v, opt_.prefetch_priority, false, 1);
      } catch (const std::exception&) {  // left out; its acquire will say why
        stats_.prefetched_bytes += y.queued - before;
        evict(*v);
        continue;
      }
      stats_.prefetched_bytes += y.queued - before;
      if (y.queued > before) continue;
      // No tokens now: wait (unlocked) for the oldest of this manager's pieces in flight,
      // whose tokens come back when it is done, or a moment when others hold them.
      try {
        while (!in_flight_.empty() && be_.query(*in_flight_.front())) in_flight_.pop_front();
      } catch (...) {  // a lost device: the next copy tells its acquire
        in_flight_.clear();
      }
      const std::shared_ptr<event_type> oldest = in_flight_.empty() ? nullptr : in_flight_.front();
      lock.unlock();
      try {
        if (oldest) be_.synchronize(*oldest);
      } catch (...) {  // a lost device: the next copy tells its acquire
      }
      std::this_thread::sleep_for(std::chrono::microseconds(oldest ? 20 : 200));
      lock.lock();
    }
  }

  Backend be_;
  residency_options opt_;
  Policy policy_;
  range_allocator ranges_;
  stream_type copy_;
  std::byte* arena_ = nullptr;
  mutable std::mutex mutex_;
  std::vector<unit_state> units_;
  std::vector<event_type> overwritten_;    // last uses of evicted units, not yet waited for
  std::vector<event_type> spare_events_;
  std::vector<unit_id> order_;
  std::vector<std::size_t> position_;
  bool cyclic_ = false;
  std::uint64_t lookahead_ = 0;
  std::size_t link_ = 0;  // the broker's resource for the host-to-device link
  std::uint64_t piece_ = ~std::uint64_t{0};  // bytes per copy under one grant of tokens
  std::vector<stall_probe> probes_;          // acquires whose waits are not timed yet
  std::size_t last_position_ = 0;            // in order_, of the last acquire that prefetched
  std::deque<std::shared_ptr<event_type>> in_flight_;  // pieces under tokens, oldest first
  std::condition_variable more_;             // wakes the prefetch thread
  std::atomic<bool> stop_{false};
  std::thread worker_;                       // the prefetch thread; last, so it goes first
  std::function<bool()> should_stop_;        // the running acquire's, if any
  std::deque<io::file> files_;               // of the units kept in files (never moved)
  std::byte* slots_ = nullptr;               // two pinned staging slots for them
  std::uint64_t slot_bytes_ = 0;
  std::uint64_t slots_io_ = 0;               // the slots' registration with opt_.io
  event_type slot_done_[2];                  // each slot's last copy
  bool slot_used_[2] = {false, false};
  std::size_t next_slot_ = 0;                // the slot to fill next (the other, if being read)
  static constexpr unit_id no_unit = ~unit_id{0};
  struct slot_state {
    unit_id unit = no_unit;                  // whose bytes [from, to) it holds
    std::uint64_t from = 0, to = 0;
    bool reading = false;                    // the prefetch thread reads into it, unlocked
  } slots_info_[2];
  struct read_outcome {
    bool done = false, failed = false;
    read_result read;
  };
  std::mutex read_mutex_;                    // guards read_outcome_ (taken under mutex_ or alone)
  std::condition_variable read_done_;
  read_outcome read_outcome_;                // of the prefetch thread's read in flight
  std::vector<event_type> spare_timed_;
  std::uint64_t tick_ = 0;
  std::vector<unit_id> history_;
  residency_stats stats_;
  bool capturing_ = false;                   // a pass is being captured (capture())
};

}  // namespace lris::cache
