#pragma once
// The disk ceilings LRIS is measured against: a plain sequential O_DIRECT read or write of a
// whole file with liburing, `depth` operations of `block` bytes in flight, no LRIS code.

#include <fcntl.h>
#include <liburing.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <system_error>

namespace lris::tool {

/// Moves `bytes` of the file at `path` from offset 0 into or out of `buf` (4096-aligned);
/// returns seconds. Throws std::system_error on any failure.
inline double raw_uring_io(const std::filesystem::path& path, void* buf, std::uint64_t bytes,
                           unsigned depth, std::size_t block, bool write) {
  const int fd = ::open(path.c_str(), (write ? O_WRONLY | O_CREAT : O_RDONLY) | O_DIRECT, 0644);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "open " + path.string());
  io_uring ring{};
  if (const int r = io_uring_queue_init(depth, &ring, 0); r < 0) {
    ::close(fd);
    throw std::system_error(-r, std::generic_category(), "io_uring_queue_init");
  }
  const auto start = std::chrono::steady_clock::now();
  std::uint64_t next = 0, done = 0;
  unsigned in_flight = 0;
  int error = 0;
  while (done < bytes && error == 0) {
    while (in_flight < depth && next < bytes) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring);
      const auto len = static_cast<unsigned>(std::min<std::uint64_t>(block, bytes - next));
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
      error = EIO;  // a short transfer: the baseline does not resubmit, so it must not happen
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
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  io_uring_queue_exit(&ring);
  ::close(fd);
  if (error) throw std::system_error(error, std::generic_category(), "raw io on " + path.string());
  return seconds;
}

}  // namespace lris::tool
