#include "uring_queue.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <unordered_set>

#include <sys/uio.h>

#include <fmt/format.h>

#include <lris/error.hpp>

namespace lris::io::detail {

uring_queue::uring_queue(unsigned depth) : depth_(depth) {
  const int r = io_uring_queue_init(depth, &ring_, 0);
  if (r < 0) throw io_error(-r, fmt::format("io_uring_queue_init({}) failed", depth));
  // Fixed files where the kernel has sparse tables (5.19); plain descriptors otherwise.
  sparse_files_ = io_uring_register_files_sparse(&ring_, file_slots) == 0;
  // Fixed buffers likewise (5.19), filled in by sync_buffers.
  sparse_buffers_ = io_uring_register_buffers_sparse(&ring_, buffer_slots) == 0;
  buffers_.resize(buffer_slots);
}

std::size_t uring_queue::sync_buffers(std::span<const fixed_buffer> buffers) {
  if (!sparse_buffers_) return 0;
  std::unordered_set<std::uint64_t> wanted, held;
  for (const fixed_buffer& b : buffers) wanted.insert(b.id);
  auto set_slot = [&](unsigned slot, const fixed_buffer& b) {
    iovec iov{b.data, b.bytes};
    __u64 tag = 0;
    if (io_uring_register_buffers_update_tag(&ring_, slot, &iov, &tag, 1) != 1) return false;
    buffers_[slot] = b;
    return true;
  };
  // Memory no longer registered leaves its slot first (its pages are unpinned), so that a
  // slot is free for what is new.
  std::vector<unsigned> free;
  for (unsigned i = buffer_slots; i-- > 0;) {
    if (buffers_[i].id != 0 && wanted.count(buffers_[i].id) == 0 && !set_slot(i, fixed_buffer{})) {
      buffers_[i] = fixed_buffer{};  // the kernel refused to clear it: never use it again
      continue;
    }
    if (buffers_[i].id == 0) {
      free.push_back(i);
    } else {
      held.insert(buffers_[i].id);
    }
  }
  for (const fixed_buffer& b : buffers) {
    if (held.count(b.id) != 0 || free.empty()) continue;
    // A refusal (RLIMIT_MEMLOCK, a buffer over 1 GiB) leaves that memory unregistered.
    if (set_slot(free.back(), b)) {
      free.pop_back();
      held.insert(b.id);
    }
  }
  by_address_.clear();
  for (unsigned i = 0; i < buffer_slots; ++i) {
    if (buffers_[i].id != 0) by_address_.emplace_back(buffers_[i].data, i);
  }
  std::sort(by_address_.begin(), by_address_.end());
  return held.size();
}

int uring_queue::buffer_slot(const void* buf, std::size_t len) const noexcept {
  // The last registration that starts at or before `buf` (registrations do not overlap).
  const auto* p = static_cast<const std::byte*>(buf);
  auto it = std::upper_bound(by_address_.begin(), by_address_.end(), p,
                             [](const std::byte* a, const auto& e) { return a < e.first; });
  if (it == by_address_.begin()) return -1;
  const fixed_buffer& b = buffers_[std::prev(it)->second];
  const auto off = static_cast<std::size_t>(p - b.data);
  return len <= b.bytes && off <= b.bytes - len ? static_cast<int>(std::prev(it)->second) : -1;
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
    const int buf_slot = buffer_slot(op.buf, op.len);
    const auto len = static_cast<unsigned>(op.len);
    if (buf_slot >= 0) {
      ++fixed_ops_;
      if (op.write) {
        io_uring_prep_write_fixed(sqe, target, op.buf, len, op.offset, buf_slot);
      } else {
        io_uring_prep_read_fixed(sqe, target, op.buf, len, op.offset, buf_slot);
      }
    } else if (op.write) {
      io_uring_prep_write(sqe, target, op.buf, len, op.offset);
    } else {
      io_uring_prep_read(sqe, target, op.buf, len, op.offset);
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
