/// @file
/// @brief page_populator's threads: madvise(MADV_POPULATE_WRITE) piece by piece.

#include <lris/memory/page_populator.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <span>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

// Older libc headers lack it; the value is the kernel ABI (Linux 5.14).
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace lris {

namespace {

// Whole pages around each range, adjacent or overlapping ones joined, cut into pieces of at
// most `piece` bytes (a multiple of the page), in the order of the ranges.
std::vector<std::span<std::byte>> page_pieces(std::span<const std::span<std::byte>> ranges,
                                              std::size_t page, std::size_t piece) {
  std::vector<std::span<std::byte>> runs;
  for (const auto& r : ranges) {
    if (r.empty()) continue;
    const auto first = reinterpret_cast<std::uintptr_t>(r.data()) / page * page;
    const auto last = (reinterpret_cast<std::uintptr_t>(r.data()) + r.size() + page - 1) / page * page;
    auto* b = reinterpret_cast<std::byte*>(first);
    auto* e = reinterpret_cast<std::byte*>(last);
    if (!runs.empty() && b >= runs.back().data() && b <= runs.back().data() + runs.back().size()) {
      auto* end = std::max(e, runs.back().data() + runs.back().size());
      runs.back() = {runs.back().data(), static_cast<std::size_t>(end - runs.back().data())};
    } else {
      runs.emplace_back(b, e);
    }
  }
  std::vector<std::span<std::byte>> out;
  for (const auto& r : runs) {
    for (std::size_t at = 0; at < r.size(); at += piece) {
      out.push_back(r.subspan(at, std::min(piece, r.size() - at)));
    }
  }
  return out;
}

}  // namespace

page_populator::page_populator(std::span<const std::span<std::byte>> ranges, unsigned threads,
                               std::size_t piece_bytes) {
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  pieces_ = page_pieces(ranges, page, std::max(page, (piece_bytes + page - 1) / page * page));
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

page_populator::page_populator(void* begin, std::size_t bytes, unsigned threads,
                               std::size_t piece_bytes)
    : page_populator(std::span<const std::span<std::byte>>(
                         std::vector<std::span<std::byte>>{{static_cast<std::byte*>(begin), bytes}}),
                     threads, piece_bytes) {}

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
    const std::size_t i = next_.fetch_add(1);
    if (i >= pieces_.size()) return;
    const std::span<std::byte> piece = pieces_[i];
    int rc;
    do {
      rc = ::madvise(piece.data(), piece.size(), MADV_POPULATE_WRITE);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) {
      int expected = 0;
      error_.compare_exchange_strong(expected, errno);
      stop_ = true;
      return;
    }
    done_ += piece.size();
  }
}

}  // namespace lris
