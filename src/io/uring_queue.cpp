#include "uring_queue.hpp"

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include <lris/error.hpp>

namespace lris::io::detail {

uring_queue::uring_queue(unsigned depth) : depth_(depth) {
  const int r = io_uring_queue_init(depth, &ring_, 0);
  if (r < 0) throw io_error(-r, fmt::format("io_uring_queue_init({}) failed", depth));
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
    if (op.write) {
      io_uring_prep_write(sqe, op.fd, op.buf, static_cast<unsigned>(op.len), op.offset);
    } else {
      io_uring_prep_read(sqe, op.fd, op.buf, static_cast<unsigned>(op.len), op.offset);
    }
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
