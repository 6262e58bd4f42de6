#pragma once
// Files whose every 8-byte word holds its own offset (mixed with a seed): any byte read from
// the wrong offset, or not read at all, shows.

#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdio>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <lris/io/engine.hpp>
#include <lris/memory/buffer.hpp>
#include <lris/memory/page_aligned_allocator.hpp>

namespace lris::test {

inline std::uint64_t stamp_word(std::uint64_t offset, std::uint64_t seed) {
  return (offset * 0x9E3779B97F4A7C15ull) ^ seed ^ 0xA5A5A5A5A5A5A5A5ull;
}

/// The byte at file offset `at` of a stamped file.
inline std::byte stamp_byte(std::uint64_t at, std::uint64_t seed) {
  const std::uint64_t w = stamp_word(at / 8 * 8, seed);
  return static_cast<std::byte>(w >> (8 * (at % 8)));
}

/// True when [buf, buf + len) holds the file's bytes from `offset`.
inline bool stamped_from(const std::byte* buf, std::size_t len, std::uint64_t offset,
                         std::uint64_t seed) {
  for (std::size_t i = 0; i < len; ++i) {
    if (buf[i] != stamp_byte(offset + i, seed)) return false;
  }
  return true;
}

/// Writes a stamped file of `bytes` at `path`.
inline void write_stamped(const std::filesystem::path& path, std::uint64_t bytes,
                          std::uint64_t seed) {
  std::vector<std::byte> data(bytes);
  for (std::uint64_t i = 0; i < bytes; ++i) data[i] = stamp_byte(i, seed);
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(bytes));
}

/// Page-aligned memory (the project's page_aligned_allocator), `p` offset by `shift` bytes
/// from the page: for O_DIRECT with and without matching alignment.
struct aligned_buffer {
  lris::buffer<lris::page_aligned_allocator> mem;
  std::byte* p;
  explicit aligned_buffer(std::size_t bytes, std::size_t shift = 0)
      : mem(bytes + shift + 1), p(mem.data() + shift) {}
};

/// A directory for test files on a disk file system (O_DIRECT works there, unlike tmpfs).
inline std::filesystem::path disk_dir() {
  auto dir = std::filesystem::current_path() / "io_test_files";
  std::filesystem::create_directories(dir);
  return dir;
}

/// A stamped file `name` of `bytes` in disk_dir(), written once per process.
inline std::filesystem::path stamped_file(const std::string& name, std::uint64_t bytes,
                                          std::uint64_t seed) {
  auto path = disk_dir() / name;
  std::error_code ec;
  if (std::filesystem::file_size(path, ec) != bytes || ec) write_stamped(path, bytes, seed);
  return path;
}

/// Whether the kernel is Linux `major`.`minor` or later.
inline bool kernel_at_least(unsigned major, unsigned minor) {
  utsname u{};
  unsigned a = 0, b = 0;
  if (::uname(&u) != 0 || std::sscanf(u.release, "%u.%u", &a, &b) != 2) return false;
  return a > major || (a == major && b >= minor);
}

/// Whether the engine can register `bytes` of memory here: io_uring with sparse buffer tables
/// (Linux 5.19), and the pages within RLIMIT_MEMLOCK (which root is not held to).
inline bool fixed_buffers_expected(const lris::io::io_engine& engine, std::size_t bytes) {
  rlimit lim{};
  ::getrlimit(RLIMIT_MEMLOCK, &lim);
  return engine.backend() == "io_uring" && kernel_at_least(5, 19) &&
         (::geteuid() == 0 || lim.rlim_cur == RLIM_INFINITY || lim.rlim_cur >= 2 * bytes);
}

}  // namespace lris::test
