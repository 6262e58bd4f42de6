#pragma once
/// @file
/// @brief io_engine: reads and writes files at the speed of the disk or the page cache. io_uring
/// (or its pread fallback) keeps many operations in flight; O_DIRECT bypasses the page cache
/// for cold data, with the unaligned head and tail of a range read buffered; data already in
/// the page cache is read buffered on several queues. Every choice shows in the io_stats.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include <lris/detail/thread_pool.hpp>
#include <lris/io/file.hpp>
#include <lris/io/options.hpp>
#include <lris/io/stats.hpp>

namespace lris::io {

class io_engine {
 public:
  /// @brief Chooses the queue now: with io_backend::automatic, io_uring where the kernel
  /// allows it, else the pread pool (fallback_reason() says why). With io_backend::io_uring,
  /// a refused io_uring is lris::io_error naming the errno and the likely cause.
  /// A read or write spread over several queues runs them on `threads` (the caller takes one);
  /// null: the io threads of the default context (lris::detail::default_io_thread_pool()).
  explicit io_engine(io_options options = {},
                     std::shared_ptr<lris::detail::thread_pool> threads = nullptr);
  ~io_engine();
  io_engine(const io_engine&) = delete;
  io_engine& operator=(const io_engine&) = delete;

  /// @brief Reads dst.size() bytes at `offset` of `f` into `dst`: any memory the CPU can
  /// write (pageable, pinned, huge pages). Blocks until done. Safe to call from several
  /// threads at once. `should_stop`, when given, is polled; true cancels (lris::cancelled),
  /// after every operation in flight has completed.
  /// @throws lris::invalid_argument when the range passes the end of the file;
  /// lris::io_error naming the file and offset for a failed read or an unexpected end, and
  /// naming the queue and the file when the queue itself fails (e.g. io_uring_enter errors):
  /// then every operation in flight has ended before the error (io_queue::quiesce), the broken
  /// queue is dropped, and later calls run on a fresh one.
  io_stats read(const file& f, std::uint64_t offset, std::span<std::byte> dst,
                const std::function<bool()>& should_stop = {});
  /// @brief As read(), with settings of this call in place of options(): e.g. a caller that
  /// reads one range in many pieces decides direct or buffered once (see resident_fraction)
  /// for all of them.
  io_stats read(const file& f, std::uint64_t offset, std::span<std::byte> dst,
                const std::function<bool()>& should_stop, const io_overrides& call);
  /// @brief Writes `src` at `offset` of `f` (O_DIRECT for the aligned middle where `f`
  /// allows, buffered elsewhere). Call f.sync() for durability.
  io_stats write(file& f, std::uint64_t offset, std::span<const std::byte> src,
                 const std::function<bool()>& should_stop = {}, const io_overrides& call = {});

  /// @brief Registers `memory` for the reads and writes into or out of it, where the kernel
  /// allows (io_uring fixed buffers: the kernel pins its pages once, not for every operation).
  /// Meant for long-lived buffers such as pinned staging slots. Operations in memory that no
  /// queue holds go as before; io_stats::fixed_buffer_ops counts those that did not.
  /// @return a handle for unregister_memory (never 0).
  std::uint64_t register_memory(std::span<std::byte> memory);
  /// @brief Forgets a registration. Call it when no read or write into that memory is running
  /// and before the memory is freed: idle queues release its pages now, busy ones before
  /// their next read or write.
  void unregister_memory(std::uint64_t id) noexcept;

  /// @brief The queue in use: "io_uring", "pread", or the name of options.make_queue's queue.
  [[nodiscard]] const std::string& backend() const noexcept { return backend_; }
  /// @brief Why automatic selection fell back to pread; empty otherwise.
  [[nodiscard]] const std::string& fallback_reason() const noexcept { return fallback_reason_; }
  [[nodiscard]] const io_options& options() const noexcept { return options_; }
  /// @brief The queue depth of a call with `call`'s settings: the call's, bounded by the
  /// engine's.
  [[nodiscard]] unsigned queue_depth(const io_overrides& call) const noexcept {
    return call.queue_depth > 0 ? std::min(call.queue_depth, options_.queue_depth)
                                : options_.queue_depth;
  }

  /// @brief The one rule for data not told otherwise: a range less than half in the page cache
  /// (`resident`, 0..1; negative: unknown) is cold and read O_DIRECT; else it is read buffered.
  /// `reason` says which and why, naming `what` ("the range", "the files").
  struct residency_choice {
    bool cold = false;
    std::string reason;
  };
  [[nodiscard]] static residency_choice choose_by_residency(double resident, std::string_view what);
  /// @brief Fraction (0..1) of [offset, offset + bytes) of `f` in the page cache, by mincore;
  /// large ranges are sampled.
  [[nodiscard]] static double resident_fraction(const file& f, std::uint64_t offset,
                                                std::uint64_t bytes);

 private:
  // A queue and the generation of the registered memory it holds.
  struct pooled_queue {
    std::unique_ptr<io_queue> queue;
    std::uint64_t generation = 0;
  };
  pooled_queue take_queue();
  std::unique_ptr<io_queue> make_queue();
  void return_queue(pooled_queue q);
  io_stats run(const file& f, std::uint64_t offset, std::byte* buf, std::size_t len, bool write,
               const std::function<bool()>& should_stop, const io_overrides& call);

  io_options options_;
  std::shared_ptr<lris::detail::thread_pool> threads_;
  std::string backend_;
  std::string fallback_reason_;
  std::mutex mutex_;
  std::vector<pooled_queue> idle_;
  std::vector<fixed_buffer> registered_;
  std::uint64_t generation_ = 0;  // changes with registered_
  std::uint64_t next_id_ = 1;
};

}  // namespace lris::io
