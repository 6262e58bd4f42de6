#include <lris/io/engine.hpp>

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <thread>

#include <fmt/format.h>

#include <lris/error.hpp>
#include <lris/system/io_uring_probe.hpp>

#include "pread_queue.hpp"
#include "request_driver.hpp"
#include "uring_queue.hpp"

namespace lris::io {

namespace {

constexpr std::uint64_t page = 4096;

std::uint64_t align_down(std::uint64_t v, std::uint64_t a) { return v / a * a; }
std::uint64_t align_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) / a * a; }

// Why the kernel refused io_uring, for people: the probe's explanation where it sees the same
// refusal (a sysctl, seccomp, no io_uring), else the errno of this ring.
std::string refusal_reason(const io_error& e) {
  const int code = e.code().value();
  const io_uring_info probe = probe_io_uring();
  if (!probe.available) return fmt::format("io_uring refused: {}", probe.reason);
  return fmt::format("io_uring refused: {} ({}) for a ring of this depth", std::strerror(code),
                     code);
}

// The ranges of one read or write: a buffered head and tail around a direct middle.
struct plan {
  std::vector<detail::io_segment> segments;
  std::string mode;
};

plan make_plan(const file& f, std::uint64_t offset, std::byte* buf, std::size_t len, bool write,
               bool direct) {
  plan p;
  const std::uint64_t a = f.direct_alignment();
  std::uint64_t mid_begin = align_up(offset, a), mid_end = align_down(offset + len, a);
  if (!direct || mid_end <= mid_begin) mid_begin = mid_end = offset + len;
  p.segments.reserve(3);
  auto add = [&](std::uint64_t from, std::uint64_t to, bool d) {
    if (to <= from) return;
    detail::io_segment seg;
    seg.fd = d ? f.direct_fd() : f.fd();
    seg.buffered_fd = f.fd();
    seg.offset = from;
    seg.buf = buf + (from - offset);
    seg.len = static_cast<std::size_t>(to - from);
    seg.write = write;
    seg.direct = d;
    p.segments.push_back(seg);
  };
  add(offset, mid_begin, false);
  add(mid_begin, mid_end, true);
  add(mid_end, offset + len, false);
  const bool has_direct = mid_end > mid_begin;
  const bool has_buffered = mid_begin > offset || mid_end < offset + len;
  p.mode = has_direct ? (has_buffered ? "direct+buffered" : "direct") : "buffered";
  return p;
}

// Cuts `segments` into `n` slices of about equal bytes, at block boundaries.
std::vector<std::vector<detail::io_segment>> slice(const std::vector<detail::io_segment>& segments,
                                                   unsigned n, std::size_t block) {
  std::uint64_t total = 0;
  for (const auto& s : segments) total += s.len;
  const std::uint64_t per = align_up((total + n - 1) / n, block);
  std::vector<std::vector<detail::io_segment>> out(1);
  std::uint64_t in_slice = 0;
  for (detail::io_segment s : segments) {
    while (s.len > 0) {
      if (in_slice == per) {
        out.emplace_back();
        in_slice = 0;
      }
      const std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(s.len, per - in_slice));
      detail::io_segment part = s;
      part.len = take;
      out.back().push_back(part);
      in_slice += take;
      s.offset += take;
      s.buf += take;
      s.len -= take;
    }
  }
  return out;
}

}  // namespace

io_engine::io_engine(io_options options, std::shared_ptr<lris::detail::thread_pool> threads)
    : options_(std::move(options)),
      threads_(threads ? std::move(threads) : lris::detail::default_io_thread_pool()) {
  options_.queue_depth = std::max(1u, options_.queue_depth);
  options_.queues = std::max(1u, options_.queues);
  options_.resident_queues = std::max(1u, options_.resident_queues);
  // Made once now: it settles the backend (and whether io_uring works at all).
  auto q = take_queue();
  backend_ = std::string(q.queue->name());
  return_queue(std::move(q));
}

io_engine::~io_engine() = default;

io_engine::pooled_queue io_engine::take_queue() {
  pooled_queue q;
  std::vector<fixed_buffer> registered;
  std::uint64_t generation = 0;
  {
    std::lock_guard lock(mutex_);
    if (!idle_.empty()) {
      q = std::move(idle_.back());
      idle_.pop_back();
    }
    generation = generation_;
    if (q.generation != generation) registered = registered_;
  }
  if (!q.queue) q.queue = make_queue();
  if (q.generation != generation) {
    try {
      q.queue->sync_buffers(registered);
      q.generation = generation;
    } catch (...) {
      return_queue(std::move(q));
      throw;
    }
  }
  return q;
}

std::unique_ptr<io_queue> io_engine::make_queue() {
  if (options_.make_queue) return options_.make_queue(options_.queue_depth);
  switch (options_.backend) {
    case io_backend::pread: return std::make_unique<detail::pread_queue>(options_.queue_depth);
    case io_backend::io_uring:
      try {
        return std::make_unique<detail::uring_queue>(options_.queue_depth);
      } catch (const io_error& e) {
        throw io_error(e.code().value(),
                       fmt::format("io_backend::io_uring was asked for, but {}", refusal_reason(e)));
      }
    case io_backend::automatic:
      if (fallback_reason_.empty()) {
        try {
          return std::make_unique<detail::uring_queue>(options_.queue_depth);
        } catch (const io_error& e) {
          const int code = e.code().value();
          if (code != ENOSYS && code != EPERM && code != EINVAL && code != EACCES) throw;
          std::lock_guard lock(mutex_);
          fallback_reason_ = refusal_reason(e);
        }
      }
      return std::make_unique<detail::pread_queue>(options_.queue_depth);
  }
  return nullptr;
}

void io_engine::return_queue(pooled_queue q) {
  std::lock_guard lock(mutex_);
  idle_.push_back(std::move(q));
}

std::uint64_t io_engine::register_memory(std::span<std::byte> memory) {
  LRIS_EXPECTS(memory.data() != nullptr && !memory.empty(),
               "io: register_memory of an empty range");
  std::lock_guard lock(mutex_);
  const std::uint64_t id = next_id_++;
  registered_.push_back({id, memory.data(), memory.size()});
  ++generation_;  // queues pick it up when next taken
  return id;
}

void io_engine::unregister_memory(std::uint64_t id) noexcept {
  std::lock_guard lock(mutex_);
  const auto erased = std::erase_if(registered_, [id](const fixed_buffer& b) { return b.id == id; });
  if (erased == 0) return;
  ++generation_;
  // Idle queues let go of the pages now; busy ones sync when next taken.
  for (pooled_queue& q : idle_) {
    try {
      q.queue->sync_buffers(registered_);
      q.generation = generation_;
    } catch (...) {  // the queue stays stale and syncs when next taken
    }
  }
}

io_engine::residency_choice io_engine::choose_by_residency(double resident, std::string_view what) {
  const bool cold = resident < 0.5;
  return {cold, fmt::format("{}: {:.0f}% of {} in the page cache", cold ? "cold" : "resident",
                            100 * std::max(0.0, resident), what)};
}

double io_engine::resident_fraction(const file& f, std::uint64_t offset, std::uint64_t bytes) {
  if (bytes == 0) return 1.0;
  // Up to 64 windows of 4 MiB spread over the range: enough to tell cold from warm.
  constexpr std::uint64_t window = std::uint64_t{4} << 20;
  constexpr unsigned windows = 64;
  const std::uint64_t begin = align_down(offset, page), end = align_up(offset + bytes, page);
  const std::uint64_t span = end - begin;
  const unsigned n = span <= window * windows ? 1 : windows;
  const std::uint64_t each = n == 1 ? span : window;
  const std::uint64_t stride = n == 1 ? 0 : align_down((span - each) / (n - 1), page);
  std::uint64_t resident = 0, checked = 0;
  std::vector<unsigned char> vec(static_cast<std::size_t>(each / page));
  for (unsigned w = 0; w < n; ++w) {
    const std::uint64_t at = begin + w * stride;
    void* map = ::mmap(nullptr, each, PROT_READ, MAP_SHARED, f.fd(), static_cast<off_t>(at));
    if (map == MAP_FAILED) return -1;
    if (::mincore(map, each, vec.data()) == 0) {
      for (unsigned char v : vec) resident += v & 1;
      checked += vec.size();
    }
    ::munmap(map, each);
  }
  return checked ? static_cast<double>(resident) / checked : -1;
}

io_stats io_engine::read(const file& f, std::uint64_t offset, std::span<std::byte> dst,
                         const std::function<bool()>& should_stop) {
  return run(f, offset, dst.data(), dst.size(), false, should_stop, {});
}

io_stats io_engine::read(const file& f, std::uint64_t offset, std::span<std::byte> dst,
                         const std::function<bool()>& should_stop, const io_overrides& call) {
  return run(f, offset, dst.data(), dst.size(), false, should_stop, call);
}

io_stats io_engine::write(file& f, std::uint64_t offset, std::span<const std::byte> src,
                          const std::function<bool()>& should_stop, const io_overrides& call) {
  // The kernel only reads this memory; the driver's segments are written for both directions.
  return run(f, offset, const_cast<std::byte*>(src.data()), src.size(), true, should_stop, call);
}

io_stats io_engine::run(const file& f, std::uint64_t offset, std::byte* buf, std::size_t len,
                        bool write, const std::function<bool()>& should_stop,
                        const io_overrides& call) {
  const auto start = std::chrono::steady_clock::now();
  LRIS_EXPECTS(len == 0 || buf != nullptr, "io: {} of {}: null buffer for {} bytes",
               write ? "write" : "read", f.path().string(), len);
  if (!write) {
    const std::uint64_t size = f.size();
    LRIS_EXPECTS(offset <= size && len <= size - offset,
                 "io: read of {}: [{}, +{}) goes past the end of the file ({} bytes)",
                 f.path().string(), offset, len, size);
  }
  io_stats st;
  st.backend = backend_;
  st.fallback_reason = fallback_reason_;

  // Direct or buffered, and why. Memory that is not aligned like the file takes the direct
  // path through aligned bounce buffers (reads; a write from such memory goes buffered).
  const direct_mode mode = call.direct.value_or(options_.direct);
  io_options o = options_;  // what the request driver sees: the depth of this call
  o.queue_depth = queue_depth(call);
  bool direct = false;
  unsigned queues = call.queues > 0 ? call.queues : options_.queues;
  const std::uint64_t a = f.direct_alignment();
  // The memory where the first aligned file offset lands, aligned as the device needs memory.
  const bool memory_fits = (reinterpret_cast<std::uintptr_t>(buf) + (a - offset % a) % a) %
                               f.direct_memory_alignment() == 0;
  if (mode == direct_mode::never) {
    st.mode_reason = "direct_mode::never";
  } else if (!f.direct()) {
    st.mode_reason = f.direct_refusal();
  } else if (write && !memory_fits) {
    st.mode_reason = fmt::format("source not aligned for O_DIRECT ({} bytes)",
                                 f.direct_memory_alignment());
  } else if (mode == direct_mode::always || write) {
    direct = true;
    st.mode_reason = write ? "writes bypass the page cache" : "direct_mode::always";
  } else {
    st.resident_fraction = resident_fraction(f, offset, len);
    auto choice = choose_by_residency(st.resident_fraction, "the range");
    direct = choice.cold;
    st.mode_reason = std::move(choice.reason);
    if (!direct) queues = call.queues > 0 ? call.queues : options_.resident_queues;
  }
  const bool bounce = direct && !memory_fits;
  plan p = make_plan(f, offset, buf, len, write, direct);
  st.mode = p.mode;
  if (bounce) st.mode_reason += fmt::format("; through aligned bounce buffers (the memory is not "
                                            "aligned for O_DIRECT: {} bytes at the first "
                                            "{}-byte file offset)", f.direct_memory_alignment(), a);

  // Work per queue: segments straight into memory, and bounced ones (into a bounce buffer,
  // then copied). Several queues only where each gets a good share.
  const std::size_t block = std::max<std::size_t>(page, options_.block_bytes / page * page);
  struct slice_work {
    std::vector<detail::io_segment> segments, bounced;
  };
  std::vector<slice_work> work;
  constexpr std::size_t bounce_bytes = std::size_t{8} << 20;
  if (!bounce) {
    queues = static_cast<unsigned>(std::clamp<std::uint64_t>(len / (8 * block), 1, queues));
    for (auto& segs : slice(p.segments, queues, block)) work.push_back({std::move(segs), {}});
  } else {
    // Bounced windows alternate io and copying on each queue: use at least four.
    queues = static_cast<unsigned>(
        std::clamp<std::uint64_t>(len / bounce_bytes, 1, std::max(queues, 4u)));
    work.resize(queues);
    std::size_t next = 0;
    for (const auto& seg : p.segments) {
      if (!seg.direct) {
        work[0].segments.push_back(seg);
        continue;
      }
      for (std::size_t off = 0; off < seg.len; off += bounce_bytes) {
        detail::io_segment w = seg;
        w.offset += off;
        w.buf += off;
        w.len = std::min(bounce_bytes, seg.len - off);
        work[next++ % queues].bounced.push_back(w);
      }
    }
  }
  st.queues = static_cast<unsigned>(work.size());
  std::vector<io_stats> part(work.size());
  std::vector<std::exception_ptr> errors(work.size());
  auto run_slice = [&](std::size_t i) {
    pooled_queue q;
    std::byte* staging = nullptr;
    try {
      q = take_queue();
      const std::uint64_t fixed_before = q.queue->fixed_buffer_ops();
      detail::run_segments(*q.queue, work[i].segments, o, f.path(), part[i], should_stop);
      if (!work[i].bounced.empty()) {
        staging = static_cast<std::byte*>(std::aligned_alloc(page, bounce_bytes));
        if (staging == nullptr) throw out_of_memory("io: no memory for a bounce buffer", bounce_bytes);
        for (const detail::io_segment& w : work[i].bounced) {
          detail::io_segment into = w;
          into.buf = staging;
          detail::run_segments(*q.queue, {&into, 1}, o, f.path(), part[i], should_stop);
          std::memcpy(w.buf, staging, w.len);
        }
      }
      part[i].fixed_buffer_ops = q.queue->fixed_buffer_ops() - fixed_before;
    } catch (...) {
      errors[i] = std::current_exception();
    }
    std::free(staging);
    // A queue that failed was quiesced by the driver (nothing of it runs any more) and is
    // broken for good: it goes, and a later call makes a fresh one.
    if (q.queue && !q.queue->broken()) return_queue(std::move(q));
  };
  // On the io threads, the caller taking part: no thread is made per call, and a call made
  // from an io thread cannot wait for threads that are all busy.
  lris::detail::parallel_for(*threads_, work.size(), static_cast<unsigned>(work.size()), run_slice);
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
  for (const auto& s : part) st.add_counters(s);
  st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return st;
}

}  // namespace lris::io
