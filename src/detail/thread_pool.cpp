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

thread_pool::thread_pool(unsigned threads) {
  threads = std::max(1u, threads);
  workers_.reserve(threads);
  for (unsigned i = 0; i < threads; ++i) workers_.emplace_back([this] { run(); });
}

thread_pool::~thread_pool() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void thread_pool::submit(std::function<void()> task) {
  {
    std::lock_guard lock(mutex_);
    tasks_.push_back(std::move(task));
    queued_.store(tasks_.size(), std::memory_order_release);
  }
  cv_.notify_one();
}

bool thread_pool::on_worker_thread() const noexcept { return current_pool == this; }

void thread_pool::run() {
  current_pool = this;
  for (;;) {
    std::function<void()> task;
    (void)spin_until([this] {
      return queued_.load(std::memory_order_acquire) > 0 || stopping_.load();
    });
    {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
      if (tasks_.empty()) return;  // stopping and drained
      task = std::move(tasks_.front());
      tasks_.pop_front();
      queued_.store(tasks_.size(), std::memory_order_release);
    }
    task();
  }
}

thread_pool& thread_pool::shared() {
  static thread_pool pool(std::max(1u, std::thread::hardware_concurrency()));
  return pool;
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
                  const std::function<void(std::size_t)>& fn) {
  if (count == 0) return;
  if (count == 1 || max_threads <= 1) {
    for (std::size_t i = 0; i < count; ++i) fn(i);
    return;
  }
  auto state = std::make_shared<loop_state>(count, fn);
  const std::size_t helpers = std::min<std::size_t>({count - 1, pool.size(), max_threads - 1});
  for (std::size_t h = 0; h < helpers; ++h) pool.submit([state] { state->work(); });
  state->work();
  (void)spin_until([&] { return state->finished_flag.load(std::memory_order_acquire); });
  std::unique_lock lock(state->mutex);
  state->cv.wait(lock, [&] { return state->finished == state->count; });
  // Taken out of the shared state: helpers may drop their reference to it later, and the
  // exception must not be released on their threads while this one handles it.
  if (state->error) std::rethrow_exception(std::exchange(state->error, nullptr));
}

void parallel_memcpy(thread_pool& pool, void* dst, const void* src, std::size_t bytes,
                     unsigned max_threads, std::size_t min_piece) {
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
  });
}

}  // namespace lris::detail
