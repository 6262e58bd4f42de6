#pragma once
// The disk ceilings LRIS is measured against: a plain sequential O_DIRECT read or write of a
// whole file with liburing, `depth` operations of `block` bytes in flight, no LRIS code.

#include <fcntl.h>
#include <liburing.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <system_error>

namespace lris::tool {

/// Moves [from, to) of the open file `fd` into or out of `buf` + from (4096-aligned), `depth`
/// operations of `block` bytes in flight on a ring of its own; returns 0 or the errno of the
/// first failure (a short transfer is EIO: the baseline does not resubmit).
inline int raw_uring_range(int fd, void* buf, std::uint64_t from, std::uint64_t to, unsigned depth,
                           std::size_t block, bool write) {
  io_uring ring{};
  if (const int r = io_uring_queue_init(depth, &ring, 0); r < 0) return -r;
  std::uint64_t next = from, done = from;
  unsigned in_flight = 0;
  int error = 0;
  while (done < to && error == 0) {
    while (in_flight < depth && next < to) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring);
      const auto len = static_cast<unsigned>(std::min<std::uint64_t>(block, to - next));
      auto* p = static_cast<char*>(buf) + next;
      if (write) {
        io_uring_prep_write(sqe, fd, p, len, next);
      } else {
        io_uring_prep_read(sqe, fd, p, len, next);
      }
      sqe->user_data = len;
      next += len;
      ++in_flight;
    }
    io_uring_submit(&ring);
    io_uring_cqe* cqe = nullptr;
    if (const int r = io_uring_wait_cqe(&ring, &cqe); r < 0) {
      error = -r;
      break;
    }
    if (cqe->res < 0) {
      error = -cqe->res;
    } else if (static_cast<std::uint64_t>(cqe->res) != cqe->user_data) {
      error = EIO;
    }
    done += cqe->user_data;
    --in_flight;
    io_uring_cqe_seen(&ring, cqe);
  }
  while (in_flight > 0) {  // drain before the buffer can go
    io_uring_cqe* cqe = nullptr;
    if (io_uring_wait_cqe(&ring, &cqe) < 0) break;
    io_uring_cqe_seen(&ring, cqe);
    --in_flight;
  }
  io_uring_queue_exit(&ring);
  return error;
}

/// Moves `bytes` of the file at `path` from offset 0 into or out of `buf` (4096-aligned);
/// returns seconds. Throws std::system_error on any failure.
inline double raw_uring_io(const std::filesystem::path& path, void* buf, std::uint64_t bytes,
                           unsigned depth, std::size_t block, bool write) {
  const int fd = ::open(path.c_str(), (write ? O_WRONLY | O_CREAT : O_RDONLY) | O_DIRECT, 0644);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "open " + path.string());
  const auto start = std::chrono::steady_clock::now();
  const int error = raw_uring_range(fd, buf, 0, bytes, depth, block, write);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ::close(fd);
  if (error) throw std::system_error(error, std::generic_category(), "raw io on " + path.string());
  return seconds;
}

}  // namespace lris::tool
