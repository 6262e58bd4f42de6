// host_pool: made by one process and found by others, filled once through the loader, claims
// of a process killed while filling taken over (at 100 random moments, no partial tensor ever
// visible), lifetimes (the segment goes with the last user, a persistent one stays until
// dropped), and every error.
#include <catch2/catch.hpp>

#include "support/safetensors_file.hpp"
#include "support/what_contains.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <lris/element/checksum.hpp>
#include <lris/error.hpp>
#include <lris/formats/checkpoint.hpp>
#include <lris/pool/host_pool.hpp>
#include <lris/pool/load_pool.hpp>
#include <lris/pool/populate.hpp>
#include <lris/transfer/copy.hpp>

namespace fs = std::filesystem;
using lris::pool::host_pool;
using lris::pool::pool_claim;
using lris::test::raw_tensor;

namespace {

std::string unique_name(const char* what) {
  return "test-" + std::to_string(::getpid()) + "-" + what;
}

bool segment_exists(const std::string& name) { return fs::exists("/dev/shm/lris-pool-" + name); }

struct checkpoint_dir {
  fs::path dir;
  std::vector<raw_tensor> tensors;
  explicit checkpoint_dir(const char* what, int n = 24, std::uint64_t rows = 64) {
    dir = fs::temp_directory_path() / fmt::format("lris-pool-test-{}-{}", ::getpid(), what);
    fs::create_directories(dir);
    for (int i = 0; i < n; ++i) {
      tensors.push_back(lris::test::random_tensor(fmt::format("layer.{}.weight", i),
                                                  i % 3 == 0 ? lris::dtype::F32 : lris::dtype::BF16,
                                                  {rows + static_cast<std::uint64_t>(i), 256},
                                                  static_cast<unsigned>(100 + i)));
    }
    tensors.push_back(lris::test::random_tensor("scalar", lris::dtype::F32, {}, 7));
    tensors.push_back(lris::test::random_tensor("empty", lris::dtype::I64, {0, 4}, 8));
    lris::test::write_file(dir / "model.safetensors", tensors);
  }
  ~checkpoint_dir() { fs::remove_all(dir); }
  [[nodiscard]] fs::path file() const { return dir / "model.safetensors"; }
  [[nodiscard]] std::uint64_t bytes() const {
    std::uint64_t b = 0;
    for (const auto& t : tensors) b += (t.data.size() + 4095) / 4096 * 4096;
    return b;
  }
};

// Every tensor the pool shows ready has the file's bytes and its published checksum.
std::size_t check_ready(host_pool& pool, const checkpoint_dir& ck) {
  std::size_t ready = 0;
  for (const auto& t : pool.tensors()) {
    const auto it = std::find_if(ck.tensors.begin(), ck.tensors.end(),
                                 [&](const raw_tensor& r) { return r.name == t.name; });
    REQUIRE(it != ck.tensors.end());
    REQUIRE(t.bytes == it->data.size());
    REQUIRE(t.type == it->type);
    REQUIRE(t.shape == it->shape);
    REQUIRE((t.bytes == 0 || std::memcmp(t.data, it->data.data(), t.bytes) == 0));
    REQUIRE(lris::block_checksum(t.data, t.bytes) == t.checksum);
    ++ready;
  }
  return ready;
}

// Runs `f` in a child process; returns its exit status (0 when `f` returned).
template <class F>
int in_child(F f) {
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int code = 0;
    try {
      code = f();
    } catch (...) {
      code = 99;
    }
    ::_exit(code);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

TEST_CASE("host pool: filled once, found by every process without the disk", "[pool]") {
  const checkpoint_dir ck("once");
  const auto name = unique_name("once");
  {
    host_pool pool = host_pool::create(name, ck.bytes());
    CHECK(segment_exists(name));
    CHECK(pool.tensors().empty());
    const lris::safetensors::checkpoint file(ck.file());
    auto& p = lris::default_pipeline<lris::host_backend>();
    const auto r = lris::pool::populate(pool, p, file);
    CHECK(r.loaded == ck.tensors.size());
    CHECK(r.present == 0);
    CHECK(check_ready(pool, ck) == ck.tensors.size());
    const auto again = lris::pool::populate(pool, p, file);  // nothing left to read
    CHECK(again.loaded == 0);
    CHECK(again.present == ck.tensors.size());

    // Other processes attach and find every tensor; the file is gone by then.
    fs::rename(ck.file(), ck.dir / "moved");
    for (int k = 0; k < 3; ++k) {
      CHECK(in_child([&] {
              host_pool other = host_pool::attach(name);
              const auto t = other.find("layer.5.weight");
              if (!t || std::memcmp(t->data, ck.tensors[5].data.data(), t->bytes) != 0) return 1;
              other.verify("layer.5.weight");
              return other.tensors().size() == ck.tensors.size() ? 0 : 2;
            }) == 0);
    }
    fs::rename(ck.dir / "moved", ck.file());
    const auto info = pool.info();
    CHECK(info.tensors == ck.tensors.size());
    CHECK(info.filling == 0);
    CHECK(info.users == 1);  // the children left
    CHECK(info.generation == ck.tensors.size());
    const auto listed = host_pool::list();
    CHECK(std::any_of(listed.begin(), listed.end(), [&](const auto& i) {
      return i.name == name && i.tensors == ck.tensors.size();
    }));
  }
  CHECK_FALSE(segment_exists(name));  // the last user left
}

TEST_CASE("host pool: a filler killed at any moment leaves a pool the next one finishes",
          "[pool]") {
  const checkpoint_dir ck("kill", 32, 512);
  const lris::safetensors::checkpoint file(ck.file());
  std::mt19937 rng(12345);
  int interrupted = 0, taken_over = 0, partial = 0;
  for (int round = 0; round < 100; ++round) {
    const auto name = unique_name("kill");
    host_pool pool = host_pool::create(name, ck.bytes());
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      try {
        host_pool mine = host_pool::attach(name);
        auto& p = lris::default_pipeline<lris::host_backend>();
        (void)lris::pool::populate(mine, p, file);
      } catch (...) {
        ::_exit(1);
      }
      ::_exit(0);
    }
    // Killed at a random moment of its life, from attaching to publishing.
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 20000));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (WIFSIGNALED(status)) ++interrupted;
    const std::size_t seen = check_ready(pool, ck);  // whole tensors only, whatever it did
    const auto r = lris::pool::populate(pool, lris::default_pipeline<lris::host_backend>(), file);
    CHECK(seen + r.loaded == ck.tensors.size());
    if (r.taken_over > 0) ++taken_over;
    if (seen > 0 && seen < ck.tensors.size()) ++partial;
    CHECK(r.busy == 0);  // the dead filler's claims are taken over
    CHECK(check_ready(pool, ck) == ck.tensors.size());
    CHECK(pool.info().filling == 0);
  }
  CHECK(interrupted > 10);  // most rounds cut a fill short
  CHECK(taken_over > 10);   // and left claims that the next fill took over
  INFO("rounds killed while publishing: " << partial);
  for (const auto& i : host_pool::list()) CHECK(i.name.find(unique_name("kill")) != 0);
}

TEST_CASE("host pool: claims, waits and a filler that gives up", "[pool]") {
  const auto name = unique_name("claims");
  host_pool pool = host_pool::create(name, 1 << 20, {.max_tensors = 4});
  const std::vector<std::uint64_t> shape{16, 16};
  pool_claim c = pool.claim("w", lris::dtype::F32, shape, 1024);
  REQUIRE(c.what == pool_claim::state::claimed);
  CHECK_FALSE(pool.find("w"));  // not before it is published
  CHECK_FALSE(pool.wait("nobody", std::chrono::milliseconds(5)));

  // Another process sees it busy while this one lives.
  CHECK(in_child([&] {
          host_pool other = host_pool::attach(name);
          return other.claim("w", lris::dtype::F32, shape, 1024).what == pool_claim::state::busy
                     ? 0 : 1;
        }) == 0);
  std::memset(c.data, 42, 1024);
  const std::uint64_t sum = pool.publish(c);
  CHECK(sum == lris::block_checksum(c.data, 1024));
  CHECK(pool.find("w")->checksum == sum);
  CHECK(pool.claim("w", lris::dtype::F32, shape, 1024).what == pool_claim::state::ready);

  // A claim given up is taken over by the next claimer.
  pool_claim d = pool.claim("v", lris::dtype::U8, {}, 10);
  pool.abandon(d);
  CHECK(in_child([&] {
          host_pool other = host_pool::attach(name);
          const auto e = other.claim("v", lris::dtype::U8, {}, 10);
          if (e.what != pool_claim::state::claimed || !e.taken_over) return 1;
          std::memset(e.data, 7, 10);
          other.publish(e);
          return 0;
        }) == 0);
  CHECK(pool.find("v")->data[9] == std::byte{7});
}

TEST_CASE("host pool: a waiter sees the tensor once it is published", "[pool]") {
  const auto name = unique_name("wait");
  host_pool pool = host_pool::create(name, 1 << 20);
  pool_claim c = pool.claim("w", lris::dtype::U8, {}, 4096);
  REQUIRE(c.what == pool_claim::state::claimed);
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int code = 1;
    try {
      host_pool other = host_pool::attach(name);
      const char go = 'g';
      (void)!::write(fds[1], &go, 1);  // attached: the parent publishes now
      const auto t = other.wait("w", std::chrono::seconds(20));
      code = t && t->data[4095] == std::byte{9} ? 0 : 2;
    } catch (...) {
      code = 3;
    }
    ::_exit(code);
  }
  char go = 0;
  REQUIRE(::read(fds[0], &go, 1) == 1);
  std::memset(c.data, 9, 4096);
  pool.publish(c);
  int status = 0;
  ::waitpid(pid, &status, 0);
  CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST_CASE("host pool: a persistent pool stays until dropped; open makes or attaches",
          "[pool]") {
  const auto name = unique_name("persistent");
  {
    host_pool pool = host_pool::create(name, 1 << 20, {.persistent = true});
    pool_claim c = pool.claim("x", lris::dtype::U8, {}, 3);
    std::memset(c.data, 1, 3);
    pool.publish(c);
  }
  CHECK(segment_exists(name));
  {
    host_pool again = host_pool::open(name, 1 << 20);  // attaches: the data is there
    CHECK(again.find("x"));
    CHECK(again.info().persistent);
    CHECK(host_pool::drop(name));  // removed from the name space now, memory freed at the end
    CHECK_FALSE(segment_exists(name));
    CHECK(again.find("x"));
    host_pool fresh = host_pool::open(name, 1 << 20);  // a new pool of the name
    CHECK_FALSE(fresh.find("x"));
  }
  CHECK_FALSE(segment_exists(name));  // the new one went with its last user
  CHECK_FALSE(host_pool::drop(name));
}

TEST_CASE("host pool: errors name the pool, the tensor and the sizes", "[pool]") {
  using lris::test::what_contains;
  const auto name = unique_name("errors");
  CHECK_THROWS_MATCHES(host_pool::create("bad/name", 10), lris::invalid_argument,
                       what_contains("not a pool name"));
  CHECK_THROWS_MATCHES(host_pool::create(name, 0), lris::invalid_argument,
                       what_contains("0 bytes"));
  CHECK_THROWS_MATCHES(host_pool::create(name, 10, {.numa_node = 4096}), lris::invalid_argument,
                       what_contains("NUMA node 4096"));
  CHECK_THROWS_MATCHES(host_pool::attach(name), lris::io_error, what_contains("no such pool"));
  {  // more than /dev/shm has free: refused at once, nothing left behind (its pages never touched)
    struct statvfs fs {};
    REQUIRE(::statvfs("/dev/shm", &fs) == 0);
    const std::uint64_t free_bytes = std::uint64_t{fs.f_bavail} * fs.f_frsize;
    CHECK_THROWS_MATCHES(host_pool::create(name, free_bytes + (std::uint64_t{1} << 30)),
                         lris::io_error, what_contains("bytes free; the pool needs"));
    CHECK_THROWS_MATCHES(host_pool::attach(name), lris::io_error, what_contains("no such pool"));
  }
  host_pool pool = host_pool::create(name, 8192, {.max_tensors = 2});
  CHECK_THROWS_MATCHES(host_pool::create(name, 10), lris::io_error, what_contains("exists"));
  const std::vector<std::uint64_t> shape{4};
  CHECK_THROWS_MATCHES(pool.claim("big", lris::dtype::U8, shape, 9000), lris::out_of_memory,
                       what_contains("no room for tensor \"big\" of 9000 bytes"));
  pool_claim a = pool.claim("a", lris::dtype::F32, shape, 16);
  CHECK_THROWS_MATCHES(pool.claim("a", lris::dtype::F16, shape, 8), lris::invalid_argument,
                       what_contains("tensor \"a\" is there as F32"));
  CHECK_THROWS_MATCHES(pool.claim(std::string(300, 'n'), lris::dtype::U8, shape, 4),
                       lris::invalid_argument, what_contains("300 bytes long"));
  const std::vector<std::uint64_t> deep(9, 1);
  CHECK_THROWS_MATCHES(pool.claim("deep", lris::dtype::U8, deep, 1), lris::invalid_argument,
                       what_contains("9 dimensions"));
  (void)pool.claim("b", lris::dtype::U8, shape, 4);
  CHECK_THROWS_MATCHES(pool.claim("c", lris::dtype::U8, shape, 4), lris::out_of_memory,
                       what_contains("the directory holds 2 tensors"));
  pool_claim forged = a;
  forged.index = 7;
  CHECK_THROWS_MATCHES(pool.publish(forged), lris::invalid_argument,
                       what_contains("has not claimed"));
  std::memset(a.data, 5, 16);
  pool.publish(a);
  std::memset(a.data, 6, 1);  // changed after publication
  CHECK_THROWS_MATCHES(pool.verify("a"), lris::integrity_error,
                       what_contains("tensor \"a\" (16 bytes at offset 0"));
  CHECK_THROWS_MATCHES(pool.verify("b"), lris::invalid_argument, what_contains("no ready tensor"));
}

TEST_CASE("host pool: a source for the loader", "[pool]") {
  using lris::test::what_contains;
  const checkpoint_dir ck("source", 6);
  const auto name = unique_name("source");
  host_pool pool = host_pool::create(name, ck.bytes());
  auto& p = lris::default_pipeline<lris::host_backend>();
  CHECK_THROWS_MATCHES(lris::pool::load(pool, p), lris::invalid_argument,
                       what_contains("holds no ready tensor"));
  (void)lris::pool::populate(pool, p, lris::safetensors::checkpoint(ck.file()));
  const auto all = lris::pool::load(pool, p);
  REQUIRE(all.tensors.size() == ck.tensors.size());
  for (std::size_t i = 0; i < all.tensors.size(); ++i) {
    const auto& t = all.tensors[i];
    CHECK(t.name == ck.tensors[i].name);
    CHECK(t.shape == ck.tensors[i].shape);
    CHECK(t.lease != nullptr);
    CHECK(reinterpret_cast<std::uintptr_t>(t.data) % 256 == 0);
    CHECK((t.bytes == 0 || std::memcmp(t.data, ck.tensors[i].data.data(), t.bytes) == 0));
  }
  std::uint64_t file_bytes = 0;
  for (const auto& t : ck.tensors) file_bytes += t.data.size();
  CHECK(all.report.memory_bytes == file_bytes);
  const auto some = lris::pool::load(pool, p, lris::safetensors::load_target_memory::host,
                                     {"layer.3.weight", "scalar"});
  REQUIRE(some.tensors.size() == 2);
  CHECK(some.tensors[1].name == "scalar");
  CHECK(std::memcmp(some.tensors[1].data, ck.tensors[6].data.data(), 4) == 0);
  CHECK_THROWS_MATCHES(lris::pool::load(pool, p, lris::safetensors::load_target_memory::host,
                                        {"nope"}),
                       lris::invalid_argument, what_contains("no ready tensor \"nope\""));
  // A tensor-parallel rank's slices: layer.1 ([65, 256] BF16) along dimension 1, layer.2
  // ([66, 256]) along dimension 0; the others whole.
  const auto slice = [](const lris::safetensors::tensor_info& t)
      -> std::optional<lris::safetensors::tensor_slice> {
    if (t.name == "layer.1.weight") return lris::safetensors::tensor_slice{1, 1, 4};
    if (t.name == "layer.2.weight") return lris::safetensors::tensor_slice{0, 1, 2};
    return std::nullopt;
  };
  const auto rank = lris::pool::load(pool, p, lris::safetensors::load_target_memory::device, {},
                                     slice);
  REQUIRE(rank.tensors.size() == ck.tensors.size());
  const auto& cols = rank.tensors[1];
  CHECK(cols.shape == std::vector<std::uint64_t>{65, 64});
  REQUIRE(cols.bytes == 65 * 64 * 2);
  for (std::uint64_t r = 0; r < 65; ++r) {
    CHECK(std::memcmp(cols.data + r * 128, ck.tensors[1].data.data() + r * 512 + 128, 128) == 0);
  }
  const auto& rows = rank.tensors[2];
  CHECK(rows.shape == std::vector<std::uint64_t>{33, 256});
  CHECK(std::memcmp(rows.data, ck.tensors[2].data.data() + 33 * 512, 33 * 512) == 0);
  CHECK(std::memcmp(rank.tensors[3].data, ck.tensors[3].data.data(), rank.tensors[3].bytes) == 0);
  CHECK_THAT(rank.report.path, Catch::Contains("(2 tensors as slices)"));
  const auto uneven = [](const lris::safetensors::tensor_info& t)
      -> std::optional<lris::safetensors::tensor_slice> {
    if (t.name == "layer.1.weight") return lris::safetensors::tensor_slice{0, 0, 2};  // 65 rows
    return std::nullopt;
  };
  CHECK_THROWS_MATCHES(lris::pool::load(pool, p, lris::safetensors::load_target_memory::device,
                                        {}, uneven),
                       lris::invalid_argument,
                       what_contains("tensor \"layer.1.weight\": dimension 0 (65) does not "
                                     "divide into 2 equal parts"));
}

TEST_CASE("host pool: a fill the pool cannot take whole is refused before any claim",
          "[pool][errors]") {
  using lris::test::what_contains;
  const checkpoint_dir ck("room", 4);  // 4 layers, a scalar and an empty tensor: 6
  const lris::safetensors::checkpoint file(ck.file());
  auto& p = lris::default_pipeline<lris::host_backend>();
  {  // a directory of 5 entries
    host_pool pool = host_pool::create(unique_name("entries"), ck.bytes(), {.max_tensors = 5});
    CHECK_THROWS_MATCHES(lris::pool::populate(pool, p, file), lris::out_of_memory,
                         what_contains("needs 6 tensors more and"));
    CHECK_THROWS_MATCHES(lris::pool::populate(pool, p, file), lris::out_of_memory,
                         what_contains("room for 5 tensors more"));
    const auto info = pool.info();
    CHECK(info.filling == 0);  // nothing claimed and left behind
    CHECK(info.used_bytes == 0);
    lris::safetensors::load_options some;
    some.select = "^layer\\.";
    CHECK(lris::pool::populate(pool, p, file, some).loaded == 4);  // what fits still goes in
    CHECK(pool.info().tensors == 4);
  }
  {  // data for all but the last layer
    host_pool pool = host_pool::create(unique_name("bytes"), ck.bytes() - 4096 * 20);
    CHECK_THROWS_MATCHES(lris::pool::populate(pool, p, file), lris::out_of_memory,
                         what_contains("(nothing was claimed)"));
    CHECK(pool.info().filling == 0);
    CHECK(pool.info().used_bytes == 0);
  }
}

TEST_CASE("host pool: a pool whose users all died is freed by the next look", "[pool]") {
  const auto name = unique_name("orphan");
  CHECK(in_child([&] {
          host_pool p = host_pool::create(name, 1 << 20);
          (void)p.claim("w", lris::dtype::U8, {}, 10);
          ::_exit(0);  // dies without leaving it
          return 0;
        }) == 0);
  CHECK(segment_exists(name));
  const auto pools = host_pool::list();
  CHECK(std::none_of(pools.begin(), pools.end(), [&](const auto& i) { return i.name == name; }));
  CHECK_FALSE(segment_exists(name));
}


TEST_CASE("host pool: names and handles are never confused", "[pool]") {
  const auto name = unique_name("names");
  {  // two handles of one process: the pool stays until both go
    host_pool a = host_pool::create(name, 1 << 20);
    {
      host_pool b = host_pool::attach(name);
      CHECK(b.info().users == 1);  // one process
    }
    CHECK(segment_exists(name));
    CHECK(a.find("x") == std::nullopt);
  }
  CHECK_FALSE(segment_exists(name));
  {  // a dropped pool's last user does not remove a later pool of the name
    auto old_pool = std::make_optional(host_pool::create(name, 1 << 20));
    CHECK(host_pool::drop(name));
    host_pool later = host_pool::create(name, 1 << 20);
    old_pool.reset();
    CHECK(segment_exists(name));
    CHECK_FALSE(later.info().persistent);
  }
  CHECK_FALSE(segment_exists(name));
  {  // a segment whose creator died before finishing it is made anew by the next open
    const int fd = ::shm_open(("/lris-pool-" + name).c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(::ftruncate(fd, 1 << 16) == 0);  // zeros: no creator, never ready
    ::close(fd);
    host_pool p = host_pool::open(name, 1 << 20);
    CHECK(p.info().data_bytes == 1 << 20);
  }
  CHECK_FALSE(segment_exists(name));
  {  // a tensor another thread of this process fills is busy, not claimed twice
    host_pool p = host_pool::create(name, 1 << 20);
    const pool_claim first = p.claim("t", lris::dtype::U8, {}, 8);
    REQUIRE(first.what == pool_claim::state::claimed);
    CHECK(p.claim("t", lris::dtype::U8, {}, 8).what == pool_claim::state::busy);
    p.abandon(first);
    CHECK(p.claim("t", lris::dtype::U8, {}, 8).what == pool_claim::state::claimed);
  }
}
