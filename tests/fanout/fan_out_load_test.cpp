// fanout::load on the host backend's devices: every byte arrives on every device, storage is
// read once, row and column slices are right, groups of ranks agree, verify, and the errors:
// a device that does not finish in time (typed, naming it), options a fan-out does not take.
#include <catch2/catch.hpp>

#include "support/safetensors_file.hpp"
#include "support/scratch_dir.hpp"
#include "support/what_contains.hpp"

#include <chrono>
#include <cstring>
#include <filesystem>
#include <future>
#include <string>
#include <memory>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <cerrno>
#include <unistd.h>

#include <lris/fanout/fan_out_load.hpp>
#include <lris/io/queue.hpp>
#include <lris/lris.hpp>

using lris::dtype;
using lris::test::random_tensor;
using lris::test::raw_tensor;
using lris::test::what_contains;
using lris::test::write_file;
namespace fo = lris::fanout;
namespace st = lris::safetensors;

namespace {

using host_pipeline = lris::pipeline<lris::auto_select, lris::host_backend>;

std::filesystem::path dir() {
  static const lris::test::scratch_dir d("fan_out_test_files");
  return d.path();
}

std::vector<raw_tensor> model() {
  return {random_tensor("model.embed_tokens.weight", dtype::BF16, {512, 64}, 1),
          random_tensor("model.layers.0.self_attn.q_proj.weight", dtype::BF16, {256, 128}, 2),
          random_tensor("model.layers.0.self_attn.q_proj.bias", dtype::BF16, {256}, 3),
          random_tensor("model.layers.0.self_attn.o_proj.weight", dtype::F32, {128, 256}, 4),
          random_tensor("model.layers.0.self_attn.o_proj.bias", dtype::F32, {128}, 5),
          random_tensor("model.layers.0.input_layernorm.weight", dtype::F32, {128}, 6),
          random_tensor("model.layers.0.mlp.down_proj.weight", dtype::F16, {64, 4096}, 7),
          random_tensor("model.norm.weight", dtype::F32, {0}, 8)};
}

std::vector<host_pipeline> pipelines(std::size_t n, lris::pipeline_config config = {}) {
  std::vector<host_pipeline> out;
  for (std::size_t d = 0; d < n; ++d) {
    out.emplace_back(lris::auto_select{}, lris::host_backend(static_cast<int>(d)), lris::pinned_allocator<lris::host_backend>{}, config);
  }
  return out;
}

// `n` host pipelines sharing one broker, with every token of host:1's link held: its copies
// wait until `held` is reset.
struct stalled_host1 {
  std::vector<host_pipeline> p;
  std::shared_ptr<lris::sched::resource_tokens> held;
};
stalled_host1 with_host1_stalled(std::size_t n, const char* device = "host:1",
                                 lris::pipeline_config config = {}) {
  auto broker = std::make_shared<lris::sched::bandwidth_broker>();
  config.broker = broker;
  stalled_host1 s{pipelines(n, config), nullptr};
  const auto link = broker->resource(lris::sched::link_resource(device, true));
  s.held = std::make_shared<lris::sched::resource_tokens>(
      broker->acquire(link, broker->capacity(link), lris::priority::critical));
  return s;
}

// An io queue that does each read with pread when it is submitted, and fails every one that
// reaches past `cut` with EIO.
class eio_from final : public lris::io::io_queue {
 public:
  eio_from(unsigned depth, std::uint64_t cut) : depth_(depth), cut_(cut) {}
  [[nodiscard]] unsigned capacity() const noexcept override { return depth_; }
  [[nodiscard]] std::string_view name() const noexcept override { return "eio-from"; }
  void submit(std::span<const lris::io::io_op> ops) override {
    for (const auto& op : ops) {
      long r = -EIO;
      if (op.write || op.offset + op.len <= cut_) {
        const ssize_t got = op.write ? ::pwrite(op.fd, op.buf, op.len, static_cast<off_t>(op.offset))
                                     : ::pread(op.fd, op.buf, op.len, static_cast<off_t>(op.offset));
        r = got < 0 ? -errno : static_cast<long>(got);
      }
      ready_.push_back({op.tag, r});
    }
  }
  std::size_t wait(std::span<lris::io::io_completion> out, std::size_t,
                   std::chrono::microseconds) override {
    const std::size_t k = std::min(out.size(), ready_.size());
    std::copy_n(ready_.begin(), k, out.begin());
    ready_.erase(ready_.begin(), ready_.begin() + static_cast<std::ptrdiff_t>(k));
    return k;
  }
  std::size_t quiesce() noexcept override {
    const std::size_t k = ready_.size();
    ready_.clear();
    broken_ = true;
    return k;
  }
  [[nodiscard]] bool broken() const noexcept override { return broken_; }

 private:
  unsigned depth_;
  std::uint64_t cut_;
  std::vector<lris::io::io_completion> ready_;
  bool broken_ = false;
};

// A load onto `p` with host:1 stalled ends in rank_timeout naming host:1, with `what` in it.
void check_host1_times_out(std::vector<host_pipeline>& p, const st::checkpoint& ck,
                           const fo::fan_out_options& o, const std::string& what) {
  try {
    (void)fo::load(std::span(p), ck, o);
    FAIL("no timeout");
  } catch (const lris::rank_timeout& e) {
    CHECK(e.rank() == 1);
    CHECK(e.device() == "host:1");
    CHECK_THAT(e, what_contains(what));
  }
}

// The bytes of part `rank` of `ranks` of `t` split along `dim`.
std::vector<std::byte> slice_of(const raw_tensor& t, unsigned dim, unsigned rank, unsigned ranks) {
  std::uint64_t outer = 1, inner = lris::bits_of(t.type) / 8;
  for (unsigned d = 0; d < dim; ++d) outer *= t.shape[d];
  for (std::size_t d = dim; d < t.shape.size(); ++d) inner *= t.shape[d];
  const std::uint64_t piece = inner / ranks;
  std::vector<std::byte> out;
  for (std::uint64_t r = 0; r < outer; ++r) {
    const auto* at = t.data.data() + r * inner + rank * piece;
    out.insert(out.end(), at, at + piece);
  }
  return out;
}

std::vector<std::byte> bytes_of(const st::loaded_tensor& t) { return {t.data, t.data + t.bytes}; }

}  // namespace

TEST_CASE("fanout::load: replicated onto 3 host devices, storage read once") {
  const auto m = model();
  const auto file = write_file(dir() / "replicated.safetensors", m);
  st::checkpoint ck(file);
  auto p = pipelines(3);
  fo::fan_out_options o;
  o.load.transfer.chunk_bytes = GENERATE(std::size_t{0}, std::size_t{4096}, std::size_t{65536});
  o.load.transfer.workers = o.load.transfer.chunk_bytes ? 2 : 0;
  const auto r = fo::load(std::span(p), ck, o);
  REQUIRE(r.devices.size() == 3);
  std::uint64_t bytes = 0;
  for (const auto& t : m) bytes += t.data.size();
  CHECK(r.report.file_bytes == bytes);
  CHECK(r.report.storage_bytes == bytes);
  CHECK(r.report.staging_bytes <= p[0].max_slot_bytes());  // the staging bound
  for (std::size_t d = 0; d < 3; ++d) {
    const auto& dev = r.devices[d];
    REQUIRE(dev.tensors.size() == m.size());
    CHECK(r.report.devices[d].device == fmt::format("host:{}", d));
    CHECK(r.report.devices[d].bytes == bytes);
    for (std::size_t i = 0; i < m.size(); ++i) {
      CHECK(dev.tensors[i].name == m[i].name);
      CHECK(dev.tensors[i].shape == m[i].shape);
      CHECK(dev.tensors[i].location.device_id == static_cast<int>(d));
      CHECK(reinterpret_cast<std::uintptr_t>(dev.tensors[i].data) % 256 == 0);
      CHECK(bytes_of(dev.tensors[i]) == m[i].data);
    }
  }
}

TEST_CASE("fanout::load: tensor-parallel slices by llama's plan, on 2 ranks and 2 groups of 2") {
  const auto m = model();
  const auto file = write_file(dir() / "tp.safetensors", m);
  st::checkpoint ck(file);
  const std::size_t devices = GENERATE(2u, 4u);
  auto p = pipelines(devices);
  fo::fan_out_options o;
  o.tp = 2;
  o.plan = fo::sharding::llama();
  o.verify = true;
  o.load.transfer.chunk_bytes = GENERATE(std::size_t{0}, std::size_t{8192});
  o.load.transfer.workers = o.load.transfer.chunk_bytes ? 1 : 0;
  const auto r = fo::load(std::span(p), ck, o);
  std::uint64_t bytes = 0;
  for (const auto& t : m) bytes += t.data.size();
  CHECK(r.report.storage_bytes == bytes);  // every slice from one read
  for (std::size_t d = 0; d < devices; ++d) {
    const unsigned rank = d % 2;
    const auto& ts = r.devices[d].tensors;
    CHECK(bytes_of(ts[0]) == slice_of(m[0], 0, rank, 2));  // vocabulary
    CHECK(ts[0].shape == std::vector<std::uint64_t>{256, 64});
    CHECK(bytes_of(ts[1]) == slice_of(m[1], 0, rank, 2));  // colwise weight: rows
    CHECK(bytes_of(ts[2]) == slice_of(m[2], 0, rank, 2));  // colwise bias
    CHECK(bytes_of(ts[3]) == slice_of(m[3], 1, rank, 2));  // rowwise weight: columns
    CHECK(ts[3].shape == std::vector<std::uint64_t>{128, 128});
    CHECK(bytes_of(ts[4]) == m[4].data);                   // rowwise bias: whole
    CHECK(bytes_of(ts[5]) == m[5].data);                   // replicated
    CHECK(bytes_of(ts[6]) == slice_of(m[6], 1, rank, 2));
    CHECK(ts[7].bytes == 0);
    CHECK(r.report.devices[d].rank == rank);
    CHECK(r.report.devices[d].split == 5);
    CHECK(r.report.devices[d].verified == m.size());
    CHECK(r.report.devices[d].digest == r.report.devices[rank].digest);
  }
  CHECK(r.report.devices[0].digest != r.report.devices[1].digest);
  const std::uint64_t replicated = m[4].data.size() + m[5].data.size();
  CHECK(r.report.devices[0].bytes == (bytes - replicated) / 2 + replicated);
}

TEST_CASE("fanout::load: the peer route, each chunk into one device and from there to all") {
  const auto m = model();
  const auto file = write_file(dir() / "peer.safetensors", m);
  st::checkpoint ck(file);
  const std::size_t devices = GENERATE(3u, 4u);
  auto p = pipelines(devices);
  fo::fan_out_options o;
  o.path = fo::fan_path::peer;
  o.verify = true;
  o.tp = devices == 4 ? 2 : 1;
  o.plan = fo::sharding::llama();
  o.load.transfer.chunk_bytes = 8192;  // many chunks: every device takes some first
  o.load.transfer.workers = 1;
  const auto r = fo::load(std::span(p), ck, o);
  CHECK(r.report.path == fo::fan_path::peer);
  CHECK(r.report.chunks > devices);
  CHECK(r.report.scratch_bytes > 0);
  std::uint64_t bytes = 0;
  for (const auto& t : m) bytes += t.data.size();
  CHECK(r.report.storage_bytes == bytes);
  for (std::size_t d = 0; d < devices; ++d) {
    CHECK(r.report.devices[d].verified == m.size());
    CHECK_THAT(r.report.devices[d].path, Catch::Contains("by peer copies"));
    const unsigned rank = d % o.tp;
    const auto& ts = r.devices[d].tensors;
    CHECK(bytes_of(ts[3]) == (o.tp == 1 ? m[3].data : slice_of(m[3], 1, rank, 2)));
    CHECK(bytes_of(ts[5]) == m[5].data);
  }
}

TEST_CASE("fanout::load: the peer route with one chunk, in one slot") {
  const auto m = model();
  const auto file = write_file(dir() / "peer_one.safetensors", m);
  st::checkpoint ck(file);
  auto p = pipelines(2);
  fo::fan_out_options o;
  o.path = fo::fan_path::peer;
  o.verify = true;
  const auto r = fo::load(std::span(p), ck, o);
  CHECK(r.report.chunks == 1);
  CHECK(r.report.staging_bytes == r.report.scratch_bytes);  // one slot, one room per device
  for (const auto& d : r.report.devices) CHECK(d.verified == m.size());
}

// A host backend whose devices cannot reach each other.
struct isolated_backend : lris::host_backend {
  using host_backend::host_backend;
  [[nodiscard]] bool enable_peer_access(int) const noexcept { return false; }
};

TEST_CASE("fanout::load: the peer route where devices cannot reach each other is refused") {
  const auto m = model();
  const auto file = write_file(dir() / "isolated.safetensors", m);
  st::checkpoint ck(file);
  std::vector<lris::pipeline<lris::auto_select, isolated_backend>> p;
  for (int d = 0; d < 2; ++d) p.emplace_back(lris::auto_select{}, isolated_backend(d));
  fo::fan_out_options o;
  o.path = fo::fan_path::peer;
  CHECK_THROWS_MATCHES(fo::load(std::span(p), ck, o), lris::unsupported,
                       what_contains("the peer route needs host:0 to reach host:1's memory"));
  o.path = fo::fan_path::automatic;  // the pinned slots to each device
  const auto r = fo::load(std::span(p), ck, o);
  CHECK(r.report.path == fo::fan_path::dma);
  CHECK(bytes_of(r.devices[1].tensors[0]) == m[0].data);
}

TEST_CASE("fanout::load: the automatic route says why it chose the pinned slots") {
  const auto m = model();
  const auto file = write_file(dir() / "route.safetensors", m);
  st::checkpoint ck(file);
  auto p = pipelines(2);
  const auto r = fo::load(std::span(p), ck, {});
  CHECK(r.report.path == fo::fan_path::dma);
  CHECK_THAT(r.report.route_reason,
             Catch::Contains("host:0 reaches host:1 by one host memory: each device takes its "
                             "bytes from the pinned slots over its own link"));
  CHECK(r.report.nccl.empty());
  fo::fan_out_options asked;
  asked.path = fo::fan_path::dma;
  CHECK(fo::load(std::span(p), ck, asked).report.route_reason == "asked for (dma)");
}

TEST_CASE("fanout::load: the nccl route on a backend without streams for it is refused",
          "[errors]") {
  const auto m = model();
  const auto file = write_file(dir() / "nccl.safetensors", m);
  st::checkpoint ck(file);
  auto p = pipelines(2);
  fo::fan_out_options o;
  o.path = fo::fan_path::nccl;
  CHECK_THROWS_MATCHES(fo::load(std::span(p), ck, o), lris::unsupported,
                       what_contains("the nccl route needs a GPU backend with streams; host has "
                                     "none"));
}

TEST_CASE("fanout::load: onto one device, a plain load unless the chunked route is asked for") {
  const auto m = model();
  const auto file = write_file(dir() / "one.safetensors", m);
  st::checkpoint ck(file);
  auto p = pipelines(1);
  fo::fan_out_options o;
  o.verify = true;
  for (const auto path : {fo::fan_path::automatic, fo::fan_path::dma}) {
    o.path = path;
    const auto r = fo::load(std::span(p), ck, o);
    CHECK_THAT(r.report.devices[0].path,
               path == fo::fan_path::automatic ? Catch::Contains("a plain load")
                                               : Catch::Contains("(DMA"));
    CHECK(r.report.devices[0].verified == m.size());
    for (std::size_t i = 0; i < m.size(); ++i) CHECK(bytes_of(r.devices[0].tensors[i]) == m[i].data);
  }
}

TEST_CASE("fanout::load: selection, progress and cancel") {
  const auto m = model();
  const auto file = write_file(dir() / "select.safetensors", m);
  st::checkpoint ck(file);
  auto p = pipelines(2);
  fo::fan_out_options o;
  o.load.select = "self_attn";
  std::uint64_t last = 0, total = 0;
  o.load.on_progress = [&](std::uint64_t done, std::uint64_t all) {
    CHECK(done >= last);
    last = done;
    total = all;
    return true;
  };
  const auto r = fo::load(std::span(p), ck, o);
  CHECK(r.devices[1].tensors.size() == 4);
  CHECK(last == total);
  CHECK(total == 2 * r.report.file_bytes);
  o.load.transfer.chunk_bytes = 4096;
  o.load.on_progress = [](std::uint64_t, std::uint64_t) { return false; };
  CHECK_THROWS_AS(fo::load(std::span(p), ck, o), lris::cancelled);
}

TEST_CASE("fanout::load: a device that does not take its chunk in time is named") {
  const auto m = model();
  const auto file = write_file(dir() / "timeout.safetensors", m);
  st::checkpoint ck(file);
  auto [p, held] = with_host1_stalled(2);
  fo::fan_out_options o;
  o.timeout = std::chrono::milliseconds(200);
  check_host1_times_out(p, ck, o, "device 1 (host:1, rank 0 of 1) did not take chunk 0");
  held.reset();  // the copies given up on finish, and their memory goes with them
  // The pipelines work on.
  o.timeout = std::chrono::milliseconds(0);
  const auto r = fo::load(std::span(p), ck, o);
  CHECK(bytes_of(r.devices[1].tensors[1]) == m[1].data);
}

TEST_CASE("fanout::load: on the peer route, a root that does not take its chunk in time is named",
          "[errors]") {
  const auto m = model();
  const auto file = write_file(dir() / "root_timeout.safetensors", m);
  st::checkpoint ck(file);
  // host:1's link is held: chunk 1, whose root it is, never gets there.
  auto [p, held] = with_host1_stalled(3);
  fo::fan_out_options o;
  o.path = fo::fan_path::peer;
  o.timeout = std::chrono::milliseconds(200);
  o.load.transfer.chunk_bytes = 8192;
  o.load.transfer.workers = 1;
  check_host1_times_out(p, ck, o, "device 1 (host:1, rank 0 of 1) did not take chunk ");
  held.reset();  // the copies given up on finish, and their memory goes with them
  o.timeout = std::chrono::milliseconds(0);
  o.verify = true;
  const auto r = fo::load(std::span(p), ck, o);
  for (const auto& d : r.report.devices) CHECK(d.verified == m.size());
}

TEST_CASE("fanout::load: after a failed read, a copy that does not end is left behind, not waited "
          "for", "[errors]") {
  const auto m = model();
  const auto file = write_file(dir() / "stalled_then_failed.safetensors", m);
  st::checkpoint ck(file);
  // Every read past the first 8 KiB of the tensors' data fails (EIO, when it is done). host:0's
  // link is held, so chunk 0's copy into host:0 (its root on the peer route) waits, and no
  // timeout (0) gives up on it: the failed read of a later chunk ends the load.
  lris::pipeline_config config;
  config.io.make_queue = [cut = ck.shards()[0].header.data_offset + 8192](unsigned depth) {
    return std::unique_ptr<lris::io::io_queue>(std::make_unique<eio_from>(depth, cut));
  };
  auto [p, held] = with_host1_stalled(2, "host:0", config);
  fo::fan_out_options o;
  o.path = fo::fan_path::peer;
  o.timeout = std::chrono::milliseconds(0);
  o.load.transfer.chunk_bytes = 8192;
  o.load.transfer.workers = 1;
  std::promise<std::string> thrown;
  auto ended = thrown.get_future();
  std::thread loader([&] {
    try {
      (void)fo::load(std::span(p), ck, o);
      thrown.set_value("nothing");
    } catch (const lris::io_error& e) {
      thrown.set_value(std::string("io_error: ") + e.what());
    } catch (const std::exception& e) {
      thrown.set_value(std::string("another error: ") + e.what());
    }
  });
  const bool in_time = ended.wait_for(std::chrono::seconds(20)) == std::future_status::ready;
  held.reset();  // the stalled copy finishes; its slot and rooms go with it
  loader.join();
  REQUIRE(in_time);
  const std::string what = ended.get();
  CHECK_THAT(what, Catch::StartsWith("io_error: "));
  CHECK_THAT(what, Catch::Contains("stalled_then_failed.safetensors"));
}

TEST_CASE("fanout::load: errors name what is wrong") {
  const auto m = model();
  const auto file = write_file(dir() / "errors.safetensors", m);
  st::checkpoint ck(file);
  auto p = pipelines(3);
  fo::fan_out_options o;
  o.tp = 2;
  CHECK_THROWS_MATCHES(fo::load(std::span(p), ck, o), lris::invalid_argument,
                       what_contains("3 devices are not a multiple of 2 tensor-parallel ranks"));
  o.tp = 1;
  o.load.convert_to = dtype::F32;
  CHECK_THROWS_MATCHES(fo::load(std::span(p), ck, o), lris::invalid_argument,
                       what_contains("options of a load onto one device"));
  o.load.convert_to.reset();
  o.load.on_placed = [](const std::vector<st::loaded_tensor>&) {};
  CHECK_THROWS_MATCHES(fo::load(std::span(p), ck, o), lris::invalid_argument,
                       what_contains("on_placed are options of a load onto one device"));
  o.load.on_placed = nullptr;
  std::vector<host_pipeline> twice;
  twice.emplace_back();
  twice.emplace_back();
  CHECK_THROWS_MATCHES(fo::load(std::span(twice), ck, o), lris::invalid_argument,
                       what_contains("device host:0 is named twice"));
  std::vector<host_pipeline> none;
  CHECK_THROWS_MATCHES(fo::load(std::span(none), ck, o), lris::invalid_argument,
                       what_contains("no device to load onto"));
  auto four = pipelines(4);
  o.tp = 4;
  o.plan.add("model.embed_tokens", "dim=1");  // 64 columns divide; q_proj's 256 rows too
  o.plan.add("input_layernorm", "colwise");    // 128 divide by 4
  o.plan.add("o_proj.weight", "dim=1");
  o.plan.add("mlp.down_proj", "dim=0");        // 64 rows divide by 4
  CHECK_NOTHROW(fo::load(std::span(four), ck, o));
  fo::fan_out_options bad;
  bad.tp = 4;
  bad.plan.add("q_proj", "dim=1");
  bad.plan.add("embed_tokens", "replicate");
  CHECK_THROWS_MATCHES(fo::load(std::span(four), ck, bad), lris::invalid_argument,
                       what_contains("tensor \"model.layers.0.self_attn.q_proj.bias\" (1 "
                                     "dimensions) cannot be split along dimension 1"));
}

TEST_CASE("fanout::load: a device without room for its tensors is named") {
  // A sparse file with one tensor of 4 TiB: its header is valid, no device has room for it.
  const auto path = dir() / "huge.safetensors";
  const std::uint64_t huge = std::uint64_t{1} << 42;
  std::string header = fmt::format(
      "{{\"w\":{{\"dtype\":\"U8\",\"shape\":[{}],\"data_offsets\":[0,{}]}}}}", huge, huge);
  header.resize((header.size() + 7) / 8 * 8, ' ');
  const int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
  REQUIRE(fd >= 0);
  const std::uint64_t n = header.size();
  REQUIRE(::write(fd, &n, 8) == 8);
  REQUIRE(::write(fd, header.data(), header.size()) == static_cast<ssize_t>(header.size()));
  const bool sparse = ::ftruncate(fd, static_cast<off_t>(8 + n + huge)) == 0;
  ::close(fd);
  if (!sparse) {
    WARN("no sparse file of 4 TiB here: skipped");
    return;
  }
  st::checkpoint ck(path);
  auto p = pipelines(2);
  CHECK_THROWS_MATCHES(fo::load(std::span(p), ck), lris::out_of_memory,
                       what_contains("device 0 (host:0, rank 0 of 1) has no room for its "
                                     "4398046511104 bytes of tensors"));
  std::filesystem::remove(path);
}

TEST_CASE("fanout::load from a host pool: every device its parts, no file read") {
  const auto m = model();
  const auto file = write_file(dir() / "pool.safetensors", m);
  st::checkpoint ck(file);
  const std::string name = fmt::format("fanout-test-{}", ::getpid());
  auto pool = lris::pool::host_pool::create(name, 4 << 20);
  (void)lris::pool::populate(pool, lris::default_pipeline<lris::host_backend>(), ck);
  auto p = pipelines(4);
  fo::fan_out_options o;
  o.tp = 2;
  o.plan = fo::sharding::llama();
  o.verify = true;
  const auto r = fo::load(std::span(p), pool, o);
  CHECK(r.report.storage_bytes == 0);
  for (std::size_t d = 0; d < 4; ++d) {
    const unsigned rank = d % 2;
    const auto& dev = r.devices[d];
    CHECK(bytes_of(*dev.find("model.layers.0.self_attn.o_proj.weight")) ==
          slice_of(m[3], 1, rank, 2));
    CHECK(bytes_of(*dev.find("model.embed_tokens.weight")) == slice_of(m[0], 0, rank, 2));
    CHECK(bytes_of(*dev.find("model.layers.0.input_layernorm.weight")) == m[5].data);
    CHECK(r.report.devices[d].verified == m.size());
    CHECK(r.report.devices[d].split == 5);
    CHECK(r.report.devices[d].digest == r.report.devices[rank].digest);
    CHECK_THAT(r.report.devices[d].path, Catch::Contains("host pool"));
  }
  o.load.select = "q_proj";
  CHECK_THROWS_MATCHES(fo::load(std::span(p), pool, o), lris::invalid_argument,
                       what_contains("a pool's tensors are asked for by name"));
  o.load.select.clear();
  o.load.names = {"nope"};
  CHECK_THROWS_MATCHES(fo::load(std::span(p), pool, o), lris::invalid_argument,
                       what_contains("holds no ready tensor \"nope\""));
  lris::pool::host_pool::drop(name);
}

TEST_CASE("fanout::verify: a device's byte that differs from the file is named", "[errors]") {
  const auto m = model();
  const auto file = write_file(dir() / "verify.safetensors", m);
  st::checkpoint ck(file);
  auto p = pipelines(4);
  fo::fan_out_options o;
  o.tp = 2;
  o.plan = fo::sharding::llama();
  auto r = fo::load(std::span(p), ck, o);
  fo::verify(std::span(p), ck, r);  // as loaded: every device agrees with the file
  for (const auto& d : r.report.devices) CHECK(d.verified == m.size());
  const auto digest = r.report.devices[3].digest;
  CHECK(digest == r.report.devices[1].digest);  // devices 1 and 3: rank 1 both
  CHECK(digest != r.report.devices[0].digest);
  for (auto& d : r.report.devices) d.verified = 0;

  SECTION("a byte of a slice") {
    // Device 3 (rank 1) holds half of q_proj's rows: its byte 100 is flipped.
    auto& t = r.devices[3].tensors[1];
    REQUIRE(t.slice);
    t.data[100] ^= std::byte{0xff};
    CHECK_THROWS_MATCHES(
        fo::verify(std::span(p), ck, r), lris::integrity_error,
        what_contains("tensor \"model.layers.0.self_attn.q_proj.weight\" on device 3 (host:3, "
                      "rank 1 of 2) differs from file " + file.string()) &&
            what_contains("first at byte 100 of the device's part"));
  }
  SECTION("a size that is not the part's") {
    r.devices[2].tensors[5].bytes -= 4;
    CHECK_THROWS_MATCHES(fo::verify(std::span(p), ck, r), lris::integrity_error,
                         what_contains("on device 2 (host:2, rank 0 of 2) has 508 bytes; its part "
                                       "of file"));
  }
  SECTION("a tensor the checkpoint has not") {
    for (auto& d : r.devices) d.tensors[0].name = "model.gone.weight";
    CHECK_THROWS_MATCHES(fo::verify(std::span(p), ck, r), lris::integrity_error,
                         what_contains("the devices hold tensor \"model.gone.weight\", which the "
                                       "checkpoint has not"));
  }
  SECTION("devices that hold other tensors") {
    r.devices[1].tensors.pop_back();
    CHECK_THROWS_MATCHES(fo::verify(std::span(p), ck, r), lris::invalid_argument,
                         what_contains("device 1 (host:1) holds other tensors than device 0"));
  }
}

TEST_CASE("fanout::detail::rank_sums: devices of one rank with other bytes are named",
          "[errors]") {
  const std::vector<std::string> names{"cuda:0", "cuda:1", "cuda:2", "cuda:3"};
  fo::detail::rank_sums sums(names, 2, 1);
  const std::vector<std::byte> a(64, std::byte{1}), b(64, std::byte{2});
  sums.add(0, 0, a.data(), a.size(), "w", "f.safetensors");
  sums.add(1, 0, b.data(), b.size(), "w", "f.safetensors");  // another rank: may differ
  sums.add(2, 0, a.data(), a.size(), "w", "f.safetensors");  // rank 0 again: the same
  CHECK(sums.digest(2) == sums.digest(0));
  CHECK_THROWS_MATCHES(sums.add(3, 0, a.data(), a.size(), "w", "f.safetensors"),
                       lris::integrity_error,
                       what_contains("tensor \"w\": device 3 (cuda:3) has checksum") &&
                           what_contains("device 1 (cuda:1) of the same rank"));
  CHECK(fo::detail::first_difference(a.data(), b.data(), 64) == 0);
  CHECK(fo::detail::first_difference(a.data(), a.data(), 64) == 64);
}
