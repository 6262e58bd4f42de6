/// @file
/// @brief page_populator's threads: madvise(MADV_POPULATE_WRITE) piece by piece.

#include <lris/memory/page_populator.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdint>

#include <sys/mman.h>
#include <unistd.h>

#include <fmt/format.h>

#include <lris/error.hpp>

// Older libc headers lack it; the value is the kernel ABI (Linux 5.14).
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace lris {

page_populator::page_populator(void* begin, std::size_t bytes, unsigned threads,
                               std::size_t piece_bytes)
    : begin_(static_cast<std::byte*>(begin)), bytes_(bytes) {
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  if (reinterpret_cast<std::uintptr_t>(begin) % page != 0) {
    throw invalid_argument(fmt::format("page_populator: {} is not aligned to the {}-byte page",
                                       begin, page));
  }
  piece_ = std::max(page, (piece_bytes + page - 1) / page * page);
  threads = std::max(1u, threads);
  threads_.reserve(threads);
  try {
    for (unsigned t = 0; t < threads; ++t) threads_.emplace_back([this] { run(); });
  } catch (...) {
    stop_ = true;
    for (auto& t : threads_) t.join();
    throw;
  }
}

page_populator::~page_populator() {
  stop_ = true;
  wait();
}

void page_populator::wait() {
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
}

void page_populator::run() noexcept {
  while (!stop_.load(std::memory_order_relaxed)) {
    const std::size_t at = next_.fetch_add(piece_);
    if (at >= bytes_) return;
    const std::size_t n = std::min(piece_, bytes_ - at);
    // The last piece's tail may end inside a page: madvise rounds the length up.
    int rc;
    do {
      rc = ::madvise(begin_ + at, n, MADV_POPULATE_WRITE);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) {
      int expected = 0;
      error_.compare_exchange_strong(expected, errno);
      stop_ = true;
      return;
    }
    done_ += n;
  }
}

}  // namespace lris
