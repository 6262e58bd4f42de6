#include "pread_queue.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include <lris/error.hpp>

namespace lris::io::detail {

pread_queue::pread_queue(unsigned depth) : depth_(std::max(1u, depth)) {
  const unsigned threads = std::min(depth_, 64u);
  threads_.reserve(threads);
  for (unsigned i = 0; i < threads; ++i) threads_.emplace_back([this] { work(); });
}

pread_queue::~pread_queue() { stop_threads(); }

void pread_queue::stop_threads() noexcept {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
}

void pread_queue::submit(std::span<const io_op> ops) {
  if (broken_) {
    throw io_error(EIO, "pread queue: broken (given up after a failure); it takes no more "
                        "operations");
  }
  in_flight_ += ops.size();
  {
    std::lock_guard lock(mutex_);
    todo_.insert(todo_.end(), ops.begin(), ops.end());
  }
  work_cv_.notify_all();
}

void pread_queue::work() {
  for (;;) {
    io_op op;
    {
      std::unique_lock lock(mutex_);
      work_cv_.wait(lock, [this] { return stop_ || !todo_.empty(); });
      if (todo_.empty()) return;  // stopping, and nothing left to do
      op = todo_.front();
      todo_.pop_front();
    }
    const auto off = static_cast<off_t>(op.offset);
    const ssize_t r = op.write ? ::pwrite(op.fd, op.buf, op.len, off)
                               : ::pread(op.fd, op.buf, op.len, off);
    const long result = r < 0 ? -static_cast<long>(errno) : static_cast<long>(r);
    {
      std::lock_guard lock(mutex_);
      done_.push_back({op.tag, result});
    }
    done_cv_.notify_one();
  }
}

std::size_t pread_queue::wait(std::span<io_completion> out, std::size_t min,
                              std::chrono::microseconds timeout) {
  if (broken_) {
    throw io_error(EIO, "pread queue: broken (given up after a failure); it has nothing to "
                        "wait for");
  }
  std::unique_lock lock(mutex_);
  done_cv_.wait_for(lock, timeout, [&] { return done_.size() >= min; });
  const std::size_t n = std::min(out.size(), done_.size());
  std::copy_n(done_.begin(), n, out.begin());
  done_.erase(done_.begin(), done_.begin() + static_cast<std::ptrdiff_t>(n));
  in_flight_ -= n;
  return n;
}

// Operations not started yet are dropped: no thread will touch their memory. The ones under
// way are plain pread/pwrite calls on the pool's threads, each done with its buffer when the
// call returns: joining the threads waits for exactly those, and after the join nothing of
// this queue runs. The threads are not started again.
std::size_t pread_queue::quiesce() noexcept {
  {
    std::lock_guard lock(mutex_);
    todo_.clear();
  }
  stop_threads();
  done_.clear();
  broken_ = true;
  return std::exchange(in_flight_, 0);
}

}  // namespace lris::io::detail
