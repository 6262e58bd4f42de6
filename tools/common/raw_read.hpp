#pragma once
// Raw reads of a whole file by one of several methods, no LRIS code: the ceilings a load from
// disk is measured against. O_DIRECT on one or more io_uring rings (each on its own thread and
// its own contiguous share), buffered pread on several threads (the kernel's readahead in
// front of each), or both at once on disjoint ranges of the file.

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

#include "raw_uring.hpp"

namespace lris::tool {

struct raw_read_method {
  std::string name;
  unsigned direct_queues = 0;  ///< O_DIRECT io_uring rings, a thread each
  unsigned depth = 0;          ///< operations in flight per ring
  std::size_t direct_block = std::size_t{1} << 20;
  unsigned buffered_threads = 0;  ///< threads doing buffered pread
  std::size_t buffered_block = std::size_t{8} << 20;
  /// Share of each file read with O_DIRECT where both kinds are used (the rest buffered).
  double direct_share = 1.0;
};

namespace detail {

// A buffered pread of [from, to) in `block`-byte calls; 0 or an errno (EIO: the file ended).
inline int pread_range(int fd, void* buf, std::uint64_t from, std::uint64_t to,
                       std::size_t block, const std::atomic<int>& stop) {
  for (std::uint64_t at = from; at < to && stop.load() == 0;) {
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(block, to - at));
    const ssize_t got = ::pread(fd, static_cast<char*>(buf) + at, n, static_cast<off_t>(at));
    if (got <= 0) return got < 0 ? errno : EIO;
    at += static_cast<std::uint64_t>(got);
  }
  return 0;
}

// [from, to) split into `parts` contiguous shares of whole `unit`s (the last takes the rest).
inline std::vector<std::pair<std::uint64_t, std::uint64_t>> shares(std::uint64_t from,
                                                                   std::uint64_t to,
                                                                   unsigned parts,
                                                                   std::uint64_t unit) {
  std::vector<std::pair<std::uint64_t, std::uint64_t>> out;
  if (parts == 0 || to <= from) return out;
  const std::uint64_t share = ((to - from) / parts + unit - 1) / unit * unit;
  for (unsigned i = 0; i < parts; ++i) {
    const std::uint64_t a = std::min(to, from + i * share);
    const std::uint64_t b = i + 1 == parts ? to : std::min(to, a + share);
    if (a < b) out.emplace_back(a, b);
  }
  return out;
}

}  // namespace detail

/// Reads `bytes` (whole 4096-byte blocks) of the file at `path` from offset 0 into `buf`
/// (4096-aligned) by `m`; returns seconds. Throws std::system_error on any failure.
inline double raw_read(const std::filesystem::path& path, void* buf, std::uint64_t bytes,
                       const raw_read_method& m) {
  const bool direct = m.direct_queues > 0, buffered = m.buffered_threads > 0;
  const double share = !buffered ? 1.0 : !direct ? 0.0 : std::clamp(m.direct_share, 0.0, 1.0);
  const std::uint64_t split =
      std::min(bytes, static_cast<std::uint64_t>(static_cast<double>(bytes) * share) /
                          m.direct_block * m.direct_block);
  int fds[2] = {-1, -1};  // O_DIRECT, buffered
  auto close_all = [&] {
    for (const int fd : fds) {
      if (fd >= 0) ::close(fd);
    }
  };
  for (int k = 0; k < 2; ++k) {
    if (k == 0 ? !direct : !buffered) continue;
    fds[k] = ::open(path.c_str(), O_RDONLY | (k == 0 ? O_DIRECT : 0));
    if (fds[k] < 0) {
      const int e = errno;
      close_all();
      throw std::system_error(e, std::generic_category(), "open " + path.string());
    }
  }
  if (buffered) (void)::posix_fadvise(fds[1], 0, 0, POSIX_FADV_SEQUENTIAL);
  std::atomic<int> error{0};
  auto fail = [&](int e) {
    int none = 0;
    if (e != 0) error.compare_exchange_strong(none, e);
  };
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> team;
  for (const auto& [a, b] : detail::shares(0, split, m.direct_queues, m.direct_block)) {
    team.emplace_back([&, a, b] {
      fail(raw_uring_range(fds[0], buf, a, b, std::max(1u, m.depth), m.direct_block, false));
    });
  }
  for (const auto& [a, b] : detail::shares(split, bytes, m.buffered_threads, m.buffered_block)) {
    team.emplace_back([&, a, b] { fail(detail::pread_range(fds[1], buf, a, b, m.buffered_block, error)); });
  }
  for (auto& t : team) t.join();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  close_all();
  if (error.load() != 0) {
    throw std::system_error(error.load(), std::generic_category(),
                            "raw read (" + m.name + ") of " + path.string());
  }
  return seconds;
}

}  // namespace lris::tool
