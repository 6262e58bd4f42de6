#pragma once
// Host memory for the runtime to pin: an anonymous mapping, aligned to 2 MiB and advised onto
// transparent huge pages where it spans one, populated by the kernel, not inherited by fork()
// children (DMA keeps writing the parent's pages). Registering such a mapping costs far less
// than the runtime's own pinned allocation, which faults base pages in one at a time: on an
// H200 host, 32 blocks of 4 MiB took 54-75 ms by cudaHostAlloc, the same bytes mapped here and
// registered 20-28 ms.

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14; older kernels refuse it and registration faults
#endif

namespace lris::gpu_rt {

inline constexpr std::size_t huge_page_bytes = std::size_t{2} << 20;

// The length of the mapping that holds `bytes`: whole base pages, at least one.
inline std::size_t host_pages_length(std::size_t bytes) noexcept {
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return bytes <= page ? page : (bytes + page - 1) / page * page;
}

// A mapping of host_pages_length(bytes) bytes, or null with `error` set (errno of mmap).
inline void* map_host_pages(std::size_t bytes, int& error) noexcept {
  const std::size_t len = host_pages_length(bytes);
  const bool huge = len >= huge_page_bytes;
  const std::size_t total = huge ? len + huge_page_bytes : len;
  void* raw = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) {
    error = errno;
    return nullptr;
  }
  auto* p = static_cast<std::byte*>(raw);
  if (huge) {  // keep the 2 MiB-aligned `len` bytes, unmap either side
    const auto base = reinterpret_cast<std::uintptr_t>(raw);
    const std::size_t head = (huge_page_bytes - base % huge_page_bytes) % huge_page_bytes;
    if (head != 0) ::munmap(raw, head);
    if (total - head - len != 0) ::munmap(p + head + len, total - head - len);
    p += head;
    (void)::madvise(p, len, MADV_HUGEPAGE);  // best effort: THP may be off
  }
  (void)::madvise(p, len, MADV_DONTFORK);
  (void)::madvise(p, len, MADV_POPULATE_WRITE);  // best effort: registration faults the rest
  return p;
}

inline void unmap_host_pages(void* p, std::size_t bytes) noexcept {
  if (p != nullptr) ::munmap(p, host_pages_length(bytes));
}

}  // namespace lris::gpu_rt
