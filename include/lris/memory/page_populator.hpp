#pragma once
/// @file
/// @brief page_populator: faults in the pages of fresh host memory ahead of whoever fills it,
/// on threads of its own.
///
/// Fresh anonymous memory gets its pages at first touch: the kernel allocates and zeroes each
/// page then, on the thread that touches it. A load reading gigabytes from disk straight into
/// new memory (its own block, or tensors a caller just allocated) would pay that on its read
/// path, between one read and the next. A populator walks the ranges in the order given, piece
/// by piece, with madvise(MADV_POPULATE_WRITE), which makes the pages present and writable
/// without changing a byte; so it may run beside the reads into the same ranges, and a piece a
/// read reached first (or memory touched before) costs it a page-table walk.
///
/// Each range is taken in whole pages: the page holding its first byte to the page holding its
/// last. Those pages belong to the same mapping as the range, so nothing outside the caller's
/// memory is touched, and no byte of it changes.
///
/// It stops at the end of the ranges, at the first refusal (a kernel before Linux 5.14 has no
/// MADV_POPULATE_WRITE; nothing is lost: the readers fault the pages in as before), or when it
/// is destroyed, which joins its threads. The memory must outlive it.
#include <atomic>
#include <cstddef>
#include <span>
#include <thread>
#include <vector>

namespace lris {

class page_populator {
 public:
  /// @brief Starts `threads` threads (at least one) populating `ranges`, one after another in
  /// the order given, in pieces of at most `piece_bytes`. Ranges that share a page or follow
  /// one another are walked as one.
  /// @throws std::system_error when a thread cannot be started (the ones started are joined
  /// first).
  page_populator(std::span<const std::span<std::byte>> ranges, unsigned threads,
                 std::size_t piece_bytes = std::size_t{64} << 20);
  /// @brief One range: [begin, begin + bytes).
  page_populator(void* begin, std::size_t bytes, unsigned threads,
                 std::size_t piece_bytes = std::size_t{64} << 20);
  /// @brief Stops the threads after their current piece and joins them.
  ~page_populator();
  page_populator(const page_populator&) = delete;
  page_populator& operator=(const page_populator&) = delete;

  /// @brief Waits until every piece is done or the populator stopped at a refusal. Call it from
  /// one thread at a time (it joins the populator's threads).
  void wait();
  /// @brief Bytes of the pieces done so far (whole pages).
  [[nodiscard]] std::size_t populated() const noexcept { return done_.load(); }
  /// @brief The threads it started.
  [[nodiscard]] unsigned threads() const noexcept { return static_cast<unsigned>(threads_.size()); }
  /// @brief The errno of the refusal that stopped it; 0 if none.
  [[nodiscard]] int error() const noexcept { return error_.load(); }

 private:
  void run() noexcept;

  std::vector<std::span<std::byte>> pieces_;  // page-aligned, in the order to walk them
  std::atomic<std::size_t> next_{0};         // the next piece to claim
  std::atomic<std::size_t> done_{0};
  std::atomic<int> error_{0};
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

}  // namespace lris
