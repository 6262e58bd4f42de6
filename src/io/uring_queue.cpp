#include "uring_queue.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <iterator>
#include <thread>
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
  if (!sparse_buffers_ || !ring_open_) return 0;
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
  if (!sparse_files_ || !ring_open_ || fds.size() > file_slots) return false;
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
  for (unsigned i = 0; i < slots_used_ && ring_open_; ++i) {
    int none = -1;
    (void)io_uring_register_files_update(&ring_, i, &none, 1);
    slot_fd_[i] = -1;
  }
  slots_used_ = 0;
}

uring_queue::~uring_queue() {
  if (ring_open_) io_uring_queue_exit(&ring_);
}

namespace {

[[noreturn]] void throw_broken() {
  throw io_error(EIO, "io_uring queue: broken (given up after a failure); it takes no more "
                      "operations");
}

}  // namespace

void uring_queue::submit(std::span<const io_op> ops) {
  if (broken_) throw_broken();
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
    ++in_flight_;
  }
  for (;;) {
    const int r = io_uring_submit(&ring_);
    if (r >= 0) return;
    if (r != -EINTR && r != -EAGAIN) throw io_error(-r, "io_uring_submit failed");
  }
}

std::size_t uring_queue::wait(std::span<io_completion> out, std::size_t min,
                              std::chrono::microseconds timeout) {
  if (broken_) throw_broken();
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
      // Kernels before 5.11 get the wait's timeout as an entry of liburing's own.
      if (io_uring_cqe_get_data64(cqes[i]) == LIBURING_UDATA_TIMEOUT) continue;
      out[got++] = {io_uring_cqe_get_data64(cqes[i]), static_cast<long>(cqes[i]->res)};
      --in_flight_;
    }
    io_uring_cq_advance(&ring_, n);
  }
  return got;
}

// Tearing the ring down is not enough to make the operations safe: io_uring_queue_exit(3)
// unmaps the rings and closes the descriptor, and the kernel's release of the ring
// (io_uring_release -> io_ring_ctx_wait_and_kill in io_uring/io_uring.c) only queues a work
// item (io_ring_exit_work) that cancels and reaps the requests later: close() returns while a
// read may still be landing in its buffer, by DMA or by an io-wq worker's copy. The one sign
// that an operation is done with its memory is its completion, which the kernel posts exactly
// once for every entry it consumed, after the transfer. So completions are reaped first, from
// the mapped completion ring, which takes no system call on the ring: that works even when
// io_uring_enter is what fails (say its descriptor was closed under us; the mappings keep the
// ring alive, since each holds a reference to its file). The kernel posts completions without
// us entering it: this ring is set up without IORING_SETUP_DEFER_TASKRUN (under which they
// would be posted only inside io_uring_enter), and the task work that posts some of them runs
// when this thread returns from its sleeps. Entries the kernel never consumed (a submit that
// failed) stay in the submission ring, which nothing submits any more: they never run. Only
// then is the ring torn down. The wait is as long as the kernel takes to finish what it holds
// (bounded by the block layer's own timeouts for a disk), not bounded by us: giving up earlier
// would hand back memory still being written.
std::size_t uring_queue::quiesce() noexcept {
  const std::size_t abandoned = in_flight_;
  if (ring_open_) {
    const std::size_t unsubmitted = std::min<std::size_t>(in_flight_, io_uring_sq_ready(&ring_));
    std::size_t in_kernel = in_flight_ - unsubmitted;
    auto pause = std::chrono::microseconds(20);
    for (;;) {
      unsigned head = 0, seen = 0;
      io_uring_cqe* cqe = nullptr;
      io_uring_for_each_cqe(&ring_, head, cqe) {
        ++seen;
        if (io_uring_cqe_get_data64(cqe) != LIBURING_UDATA_TIMEOUT && in_kernel > 0) --in_kernel;
      }
      io_uring_cq_advance(&ring_, seen);
      if (in_kernel == 0) break;
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds(10000));
    }
    io_uring_queue_exit(&ring_);
    ring_open_ = false;
  }
  in_flight_ = 0;
  slots_used_ = 0;
  by_address_.clear();
  broken_ = true;
  return abandoned;
}

}  // namespace lris::io::detail
