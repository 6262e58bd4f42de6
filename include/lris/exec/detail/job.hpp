#pragma once
/// @file
/// @brief What every running plan shares: its chunks, its progress through them, its tokens,
/// and the lane of the context's threads its tasks run in.

#include <atomic>
#include <cstddef>
#include <memory>

#include <lris/detail/thread_pool.hpp>
#include <lris/exec/context.hpp>
#include <lris/exec/detail/pacing.hpp>
#include <lris/exec/detail/transfer_state.hpp>

namespace lris::detail {

/// @brief A job of `chunks` pieces of work and its progress through them, and the lane of the
/// context's threads its tasks run in.
struct job_base {
  std::shared_ptr<context> ctx;  // kept until the last task is gone: its threads run them
  thread_pool* pool = nullptr;   // one of ctx's
  priority lane = priority::normal;
  std::shared_ptr<transfer_state> state;
  pacing pace;  // the transfer's tokens
  std::size_t chunks = 0;
  std::atomic<std::size_t> next{0};       // next chunk to claim
  std::atomic<std::size_t> processed{0};  // chunks done or skipped
};

/// @brief One pool task per chunk: a task runs one chunk of its job, then queues itself again
/// while chunks remain. Concurrent transfers thus take turns on the shared pool instead of the
/// first one holding every thread until it is done. `Job::run_one()` claims and runs the next
/// chunk and returns false when none was left.
template <class Job>
struct chunk_task {
  std::shared_ptr<Job> job;
  void operator()() const {
    if (job->run_one()) job->pool->submit(*this, job->lane);
  }
};

/// @brief Starts `workers` chunk tasks of `job` (at most one per chunk) in the lane of
/// `lane` of `ctx`'s threads: the io threads when its chunks block on io.
template <class Job>
void start_workers(const std::shared_ptr<Job>& job, unsigned workers,
                   const std::shared_ptr<context>& ctx, priority lane, bool blocking_io = false) {
  job->ctx = ctx;
  job->pool = blocking_io ? &ctx->io() : &ctx->compute();
  job->lane = lane;
  const auto n = static_cast<unsigned>(std::min<std::size_t>(workers, job->chunks));
  for (unsigned w = 0; w < n; ++w) job->pool->submit(chunk_task<Job>{job}, lane);
}

}  // namespace lris::detail
