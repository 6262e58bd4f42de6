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

/// @brief A pool task that runs chunks of its job while chunks remain; after each it queues
/// itself again where another task waits for a thread, so that concurrent transfers (and more
/// urgent lanes) take turns on the shared pool instead of the first one holding every thread
/// until it is done. Where nothing waits it goes on with the next chunk: queueing would wake a
/// sleeping thread of the pool for nothing, and that thread's search for work takes a core
/// from the copies. `Job::run_one()` claims and runs the next chunk and returns false when
/// none was left.
template <class Job>
struct chunk_task {
  std::shared_ptr<Job> job;
  void operator()() const {
    while (job->run_one()) {
      if (job->pool->waiting()) {
        job->pool->submit(*this, job->lane);
        return;
      }
    }
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
