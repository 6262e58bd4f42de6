#include <lris/detail/thread_pool.hpp>

#include <algorithm>
#include <utility>
#include <atomic>
#include <cstring>
#include <exception>
#include <memory>

#include <lris/detail/spin_wait.hpp>

namespace lris::detail {

namespace {
thread_local const thread_pool* current_pool = nullptr;
}

thread_pool::thread_pool(unsigned threads, unsigned background_threads) {
  threads = std::max(1u, threads);
  background_max_ = background_threads > 0 ? std::min(background_threads, threads)
                                           : std::max(1u, threads / 2);
  workers_.reserve(threads);
  for (unsigned i = 0; i < threads; ++i) workers_.emplace_back([this] { run(); });
}

thread_pool::~thread_pool() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (!fork_.same_process()) {
    // A child of fork(): the threads are the parent's and do not exist here. What they ran is
    // not ours to finish or free.
    for (auto& t : workers_) t.detach();
    return;
  }
  for (auto& t : workers_) t.join();
}

void thread_pool::submit(std::function<void()> task, priority p) {
  fork_.check("lris: a thread pool");
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    lanes_[static_cast<std::size_t>(p)].push_back(std::move(task));
    wake = p != priority::background || background_running_ < background_max_;
    if (wake) queued_.fetch_add(1, std::memory_order_release);
  }
  if (wake) cv_.notify_one();
}

bool thread_pool::on_worker_thread() const noexcept { return current_pool == this; }

bool thread_pool::drained() const noexcept {
  return lanes_[0].empty() && lanes_[1].empty() && lanes_[2].empty();
}

bool thread_pool::runnable() const noexcept {
  return !lanes_[0].empty() || !lanes_[1].empty() ||
         (!lanes_[2].empty() && background_running_ < background_max_);
}

void thread_pool::run() {
  current_pool = this;
  constexpr auto background = static_cast<std::size_t>(priority::background);
  for (;;) {
    std::function<void()> task;
    bool is_background = false;
    (void)spin_until([this] {
      return queued_.load(std::memory_order_acquire) > 0 ||
             stopping_.load(std::memory_order_relaxed);
    });
    {
      std::unique_lock lock(mutex_);
      // Stopping finishes what was submitted: background tasks held back by the cap wait for
      // a running one to end, as before.
      cv_.wait(lock, [this] { return runnable() || (stopping_ && drained()); });
      if (!runnable()) return;  // stopping, and nothing is left
      for (std::size_t lane = 0; lane < priority_count; ++lane) {
        if (lanes_[lane].empty()) continue;
        if (lane == background && background_running_ >= background_max_) continue;
        task = std::move(lanes_[lane].front());
        lanes_[lane].pop_front();
        is_background = lane == background;
        break;
      }
      if (is_background) ++background_running_;
      queued_.store(lanes_[0].size() + lanes_[1].size() +
                        (background_running_ < background_max_ ? lanes_[background].size() : 0),
                    std::memory_order_release);
    }
    task();
    if (is_background) {
      bool all = false;
      {
        std::lock_guard lock(mutex_);
        --background_running_;
        if (!lanes_[background].empty()) queued_.fetch_add(1, std::memory_order_release);
        all = stopping_;
      }
      // A held-back background task may run now; when stopping, the pool may be drained.
      if (all) {
        cv_.notify_all();
      } else {
        cv_.notify_one();
      }
    }
  }
}

namespace {
// Shared with helper tasks, which may start after the loop has finished (queued behind other
// work); they then claim no index and never call `fn`.
struct loop_state {
  loop_state(std::size_t n, std::function<void(std::size_t)> f) : count(n), fn(std::move(f)) {}
  const std::size_t count;
  const std::function<void(std::size_t)> fn;
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex mutex;
  std::condition_variable cv;
  std::size_t finished = 0;
  std::atomic<bool> finished_flag{false};  // finished == count, readable without the lock
  std::exception_ptr error;

  void work() noexcept {
    for (;;) {
      const std::size_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= count) return;
      if (!failed.load(std::memory_order_relaxed)) {
        try {
          fn(i);
        } catch (...) {
          std::lock_guard lock(mutex);
          if (!error) error = std::current_exception();
          failed = true;
        }
      }
      std::lock_guard lock(mutex);
      if (++finished == count) {
        finished_flag.store(true, std::memory_order_release);
        cv.notify_all();
      }
    }
  }
};
}  // namespace

void parallel_for(thread_pool& pool, std::size_t count, unsigned max_threads,
                  const std::function<void(std::size_t)>& fn, priority p) {
  if (count == 0) return;
  if (count == 1 || max_threads <= 1) {
    for (std::size_t i = 0; i < count; ++i) fn(i);
    return;
  }
  auto state = std::make_shared<loop_state>(count, fn);
  const std::size_t helpers = std::min<std::size_t>({count - 1, pool.size(), max_threads - 1});
  for (std::size_t h = 0; h < helpers; ++h) pool.submit([state] { state->work(); }, p);
  state->work();
  (void)spin_until([&] { return state->finished_flag.load(std::memory_order_acquire); });
  std::unique_lock lock(state->mutex);
  state->cv.wait(lock, [&] { return state->finished == state->count; });
  // Taken out of the shared state: helpers may drop their reference to it later, and the
  // exception must not be released on their threads while this one handles it.
  if (state->error) std::rethrow_exception(std::exchange(state->error, nullptr));
}

void parallel_memcpy(thread_pool& pool, void* dst, const void* src, std::size_t bytes,
                     unsigned max_threads, std::size_t min_piece, priority p) {
  if (bytes == 0) return;  // null pointers are allowed then; memcpy does not allow them
  const std::size_t threads = std::max<std::size_t>(
      1, std::min<std::size_t>(max_threads, bytes / std::max<std::size_t>(min_piece, 1)));
  if (threads <= 1) {
    std::memcpy(dst, src, bytes);
    return;
  }
  // Pieces are multiples of 4 KiB so that no two threads write the same page.
  const std::size_t piece = ((bytes / threads) + 4095) & ~std::size_t{4095};
  const std::size_t pieces = (bytes + piece - 1) / piece;
  parallel_for(pool, pieces, static_cast<unsigned>(threads), [&](std::size_t i) {
    const std::size_t off = i * piece;
    std::memcpy(static_cast<std::byte*>(dst) + off, static_cast<const std::byte*>(src) + off,
                std::min(piece, bytes - off));
  }, p);
}

}  // namespace lris::detail
