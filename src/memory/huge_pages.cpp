/// @file
/// @brief The mmap side of huge_page_allocator: hugetlb pools, THP and the mapping table.

#include <lris/memory/huge_page_allocator.hpp>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <mutex>
#include <string>
#include <unordered_map>

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <lris/error.hpp>
#include <lris/memory/detail/allocation.hpp>

// Older libc headers lack the page-size selectors; the encoding is the kernel ABI (log2 of the
// page size in bits 26..31 of the flags).
#ifndef MAP_HUGE_SHIFT
#define MAP_HUGE_SHIFT 26
#endif
#ifndef MAP_HUGE_2MB
#define MAP_HUGE_2MB (21 << MAP_HUGE_SHIFT)
#endif
#ifndef MAP_HUGE_1GB
#define MAP_HUGE_1GB (30 << MAP_HUGE_SHIFT)
#endif

namespace lris {

namespace detail {
struct huge_page_state {
  struct mapping {
    std::size_t length;
    page_kind kind;
  };

  explicit huge_page_state(huge_page_options o) : options(o) {}

  const huge_page_options options;
  std::mutex mutex;
  std::unordered_map<void*, mapping> mappings;  // start of each live mapping
  huge_page_stats stats;
};
}  // namespace detail

namespace {

constexpr std::size_t two_mib = std::size_t{2} << 20;
constexpr std::size_t one_gib = std::size_t{1} << 30;
constexpr std::string_view thp_enabled_path = "/sys/kernel/mm/transparent_hugepage/enabled";

std::size_t base_page() noexcept {
  static const std::size_t size = [] {
    const long v = ::sysconf(_SC_PAGESIZE);
    return v > 0 ? static_cast<std::size_t>(v) : std::size_t{4096};
  }();
  return size;
}

std::size_t read_count(const std::string& file) {
  std::ifstream in(file);
  std::size_t v = 0;
  if (!(in >> v)) return 0;
  return v;
}

struct mapped {
  void* ptr = nullptr;
  int error = 0;  // errno of the failed mmap
};

// mmap only guarantees alignment to the mapping's page size; for stricter alignment the caller
// asks for `slack` bytes more, and what lies either side of the aligned block is unmapped, so
// that the mapping left is exactly `size` bytes (what deallocate will unmap).
mapped map_aligned(std::size_t size, std::size_t slack, std::size_t align, int flags) noexcept {
  const std::size_t total = size + slack;
  void* raw = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | flags,
                     -1, 0);
  if (raw == MAP_FAILED) return {nullptr, errno};
  const auto base = reinterpret_cast<std::uintptr_t>(raw);
  const std::uintptr_t aligned = (base + align - 1) & ~static_cast<std::uintptr_t>(align - 1);
  const std::size_t head = aligned - base;
  const std::size_t tail = total - head - size;
  if (head != 0) ::munmap(raw, head);
  if (tail != 0) ::munmap(reinterpret_cast<void*>(aligned + size), tail);
  return {reinterpret_cast<void*>(aligned), 0};
}

[[noreturn]] void throw_unavailable(page_kind kind, std::size_t bytes, int error) {
  if (kind == page_kind::thp) {
    const thp_mode mode = transparent_huge_page_mode();
    throw unsupported(fmt::format(
        "huge_page_allocator: transparent huge pages were required for {} bytes but {}; "
        "set it to madvise or always, or drop `require`",
        bytes,
        mode == thp_mode::unavailable ? fmt::format("{} does not exist", thp_enabled_path)
        : error != 0 ? fmt::format("madvise(MADV_HUGEPAGE) failed: {}", std::strerror(error))
                     : fmt::format("{} says never", thp_enabled_path)));
  }
  const huge_page_reservation r = reserved_huge_pages(kind);
  if (!r.present) {
    throw unsupported(fmt::format(
        "huge_page_allocator: {} pages were required for {} bytes but this kernel does not "
        "offer them ({} does not exist)",
        to_string(kind), bytes, r.path));
  }
  const std::size_t needed = bytes / r.page_bytes + (bytes % r.page_bytes != 0 || bytes == 0);
  if (r.total == 0) {
    throw unsupported(fmt::format(
        "huge_page_allocator: {} pages were required for {} bytes but none are reserved "
        "({}/nr_hugepages is 0, free_hugepages 0); reserve at least {} (`echo {} > "
        "{}/nr_hugepages` as root, or hugepagesz=... hugepages=... on the kernel command line) "
        "or drop `require`",
        to_string(kind), bytes, r.path, needed, needed, r.path));
  }
  detail::throw_out_of_memory(
      "huge_page_allocator", bytes, r.page_bytes,
      fmt::format("{} pages required: needs {} pages, {} has {} reserved, {} free (mmap: {})",
                  to_string(kind), needed, r.path, r.total, r.free, std::strerror(error)));
}

}  // namespace

std::size_t page_bytes(page_kind k) noexcept {
  switch (k) {
    case page_kind::normal: return base_page();
    case page_kind::thp: {
      static const std::size_t pmd = [] {
        const std::size_t v = read_count("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size");
        return detail::is_power_of_two(v) ? v : two_mib;
      }();
      return pmd;
    }
    case page_kind::huge_2m: return two_mib;
    case page_kind::huge_1g: return one_gib;
  }
  return base_page();
}

huge_page_reservation reserved_huge_pages(page_kind kind) {
  huge_page_reservation r;
  if (kind != page_kind::huge_2m && kind != page_kind::huge_1g) return r;
  r.page_bytes = page_bytes(kind);
  r.path = fmt::format("/sys/kernel/mm/hugepages/hugepages-{}kB", r.page_bytes >> 10);
  struct stat st {};
  r.present = ::stat(r.path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  if (r.present) {
    r.total = read_count(r.path + "/nr_hugepages");
    r.free = read_count(r.path + "/free_hugepages");
  }
  return r;
}

thp_mode transparent_huge_page_mode() noexcept {
  try {
    std::ifstream in{std::string(thp_enabled_path)};
    std::string line;
    if (!std::getline(in, line)) return thp_mode::unavailable;
    // The active choice is bracketed: "always [madvise] never".
    if (line.find("[always]") != std::string::npos) return thp_mode::always;
    if (line.find("[madvise]") != std::string::npos) return thp_mode::madvise;
    if (line.find("[never]") != std::string::npos) return thp_mode::never;
    return thp_mode::unavailable;
  } catch (...) {
    return thp_mode::unavailable;
  }
}

huge_page_allocator::huge_page_allocator() : huge_page_allocator(huge_page_options{}) {}

huge_page_allocator::huge_page_allocator(huge_page_options options)
    : state_(std::make_shared<detail::huge_page_state>(options)) {}

huge_page_options huge_page_allocator::options() const noexcept { return state_->options; }

huge_page_stats huge_page_allocator::stats() const {
  std::lock_guard lock(state_->mutex);
  return state_->stats;
}

huge_allocation huge_page_allocator::allocate_reporting(std::size_t bytes,
                                                        std::size_t alignment) {
  detail::check_alignment(name, alignment);
  const huge_page_options opts = state_->options;
  const std::size_t want = detail::at_least_one(bytes);
  std::string failures;

  for (int k = static_cast<int>(opts.preferred); k >= 0; --k) {
    const auto kind = static_cast<page_kind>(k);
    if (opts.require && kind != opts.preferred) break;
    const std::size_t granule = page_bytes(kind);
    // A buffer smaller than one huge page would waste most of it (hugetlb) or cannot be huge
    // at all (THP needs an aligned 2 MiB range); only `require` insists.
    if (!opts.require && kind != page_kind::normal && want < granule) continue;
    if (kind == page_kind::thp) {
      const thp_mode mode = transparent_huge_page_mode();
      if (mode != thp_mode::always && mode != thp_mode::madvise) {
        if (opts.require) throw_unavailable(kind, bytes, 0);
        continue;
      }
    }
    const std::size_t align = std::max(alignment, granule);
    const std::size_t size = detail::round_up(name, want, granule, align);
    // hugetlb mappings come aligned to their page; anonymous ones only to the base page.
    const bool hugetlb = kind == page_kind::huge_2m || kind == page_kind::huge_1g;
    const std::size_t natural = hugetlb ? granule : base_page();
    const std::size_t slack = align > natural ? align - natural : 0;
    (void)detail::checked_add(name, size, slack, align);
    const int flags = kind == page_kind::huge_1g   ? (MAP_HUGETLB | MAP_HUGE_1GB)
                      : kind == page_kind::huge_2m ? (MAP_HUGETLB | MAP_HUGE_2MB)
                                                   : 0;
    const mapped m = map_aligned(size, slack, align, flags);
    if (m.ptr == nullptr) {
      if (opts.require) {
        if (kind == page_kind::normal || kind == page_kind::thp) {
          detail::throw_out_of_memory(name, bytes, align,
                                      fmt::format("mmap ({} pages): {}", to_string(kind),
                                                  std::strerror(m.error)));
        }
        throw_unavailable(kind, bytes, m.error);
      }
      failures += fmt::format("{}{}: mmap: {}", failures.empty() ? "" : "; ", to_string(kind),
                              std::strerror(m.error));
      continue;
    }
    page_kind got = kind;
    if (kind == page_kind::thp && ::madvise(m.ptr, size, MADV_HUGEPAGE) != 0) {
      const int error = errno;
      if (opts.require) {
        ::munmap(m.ptr, size);
        throw_unavailable(kind, bytes, error);
      }
      got = page_kind::normal;  // still a good mapping, just of base pages
    }
    try {
      std::lock_guard lock(state_->mutex);
      state_->mappings.emplace(m.ptr, detail::huge_page_state::mapping{size, got});
      auto& s = state_->stats;
      ++s.allocations[static_cast<std::size_t>(got)];
      s.mapped_bytes[static_cast<std::size_t>(got)] += size;
      ++s.live_mappings;
    } catch (...) {
      ::munmap(m.ptr, size);
      throw;
    }
    return {m.ptr, got, size};
  }
  detail::throw_out_of_memory(name, bytes, alignment,
                              failures.empty() ? "no page kind could be tried" : failures);
}

void huge_page_allocator::deallocate(void* p, std::size_t, std::size_t) noexcept {
  if (p == nullptr) return;
  detail::huge_page_state::mapping m{};
  {
    std::lock_guard lock(state_->mutex);
    const auto it = state_->mappings.find(p);
    assert(it != state_->mappings.end() && "huge_page_allocator: pointer not from this allocator");
    if (it == state_->mappings.end()) return;
    m = it->second;
    state_->mappings.erase(it);
    auto& s = state_->stats;
    s.mapped_bytes[static_cast<std::size_t>(m.kind)] -= m.length;
    --s.live_mappings;
  }
  ::munmap(p, m.length);
}

}  // namespace lris
