/// @file
/// @brief process_mappings: /proc/self/maps read into address ranges and their write permission.

#include <lris/memory/process_mappings.hpp>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <string>

#include <fcntl.h>
#include <unistd.h>

namespace lris {

process_mappings process_mappings::read() {
  process_mappings out;
  // The whole file in one buffer (the kernel writes it a page at a time), then its lines.
  const int fd = ::open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return out;
  std::string text;
  std::size_t used = 0;
  for (;;) {
    if (text.size() - used < 4096) text.resize(std::max<std::size_t>(64 << 10, text.size() * 2));
    const ssize_t n = ::read(fd, text.data() + used, text.size() - used);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    used += static_cast<std::size_t>(n);
  }
  ::close(fd);
  // Each line: "begin-end perms offset dev inode path".
  const char* at = text.data();
  const char* const end = text.data() + used;
  while (at < end) {
    const char* eol = static_cast<const char*>(std::memchr(at, '\n', static_cast<std::size_t>(end - at)));
    if (eol == nullptr) eol = end;
    std::uintptr_t begin = 0, stop = 0;
    auto r = std::from_chars(at, eol, begin, 16);
    if (r.ec == std::errc{} && r.ptr < eol && *r.ptr == '-') {
      r = std::from_chars(r.ptr + 1, eol, stop, 16);
      if (r.ec == std::errc{} && eol - r.ptr >= 3 && r.ptr[0] == ' ') {
        out.maps_.push_back({begin, stop, r.ptr[1] == 'r', r.ptr[2] == 'w'});
      }
    }
    at = eol + 1;
  }
  std::sort(out.maps_.begin(), out.maps_.end(),
            [](const mapping& a, const mapping& b) { return a.begin < b.begin; });
  out.known_ = !out.maps_.empty();
  return out;
}

const std::byte* process_mappings::first_unwritable(const void* p, std::size_t n) const noexcept {
  return first_without(p, n, &mapping::writable);
}

const std::byte* process_mappings::first_unreadable(const void* p, std::size_t n) const noexcept {
  return first_without(p, n, &mapping::readable);
}

const std::byte* process_mappings::first_without(const void* p, std::size_t n,
                                                 bool mapping::*allowed) const noexcept {
  if (n == 0 || !known_) return nullptr;
  auto at = reinterpret_cast<std::uintptr_t>(p);
  const std::uintptr_t end = at + n;
  // The first mapping that ends after `at`, then each one after it while they join up.
  auto it = std::upper_bound(maps_.begin(), maps_.end(), at,
                             [](std::uintptr_t a, const mapping& m) { return a < m.end; });
  for (; at < end; ++it) {
    if (it == maps_.end() || it->begin > at || !((*it).*allowed)) {
      return reinterpret_cast<const std::byte*>(at);
    }
    at = it->end;
  }
  return nullptr;
}

const std::byte* probe_ends(const void* p, std::size_t n, bool write) noexcept {
  if (n == 0) return nullptr;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) return nullptr;
  auto* first = static_cast<std::byte*>(const_cast<void*>(p));
  const std::byte* bad = nullptr;
  for (std::byte* at : {first, first + (n - 1)}) {
    char spare = 0;
    if (::write(fds[1], at, 1) != 1) {  // reads the byte: EFAULT where it may not be read
      bad = at;
      break;
    }
    if (write && ::read(fds[0], at, 1) != 1) {  // writes it back: EFAULT where it may not
      (void)::read(fds[0], &spare, 1);          // the byte, if the failed read left it
      bad = at;
      break;
    }
    if (!write) (void)::read(fds[0], &spare, 1);
    if (n == 1) break;
  }
  ::close(fds[0]);
  ::close(fds[1]);
  return bad;
}

}  // namespace lris
