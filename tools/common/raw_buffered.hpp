#pragma once
// A disk ceiling of another kind than raw_uring.hpp's: a plain buffered read of a whole file
// by `threads` threads, each reading its contiguous share with pread in `block`-byte calls
// (the kernel's readahead in front of each), no LRIS code.

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace lris::tool {

/// Reads `bytes` of the file at `path` from offset 0 into `buf`; returns seconds. Throws
/// std::system_error on any failure (a short read included).
inline double raw_buffered_read(const std::filesystem::path& path, void* buf, std::uint64_t bytes,
                                unsigned threads, std::size_t block) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "open " + path.string());
  (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  threads = std::max(1u, threads);
  const std::uint64_t share = (bytes / threads + block - 1) / block * block;
  std::atomic<int> error{0};
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> team;
  for (unsigned t = 0; t < threads; ++t) {
    const std::uint64_t from = std::min<std::uint64_t>(bytes, t * share);
    const std::uint64_t to = std::min<std::uint64_t>(bytes, from + share);
    team.emplace_back([&, from, to] {
      for (std::uint64_t at = from; at < to && error.load() == 0;) {
        const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(block, to - at));
        const ssize_t got = ::pread(fd, static_cast<char*>(buf) + at, n, static_cast<off_t>(at));
        if (got <= 0) {
          error = got < 0 ? errno : EIO;  // the file ended early: a short read
          return;
        }
        at += static_cast<std::uint64_t>(got);
      }
    });
  }
  for (auto& t : team) t.join();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ::close(fd);
  if (error.load() != 0) {
    throw std::system_error(error.load(), std::generic_category(), "buffered read of " + path.string());
  }
  return seconds;
}

}  // namespace lris::tool
