#include "uring_queue.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include <lris/error.hpp>

namespace lris::io::detail {

uring_queue::uring_queue(unsigned depth) : depth_(depth) {
  const int r = io_uring_queue_init(depth, &ring_, 0);
  if (r < 0) throw io_error(-r, fmt::format("io_uring_queue_init({}) failed", depth));
  // Fixed files where the kernel has sparse tables (5.19); plain descriptors otherwise.
  sparse_files_ = io_uring_register_files_sparse(&ring_, file_slots) == 0;
}

bool uring_queue::use_files(std::span<const int> fds) {
  release_files();
  if (!sparse_files_ || fds.size() > file_slots) return false;
  for (int fd : fds) {
    if (fd < 0 || std::find(slot_fd_, slot_fd_ + slots_used_, fd) != slot_fd_ + slots_used_) {
      continue;
    }
    if (io_uring_register_files_update(&ring_, slots_used_, &fd, 1) != 1) {
      release_files();
      return false;
    }
    slot_fd_[slots_used_++] = fd;
  }
  return slots_used_ > 0;
}

void uring_queue::release_files() noexcept {
  for (unsigned i = 0; i < slots_used_; ++i) {
    int none = -1;
    (void)io_uring_register_files_update(&ring_, i, &none, 1);
    slot_fd_[i] = -1;
  }
  slots_used_ = 0;
}

uring_queue::~uring_queue() { io_uring_queue_exit(&ring_); }

void uring_queue::submit(std::span<const io_op> ops) {
  for (const io_op& op : ops) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {  // the submission queue is full: hand it to the kernel first
      const int r = io_uring_submit(&ring_);
      if (r < 0) throw io_error(-r, "io_uring_submit failed");
      sqe = io_uring_get_sqe(&ring_);
      if (sqe == nullptr) throw io_error(EBUSY, "io_uring: no submission entry free");
    }
    const int* slot = std::find(slot_fd_, slot_fd_ + slots_used_, op.fd);
    const bool fixed = slot != slot_fd_ + slots_used_;
    const int target = fixed ? static_cast<int>(slot - slot_fd_) : op.fd;
    if (op.write) {
      io_uring_prep_write(sqe, target, op.buf, static_cast<unsigned>(op.len), op.offset);
    } else {
      io_uring_prep_read(sqe, target, op.buf, static_cast<unsigned>(op.len), op.offset);
    }
    if (fixed) sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64(sqe, op.tag);
  }
  for (;;) {
    const int r = io_uring_submit(&ring_);
    if (r >= 0) return;
    if (r != -EINTR && r != -EAGAIN) throw io_error(-r, "io_uring_submit failed");
  }
}

std::size_t uring_queue::wait(std::span<io_completion> out, std::size_t min,
                              std::chrono::microseconds timeout) {
  if (min > 0) {
    io_uring_cqe* cqe = nullptr;
    __kernel_timespec ts{};
    ts.tv_sec = timeout.count() / 1000000;
    ts.tv_nsec = (timeout.count() % 1000000) * 1000;
    const int r = io_uring_wait_cqes(&ring_, &cqe, static_cast<unsigned>(min), &ts, nullptr);
    if (r < 0 && r != -ETIME && r != -EINTR && r != -EAGAIN) {
      throw io_error(-r, "io_uring_wait_cqes failed");
    }
  }
  io_uring_cqe* cqes[64];
  std::size_t got = 0;
  while (got < out.size()) {
    const unsigned want = static_cast<unsigned>(std::min<std::size_t>(64, out.size() - got));
    const unsigned n = io_uring_peek_batch_cqe(&ring_, cqes, want);
    if (n == 0) break;
    for (unsigned i = 0; i < n; ++i) {
      out[got++] = {io_uring_cqe_get_data64(cqes[i]), static_cast<long>(cqes[i]->res)};
    }
    io_uring_cq_advance(&ring_, n);
  }
  return got;
}

}  // namespace lris::io::detail
