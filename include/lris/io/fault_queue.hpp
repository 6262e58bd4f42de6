#pragma once
/// @file
/// @brief fault_queue: an io_queue that wraps another and injects, from a seed, the faults a
/// real disk and kernel produce: short transfers, EAGAIN, EINTR, EIO, delayed completions,
/// completions out of order, and a queue that breaks (its wait fails) with operations in
/// flight. It also checks that every operation completes exactly once. The io engine's tests
/// run on it; so can a user's, through io_options::make_queue.

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <unordered_set>
#include <vector>

#include <lris/io/queue.hpp>

namespace lris::io {

/// @brief How often each fault strikes, per operation (0 never, 1 always), and the seed.
struct fault_plan {
  std::uint64_t seed = 1;
  double short_transfer = 0;  ///< fewer bytes than asked (kept block-aligned for O_DIRECT)
  double eagain = 0;          ///< -EAGAIN without doing the operation
  double eintr = 0;           ///< -EINTR without doing the operation
  double eio = 0;             ///< -EIO without doing the operation
  double delay = 0;           ///< completion held back for 1..max_delay_waits waits
  double reorder = 0;         ///< a wait returns its completions shuffled
  unsigned max_delay_waits = 3;
  /// The queue breaks at this wait (1: the first) and stays broken: that wait and every later
  /// one throws lris::io_error (EBADF, as io_uring_enter on a ring whose descriptor was
  /// closed) while the operations submitted go on in the queue underneath. 0: never.
  unsigned break_at_wait = 0;
};

/// @brief Faults injected so far, per class.
struct fault_counts {
  std::uint64_t operations = 0;
  std::uint64_t short_transfers = 0;
  std::uint64_t eagain = 0;
  std::uint64_t eintr = 0;
  std::uint64_t eio = 0;
  std::uint64_t delayed = 0;
  std::uint64_t reordered = 0;
  std::uint64_t failed_waits = 0;  ///< waits that threw (break_at_wait)
};

class fault_queue final : public io_queue {
 public:
  fault_queue(std::unique_ptr<io_queue> inner, fault_plan plan);

  [[nodiscard]] unsigned capacity() const noexcept override { return inner_->capacity(); }
  [[nodiscard]] std::string_view name() const noexcept override { return name_; }
  void submit(std::span<const io_op> ops) override;
  std::size_t wait(std::span<io_completion> out, std::size_t min,
                   std::chrono::microseconds timeout) override;

  bool use_files(std::span<const int> fds) override { return inner_->use_files(fds); }
  void release_files() noexcept override { inner_->release_files(); }
  std::size_t sync_buffers(std::span<const fixed_buffer> buffers) override {
    return inner_->sync_buffers(buffers);
  }
  [[nodiscard]] std::uint64_t fixed_buffer_ops() const noexcept override {
    return inner_->fixed_buffer_ops();
  }
  /// @brief Quiesces the queue underneath (which makes the operations it holds safe), then
  /// drops what this one held back.
  std::size_t quiesce() noexcept override;
  [[nodiscard]] bool broken() const noexcept override { return broken_; }

  [[nodiscard]] const fault_counts& injected() const noexcept { return counts_; }
  /// @brief Operations submitted and not completed yet.
  [[nodiscard]] std::size_t outstanding() const noexcept { return outstanding_.size(); }
  /// @brief The most operations that were in flight at once.
  [[nodiscard]] std::size_t max_outstanding() const noexcept { return max_outstanding_; }
  /// @brief Operations that were in flight when the queue was quiesced: they ended without
  /// their completion being returned.
  [[nodiscard]] std::size_t abandoned() const noexcept { return abandoned_; }

 private:
  bool roll(double p) { return p > 0 && std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
  void complete(std::vector<io_completion>& into, const io_completion& c);

  std::unique_ptr<io_queue> inner_;
  fault_plan plan_;
  std::string name_;
  std::mt19937_64 rng_;
  fault_counts counts_;
  std::vector<io_completion> ready_;                       // injected errors, due now
  std::vector<std::pair<io_completion, unsigned>> held_;   // delayed: waits left
  std::unordered_set<std::uint64_t> outstanding_;
  std::size_t max_outstanding_ = 0;
  unsigned waits_ = 0;
  std::size_t abandoned_ = 0;
  bool broken_ = false;
};

}  // namespace lris::io
