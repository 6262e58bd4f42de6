#include <lris/io/fault_queue.hpp>

#include <fcntl.h>

#include <algorithm>
#include <cerrno>

#include <fmt/format.h>

#include <lris/error.hpp>

namespace lris::io {

fault_queue::fault_queue(std::unique_ptr<io_queue> inner, fault_plan plan)
    : inner_(std::move(inner)),
      plan_(plan),
      name_(fmt::format("fault({})", inner_->name())),
      rng_(plan.seed) {}

void fault_queue::submit(std::span<const io_op> ops) {
  if (broken_) {
    throw io_error(EIO, fmt::format("{}: broken (given up after a failure); it takes no more "
                                    "operations", name_));
  }
  std::vector<io_op> pass;
  pass.reserve(ops.size());
  for (io_op op : ops) {
    if (!outstanding_.insert(op.tag).second) {
      throw error(fmt::format("fault_queue: tag {} submitted while still in flight", op.tag));
    }
    ++counts_.operations;
    max_outstanding_ = std::max(max_outstanding_, outstanding_.size());
    if (roll(plan_.eio)) {
      ++counts_.eio;
      ready_.push_back({op.tag, -EIO});
      continue;
    }
    if (roll(plan_.eagain)) {
      ++counts_.eagain;
      ready_.push_back({op.tag, -EAGAIN});
      continue;
    }
    if (roll(plan_.eintr)) {
      ++counts_.eintr;
      ready_.push_back({op.tag, -EINTR});
      continue;
    }
    if (roll(plan_.short_transfer)) {
      // O_DIRECT needs whole blocks: shorten by blocks there, by bytes elsewhere.
      const bool direct = (::fcntl(op.fd, F_GETFL) & O_DIRECT) != 0;
      const std::size_t unit = direct ? 4096 : 1;
      if (op.len >= 2 * unit) {
        op.len = unit * (1 + rng_() % (op.len / unit - 1));
        ++counts_.short_transfers;
      }
    }
    pass.push_back(op);
  }
  if (!pass.empty()) inner_->submit(pass);
}

void fault_queue::complete(std::vector<io_completion>& into, const io_completion& c) {
  if (outstanding_.erase(c.tag) != 1) {
    throw error(fmt::format("fault_queue: tag {} completed twice or never submitted", c.tag));
  }
  into.push_back(c);
}

std::size_t fault_queue::wait(std::span<io_completion> out, std::size_t min,
                              std::chrono::microseconds timeout) {
  if (broken_) {
    throw io_error(EIO, fmt::format("{}: broken (given up after a failure); it has nothing to "
                                    "wait for", name_));
  }
  ++waits_;
  if (plan_.break_at_wait > 0 && waits_ >= plan_.break_at_wait) {
    ++counts_.failed_waits;
    throw io_error(EBADF, fmt::format("{}: injected failure of wait {} with {} operations "
                                      "outstanding", name_, waits_, outstanding_.size()));
  }
  // Held completions come due one wait at a time.
  std::vector<io_completion> due = std::move(ready_);
  ready_.clear();
  for (auto it = held_.begin(); it != held_.end();) {
    if (--it->second == 0) {
      due.push_back(it->first);
      it = held_.erase(it);
    } else {
      ++it;
    }
  }
  // Block in the inner queue only when nothing else can come out of this call.
  const std::size_t inner_min = due.size() >= min || !held_.empty() ? 0 : min - due.size();
  std::vector<io_completion> fresh(std::max<std::size_t>(out.size(), 1));
  fresh.resize(inner_->wait(fresh, inner_min, inner_min ? timeout : std::chrono::microseconds(0)));
  for (const io_completion& c : fresh) {
    if (roll(plan_.delay)) {
      ++counts_.delayed;
      held_.emplace_back(c, 1 + static_cast<unsigned>(rng_() % std::max(1u, plan_.max_delay_waits)));
    } else {
      due.push_back(c);
    }
  }
  if (due.size() > 1 && roll(plan_.reorder)) {
    ++counts_.reordered;
    std::shuffle(due.begin(), due.end(), rng_);
  }
  // What does not fit in `out` waits for the next call.
  std::vector<io_completion> given;
  for (std::size_t i = 0; i < due.size(); ++i) {
    if (given.size() < out.size()) {
      complete(given, due[i]);
    } else {
      ready_.push_back(due[i]);
    }
  }
  std::copy(given.begin(), given.end(), out.begin());
  return given.size();
}

std::size_t fault_queue::quiesce() noexcept {
  // The operations still running are the inner queue's; those held back here (delayed or
  // injected completions) ended already.
  inner_->quiesce();
  const std::size_t n = outstanding_.size();
  abandoned_ += n;
  outstanding_.clear();
  ready_.clear();
  held_.clear();
  broken_ = true;
  return n;
}

}  // namespace lris::io
