#pragma once
// io_queue over a few threads doing pread/pwrite: the fallback where io_uring is refused
// (ENOSYS, EPERM, EINVAL: an old kernel, seccomp, kernel.io_uring_disabled). One call per
// operation, its result reported as it is: short transfers and errors go to the driver.

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include <lris/io/queue.hpp>

namespace lris::io::detail {

class pread_queue final : public io_queue {
 public:
  /// `depth` operations at once, on `depth` threads (capped at 64).
  explicit pread_queue(unsigned depth);
  ~pread_queue() override;
  pread_queue(const pread_queue&) = delete;
  pread_queue& operator=(const pread_queue&) = delete;

  [[nodiscard]] unsigned capacity() const noexcept override { return depth_; }
  [[nodiscard]] std::string_view name() const noexcept override { return "pread"; }
  void submit(std::span<const io_op> ops) override;
  std::size_t wait(std::span<io_completion> out, std::size_t min,
                   std::chrono::microseconds timeout) override;
  std::size_t quiesce() noexcept override;
  [[nodiscard]] bool broken() const noexcept override { return broken_; }

 private:
  void work();
  void stop_threads() noexcept;
  unsigned depth_;
  // The owner's alone (submit, wait and quiesce run on its thread), no lock needed.
  std::size_t in_flight_ = 0;  // submitted, completions not yet returned by wait()
  bool broken_ = false;
  std::mutex mutex_;
  std::condition_variable work_cv_, done_cv_;
  std::deque<io_op> todo_;
  std::deque<io_completion> done_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace lris::io::detail
