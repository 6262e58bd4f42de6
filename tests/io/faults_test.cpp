// The io engine under injected faults: short transfers, EAGAIN, EINTR, EIO, delays and
// reordering from a seeded fault_queue over io_uring and over the pread pool, and queues that
// break with operations in flight. Every byte is compared with the offset-stamped file; the
// faults injected and survived are printed.
#include <catch2/catch.hpp>

#include "support/what_contains.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <set>
#include <vector>

#include <lris/error.hpp>
#include <lris/io/engine.hpp>
#include <lris/io/fault_queue.hpp>

#include "io/pread_queue.hpp"
#include "io/request_driver.hpp"
#include "io/uring_queue.hpp"
#include "pattern.hpp"

using namespace lris::io;
using lris::test::stamped_from;
using lris::test::what_contains;

namespace {

constexpr std::uint64_t seed = 91;
constexpr std::uint64_t file_bytes = (8 << 20) + 4096 + 55;

std::filesystem::path stamped_file() {
  static const auto path = lris::test::stamped_file("faults_stamped.bin", file_bytes, seed);
  return path;
}

std::unique_ptr<io_queue> inner_queue(bool uring, unsigned depth) {
  if (uring) {
    try {
      return std::make_unique<detail::uring_queue>(depth);
    } catch (const lris::io_error&) {
      // io_uring refused here: the pread pool carries the test.
    }
  }
  return std::make_unique<detail::pread_queue>(depth);
}

// An engine whose queues are fault_queues; `last` sees the last one made. Queues of one read
// split over several are made on several threads at once.
std::mutex last_mutex;

io_engine faulty_engine(const fault_plan& plan, bool uring, direct_mode mode, fault_queue*& last) {
  io_options o;
  o.direct = mode;
  o.block_bytes = 64 << 10;  // many operations
  o.queue_depth = 16;
  o.backoff_initial = std::chrono::microseconds(1);
  o.backoff_max = std::chrono::microseconds(50);
  o.make_queue = [plan, uring, &last](unsigned depth) {
    auto q = std::make_unique<fault_queue>(inner_queue(uring, depth), plan);
    std::lock_guard lock(last_mutex);
    last = q.get();
    return q;
  };
  return io_engine(o);
}

}  // namespace

TEST_CASE("reads survive short transfers, EAGAIN, EINTR, delays and reordering", "[io][faults]") {
  const file f(stamped_file());
  fault_counts total;
  io_stats survived;
  for (const bool uring : {true, false}) {
    for (const direct_mode mode : {direct_mode::always, direct_mode::never}) {
      for (std::uint64_t s = 1; s <= 12; ++s) {
        fault_plan plan{.seed = s, .short_transfer = 0.2, .eagain = 0.1, .eintr = 0.1,
                        .delay = 0.2, .reorder = 0.3};
        fault_queue* q = nullptr;
        io_engine engine = faulty_engine(plan, uring, mode, q);
        lris::test::aligned_buffer buf(file_bytes);
        std::memset(buf.p, 0xEE, file_bytes);
        const std::uint64_t offset = s * 1000;  // unaligned: buffered head and tail too
        const std::size_t len = file_bytes - offset;
        CAPTURE(uring, static_cast<int>(mode), s);
        const io_stats st = engine.read(f, offset, {buf.p, len});
        REQUIRE(q != nullptr);
        CHECK(stamped_from(buf.p, len, offset, seed));
        CHECK(st.bytes == len);
        CHECK(q->outstanding() == 0);  // every operation completed exactly once
        const fault_counts& c = q->injected();
        CHECK(st.eagain_retries == c.eagain);
        CHECK(st.eintr_retries == c.eintr);
        CHECK(st.short_transfers >= c.short_transfers);
        total.operations += c.operations;
        total.short_transfers += c.short_transfers;
        total.eagain += c.eagain;
        total.eintr += c.eintr;
        total.delayed += c.delayed;
        total.reordered += c.reordered;
        survived.short_transfers += st.short_transfers;
        survived.eagain_retries += st.eagain_retries;
        survived.eintr_retries += st.eintr_retries;
      }
    }
  }
  CHECK(total.short_transfers > 0);
  CHECK(total.eagain > 0);
  CHECK(total.eintr > 0);
  CHECK(total.delayed > 0);
  CHECK(total.reordered > 0);
  std::printf("faults injected / survived over %llu operations:\n"
              "  short transfers %llu / %llu resubmitted\n  EAGAIN %llu / %llu retried\n"
              "  EINTR %llu / %llu retried\n  delayed %llu / all\n  reordered waits %llu / all\n",
              static_cast<unsigned long long>(total.operations),
              static_cast<unsigned long long>(total.short_transfers),
              static_cast<unsigned long long>(survived.short_transfers),
              static_cast<unsigned long long>(total.eagain),
              static_cast<unsigned long long>(survived.eagain_retries),
              static_cast<unsigned long long>(total.eintr),
              static_cast<unsigned long long>(survived.eintr_retries),
              static_cast<unsigned long long>(total.delayed),
              static_cast<unsigned long long>(total.reordered));
}

TEST_CASE("EIO is an error naming the file and offset, after every operation ended",
          "[io][faults][errors]") {
  const file f(stamped_file());
  unsigned failed = 0;
  for (std::uint64_t s = 1; s <= 10; ++s) {
    fault_plan plan{.seed = s, .eio = 0.05, .delay = 0.3, .reorder = 0.3};
    fault_queue* q = nullptr;
    io_engine engine = faulty_engine(plan, true, direct_mode::always, q);
    std::vector<std::byte> buf(file_bytes);
    try {
      engine.read(f, 0, buf);
    } catch (const lris::io_error& e) {
      ++failed;
      CHECK(e.code().value() == EIO);
      CHECK_THAT(std::string(e.what()), Catch::Contains("faults_stamped.bin failed at offset"));
    }
    CHECK(q->outstanding() == 0);
  }
  CHECK(failed > 0);
  std::printf("EIO: %u of 10 reads failed with a named offset, none left operations behind\n",
              failed);
}

TEST_CASE("EAGAIN without end: the retries stop, with an error", "[io][faults][errors]") {
  const file f(stamped_file());
  fault_plan plan{.seed = 3, .eagain = 1.0};
  fault_queue* q = nullptr;
  io_engine engine = faulty_engine(plan, true, direct_mode::never, q);
  std::vector<std::byte> buf(5000);
  REQUIRE_THROWS_MATCHES(engine.read(f, 0, buf), lris::io_error,
                         what_contains("still failing after 16 retries"));
  CHECK(q->outstanding() == 0);
}

TEST_CASE("cancel with operations in flight: each ends exactly once, then cancelled",
          "[io][faults]") {
  const file f(stamped_file());
  fault_plan plan{.seed = 5, .delay = 0.5, .reorder = 0.5};
  fault_queue* q = nullptr;
  io_engine engine = faulty_engine(plan, true, direct_mode::always, q);
  lris::test::aligned_buffer buf(file_bytes);
  std::atomic<int> polls{0};
  REQUIRE_THROWS_AS(engine.read(f, 0, {buf.p, file_bytes}, [&] { return ++polls > 3; }),
                    lris::cancelled);
  CHECK(q->outstanding() == 0);
}

TEST_CASE("a call's io settings override the engine's: depth, direct mode, queues", "[io]") {
  const file f(stamped_file());
  fault_queue* q = nullptr;
  io_engine engine = faulty_engine(fault_plan{}, true, direct_mode::always, q);
  lris::test::aligned_buffer buf(file_bytes);
  // The engine's depth (16) with 64 KiB blocks: the queue fills.
  auto st = engine.read(f, 0, {buf.p, file_bytes});
  CHECK(q->max_outstanding() == 16);
  CHECK(st.mode.find("direct") == 0);
  // The call asks for 4 in flight, buffered.
  io_engine shallow = faulty_engine(fault_plan{}, true, direct_mode::always, q);
  std::memset(buf.p, 0, file_bytes);
  st = shallow.read(f, 0, {buf.p, file_bytes}, {}, {.direct = direct_mode::never, .queue_depth = 4});
  CHECK(q->max_outstanding() == 4);
  CHECK(st.mode == "buffered");
  CHECK(st.mode_reason == "direct_mode::never");
  CHECK(stamped_from(buf.p, file_bytes, 0, seed));
  // A depth over the engine's is the engine's: its rings hold no more.
  io_engine deep = faulty_engine(fault_plan{}, true, direct_mode::always, q);
  deep.read(f, 0, {buf.p, file_bytes}, {}, {.direct = {}, .queue_depth = 1000});
  CHECK(q->max_outstanding() == 16);
  // Queues: the range is split over three.
  st = deep.read(f, 0, {buf.p, file_bytes}, {}, {.direct = {}, .queue_depth = 0, .queues = 3});
  CHECK(st.queues == 3);
  CHECK(stamped_from(buf.p, file_bytes, 0, seed));
}

TEST_CASE("an unexpected end of file names the file and offset", "[io][errors]") {
  const file f(stamped_file());
  detail::pread_queue q(4);
  std::vector<std::byte> buf(10000);
  const detail::io_segment past_end{f.fd(), f.fd(), file_bytes - 100, buf.data(), buf.size()};
  io_stats st;
  REQUIRE_THROWS_MATCHES(detail::run_segments(q, {&past_end, 1}, io_options{}, f.path(), st),
                         lris::io_error,
                         what_contains(fmt::format("unexpected end of file {} at offset {}",
                                                   f.path().string(), file_bytes)));
}

TEST_CASE("a queue that breaks with reads in flight: an io_error once every read has ended",
          "[io][faults][errors]") {
  const file f(stamped_file());
  io_options o;
  o.block_bytes = 64 << 10;
  o.queue_depth = 16;
  for (const bool uring : {true, false}) {
    CAPTURE(uring);
    // Waits 1 and 2 work, then the queue breaks with reads still running underneath.
    fault_queue q(inner_queue(uring, o.queue_depth),
                  fault_plan{.seed = 7, .delay = 0.3, .break_at_wait = 3});
    // Plain heap memory, freed as soon as the error is out: a read still running would write
    // into freed memory, which ASan and TSan report (pread's interceptor checks its buffer).
    auto buf = std::make_unique<std::byte[]>(file_bytes);
    const detail::io_segment all{f.fd(), f.fd(), 0, buf.get(), file_bytes};
    io_stats st;
    std::string what;
    try {
      detail::run_segments(q, {&all, 1}, o, f.path(), st);
      FAIL("the broken queue went unnoticed");
    } catch (const lris::io_error& e) {
      what = e.what();
      CHECK(e.code().value() == EBADF);
    }
    buf.reset();
    CAPTURE(what);
    CHECK(q.broken());
    CHECK(q.injected().failed_waits == 1);
    CHECK(q.outstanding() == 0);
    // The reads in flight when it broke, each ended (quiesce) before the error was thrown.
    REQUIRE(q.abandoned() > 1);
    CHECK_THAT(what, Catch::StartsWith(fmt::format("io queue {} failed in wait on {} with {} "
                                                   "operations in flight (",
                                                   q.name(), f.path().string(), q.abandoned())));
    CHECK_THAT(what, Catch::Contains("injected failure of wait 3"));
    // Broken for good: the queue takes nothing more, and the driver says so.
    std::vector<std::byte> small(4096);
    const io_op op{f.fd(), 0, small.data(), small.size(), false, 0};
    CHECK_THROWS_AS(q.submit({&op, 1}), lris::io_error);
    std::vector<io_completion> done(4);
    CHECK_THROWS_AS(q.wait(done, 1, std::chrono::microseconds(1000)), lris::io_error);
    const detail::io_segment again{f.fd(), f.fd(), 0, small.data(), small.size()};
    REQUIRE_THROWS_MATCHES(detail::run_segments(q, {&again, 1}, o, f.path(), st), lris::io_error,
                           what_contains(fmt::format("failed in submit of 1 operation on {} "
                                                     "with 0 operations in flight",
                                                     f.path().string())));
  }
}

TEST_CASE("the engine drops a queue that broke and reads on with a fresh one",
          "[io][faults][errors]") {
  const file f(stamped_file());
  std::atomic<int> made{0};
  io_options o;
  o.direct = direct_mode::always;
  o.block_bytes = 64 << 10;
  o.queue_depth = 16;
  o.make_queue = [&made](unsigned depth) {
    // The first queue (made by the constructor, taken by the first read) breaks at its second
    // wait; the ones after it do not.
    const unsigned break_at = made++ == 0 ? 2 : 0;
    return std::make_unique<fault_queue>(inner_queue(true, depth),
                                         fault_plan{.seed = 11, .break_at_wait = break_at});
  };
  io_engine engine(o);
  lris::test::aligned_buffer buf(file_bytes);
  REQUIRE_THROWS_MATCHES(engine.read(f, 0, {buf.p, file_bytes}), lris::io_error,
                         what_contains(fmt::format("failed in wait on {}", f.path().string())));
  CHECK(made == 1);
  std::memset(buf.p, 0, file_bytes);
  const io_stats st = engine.read(f, 0, {buf.p, file_bytes});
  CHECK(made == 2);
  CHECK(st.bytes == file_bytes);
  CHECK(stamped_from(buf.p, file_bytes, 0, seed));
}

namespace {

// The descriptors of this process that are io_uring instances.
std::set<int> io_uring_fds() {
  std::set<int> fds;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    const auto target = std::filesystem::read_symlink(entry.path(), ec);
    if (!ec && target.string() == "anon_inode:[io_uring]") {
      fds.insert(std::stoi(entry.path().filename().string()));
    }
  }
  return fds;
}

}  // namespace

TEST_CASE("io_uring whose descriptor is closed under its reads: quiesce reaps every one",
          "[io][faults][errors]") {
  const std::set<int> before = io_uring_fds();
  std::unique_ptr<detail::uring_queue> q;
  try {
    q = std::make_unique<detail::uring_queue>(16);
  } catch (const lris::io_error& e) {
    WARN("io_uring refused here, nothing to test: " << e.what());
    return;
  }
  std::vector<int> fresh;
  for (int fd : io_uring_fds()) {
    if (before.count(fd) == 0) fresh.push_back(fd);
  }
  REQUIRE(fresh.size() == 1);
  const int ring_fd = fresh.front();

  const file f(stamped_file());
  constexpr std::size_t block = 64 << 10, reads = 16;
  lris::test::aligned_buffer buf(block * reads);
  std::memset(buf.p, 0xEE, block * reads);
  std::vector<io_op> ops;
  for (std::size_t i = 0; i < reads; ++i) {
    ops.push_back({f.direct() ? f.direct_fd() : f.fd(), i * block, buf.p + i * block, block,
                   false, i});
  }
  q->submit(ops);
  // /dev/null takes the ring's descriptor: io_uring_enter fails from now on (EOPNOTSUPP),
  // while the ring's mappings keep it alive and the reads go on.
  const int null = ::open("/dev/null", O_RDONLY);
  REQUIRE(null >= 0);
  REQUIRE(::dup2(null, ring_fd) == ring_fd);
  ::close(null);
  // More completions than there are reads: the wait must enter the kernel, and fails.
  std::vector<io_completion> done(reads + 1);
  CHECK_THROWS_AS(q->wait(done, reads + 1, std::chrono::microseconds(1000)), lris::io_error);
  CHECK(q->quiesce() == reads);
  // Every read completed before quiesce returned: all the data is there.
  CHECK(stamped_from(buf.p, block * reads, 0, seed));
  CHECK(q->broken());
  CHECK_THROWS_AS(q->submit(ops), lris::io_error);
  CHECK_THROWS_AS(q->wait(done, 1, std::chrono::microseconds(1000)), lris::io_error);
  CHECK_FALSE(q->use_files(std::vector<int>{f.fd()}));
  CHECK(q->sync_buffers({}) == 0);
  q.reset();
  // quiesce() tore the ring down, closing the descriptor it knew (now /dev/null's copy).
  CHECK(::fcntl(ring_fd, F_GETFD) == -1);
}

TEST_CASE("a pread queue quiesced with reads in flight joins its threads first",
          "[io][faults][errors]") {
  const file f(stamped_file());
  constexpr std::size_t block = 64 << 10, reads = 32;
  detail::pread_queue q(8);
  auto buf = std::make_unique<std::byte[]>(block * reads);
  std::vector<io_op> ops;
  for (std::size_t i = 0; i < reads; ++i) {
    ops.push_back({f.fd(), i * block, buf.get() + i * block, block, false, i});
  }
  q.submit(ops);
  CHECK(q.quiesce() == reads);
  buf.reset();  // a pread still running would write into freed memory (ASan, TSan)
  CHECK(q.broken());
  CHECK_THROWS_AS(q.submit(ops), lris::io_error);
  std::vector<io_completion> done(4);
  CHECK_THROWS_AS(q.wait(done, 1, std::chrono::microseconds(1000)), lris::io_error);
}
