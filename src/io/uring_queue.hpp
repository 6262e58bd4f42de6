#pragma once
// io_queue over one io_uring (liburing). Private to the library: liburing's headers stay here.

#include <liburing.h>

#include <cstdint>
#include <utility>
#include <vector>

#include <lris/io/queue.hpp>

namespace lris::io::detail {

class uring_queue final : public io_queue {
 public:
  /// Creates a ring of `depth` entries; throws lris::io_error with the errno io_uring_setup
  /// gave (ENOSYS, EPERM, EINVAL, ...) when the kernel refuses.
  explicit uring_queue(unsigned depth);
  ~uring_queue() override;
  uring_queue(const uring_queue&) = delete;
  uring_queue& operator=(const uring_queue&) = delete;

  [[nodiscard]] unsigned capacity() const noexcept override { return depth_; }
  [[nodiscard]] std::string_view name() const noexcept override { return "io_uring"; }
  void submit(std::span<const io_op> ops) override;
  std::size_t wait(std::span<io_completion> out, std::size_t min,
                   std::chrono::microseconds timeout) override;
  bool use_files(std::span<const int> fds) override;
  void release_files() noexcept override;
  std::size_t sync_buffers(std::span<const fixed_buffer> buffers) override;
  [[nodiscard]] std::uint64_t fixed_buffer_ops() const noexcept override { return fixed_ops_; }
  std::size_t quiesce() noexcept override;
  [[nodiscard]] bool broken() const noexcept override { return broken_; }

 private:
  static constexpr unsigned file_slots = 8;
  io_uring ring_{};
  unsigned depth_;
  bool ring_open_ = true;      // false once quiesce() tore the ring down
  bool broken_ = false;        // quiesce() ran
  std::size_t in_flight_ = 0;  // entries prepared, their completions not yet returned by wait()
  bool sparse_files_ = false;             // a sparse table of file_slots was registered
  int slot_fd_[file_slots] = {-1, -1, -1, -1, -1, -1, -1, -1};  // the fd in each slot
  unsigned slots_used_ = 0;

  // Room for every slot of a staging ring (256 MiB of slots of 512 KiB or more) and more;
  // an empty entry costs the kernel nothing.
  static constexpr unsigned buffer_slots = 1024;
  bool sparse_buffers_ = false;                // a sparse table of buffer_slots was registered
  std::vector<fixed_buffer> buffers_;          // what each slot holds; id 0: nothing
  std::vector<std::pair<const std::byte*, unsigned>> by_address_;  // held slots, by address
  std::uint64_t fixed_ops_ = 0;
  // The slot of registered memory holding [buf, buf + len), or -1.
  [[nodiscard]] int buffer_slot(const void* buf, std::size_t len) const noexcept;
};

}  // namespace lris::io::detail
