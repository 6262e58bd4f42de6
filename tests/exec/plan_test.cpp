// exec::plan: plans built by the pipeline's plan makers and by hand, inspected without
// running, rejected with a message that names the chunk and step, and run by the executor on
// the host backend (whose device memory is host memory: the same code the GPU backends run).
#include <catch2/catch.hpp>

#include "support/what_contains.hpp"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <vector>

#include <lris/exec/detail/packing.hpp>
#include <lris/lris.hpp>

using lris::host_backend;
using lris::exec::place;
using lris::exec::place_kind;
using lris::test::what_contains;

namespace {

std::vector<std::byte> pattern(std::size_t n, unsigned seed) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>((i * 131 + seed) >> 3);
  return v;
}

}  // namespace

TEST_CASE("plan makers: each shape as chunks and steps, inspected without running", "[exec]") {
  std::vector<std::byte> a(10 << 20), b(10 << 20);
  const lris::transfer_sizes d{.chunk_bytes = 1 << 20, .workers = 4, .streams = 2, .ring_depth = 3};
  // A request as a pipeline makes it: the ends, the sizes, what the pipeline can do.
  auto ask = [&](place dst, place src, std::size_t bytes) {
    return lris::transfer_request{
        .kind = dst.kind == place_kind::device ? lris::copy_kind::host_to_device
                                               : lris::copy_kind::host_to_host,
        .bytes = bytes, .needs_staging = dst.kind == place_kind::device,
        .dst = dst, .src = src, .max_slot_bytes = 64 << 20, .threads = 4,
        .one_operation_batches = true};
  };

  SECTION("staged: source -> slot -> destination per chunk, every slot the same size") {
    const auto p =
        lris::plans::staged(ask(place::on_device(b.data(), 0), place::host(a.data()), a.size()), d);
    lris::exec::validate(p);
    CHECK(p.shape == lris::transfer_path::staged);
    CHECK(p.slot_bytes == (1 << 20));
    REQUIRE(p.chunks() == 10);
    CHECK(p.bytes == a.size());
    for (std::size_t c = 0; c < p.chunks(); ++c) {
      const auto steps = p.chunk(c);
      REQUIRE(steps.size() == 2);
      CHECK(steps[0].from.ptr == a.data() + c * (1 << 20));
      CHECK(steps[0].to.kind == place_kind::slot);
      CHECK(steps[1].from.kind == place_kind::slot);
      CHECK(steps[1].to.kind == place_kind::device);
      CHECK(steps[1].kind() == lris::copy_kind::host_to_device);
    }
    CHECK(p.direction() == lris::copy_kind::host_to_device);
    CHECK(lris::exec::describe(p).find("chunk 9: host") != std::string::npos);
  }
  SECTION("host split: one chunk per worker's share; a small copy runs on the calling thread") {
    const auto p = lris::plans::split(ask(place::host(b.data()), place::host(a.data()), a.size()), d);
    CHECK(p.shape == lris::transfer_path::parallel);
    CHECK(p.chunks() == 10);  // 1 MiB chunks: the plan's chunk size caps the share
    CHECK_FALSE(p.uses_device());
    const auto small = lris::plans::split(ask(place::host(b.data()), place::host(a.data()), 1000), d);
    CHECK(small.shape == lris::transfer_path::direct);
    CHECK(small.here);
    CHECK(small.chunks() == 1);
  }
  SECTION("packed: many buffers share a slot, 24 bytes a piece") {
    std::vector<lris::copy_item> items;
    for (std::size_t i = 0; i < 100; ++i) items.push_back({a.data() + i * 5000, b.data() + i * 6000, 4000});
    items.push_back({a.data(), b.data() + (3 << 20), (1 << 20) + 4096});  // cut into two pieces
    auto r = ask(place::on_device(nullptr, 0), place::host(nullptr), 400000 + (1 << 20) + 4096);
    r.items = items.size();
    r.pairs = items;
    const auto p = lris::plans::packed(r, d);
    lris::exec::validate(p);
    CHECK(p.shape == lris::transfer_path::packed);
    CHECK(p.steps.empty());
    CHECK(p.copies.packed());
    CHECK(p.slot_bytes == (512 << 10));  // two per worker, no smaller than 512 KiB
    CHECK(p.copies.from.kind == place_kind::host);
    CHECK(p.copies.to.kind == place_kind::device);
    // The 100 buffers, then the large one in pieces of a slot's worth: two, and the rest.
    const std::size_t piece = lris::detail::slot_layout::max_piece(512 << 10);
    REQUIRE(p.chunks() == 4);
    CHECK(p.copies.chunk(0).size() == 100);
    CHECK(p.copies.chunk(3).size() == 1);
    CHECK(p.copies.chunk(3)[0].dst == b.data() + (3 << 20) + 2 * piece);
    CHECK(p.copies.chunk(3)[0].bytes == (1 << 20) + 4096 - 2 * piece);
    CHECK(p.bytes == r.bytes);
    CHECK(p.direction() == lris::copy_kind::host_to_device);
    CHECK(lris::exec::describe(p).find("chunk 3 (packed in the slot, 1 copies): host") !=
          std::string::npos);
  }
  SECTION("batched: pinned buffers to a device as one operation, 24 bytes a copy") {
    std::vector<lris::copy_item> items{{a.data(), b.data(), 1000},
                                       {a.data() + 4096, b.data() + 4096, 0},
                                       {a.data() + 8192, b.data() + 8192, (2 << 20) + 5}};
    auto r = ask(place::on_device(nullptr, 0), place::pinned(nullptr), 1000 + (2 << 20) + 5);
    r.needs_staging = false;
    r.items = items.size();
    r.pairs = items;
    const auto p = lris::plans::batched(r, d);
    lris::exec::validate(p, 0);
    CHECK(p.shape == lris::transfer_path::batched);
    CHECK(p.steps.empty());
    CHECK(p.chunks() == 1);
    CHECK(p.uses_device());
    CHECK(p.direction() == lris::copy_kind::host_to_device);
    CHECK(p.bytes == r.bytes);
    CHECK(p.copies.from.kind == place_kind::pinned);
    CHECK(p.copies.to.kind == place_kind::device);
    // The empty pair is dropped; the large one is cut into pieces of a MiB.
    REQUIRE(p.copies.items.size() == 4);
    CHECK(p.copies.items[1].src == a.data() + 8192);
    CHECK(p.copies.items[2].bytes == (1 << 20));
    CHECK(p.copies.items[3].bytes == 5);
    CHECK(p.copies.items[3].dst == b.data() + 8192 + (2 << 20));
    CHECK(lris::exec::describe(p).find("chunk 0 (one operation, 4 copies): pinned") !=
          std::string::npos);
  }
  SECTION("a batch without a batching backend is staged pair by pair") {
    std::vector<lris::copy_item> items{{a.data(), b.data(), 3 << 20}, {a.data() + (5 << 20), b.data() + (4 << 20), 100}};
    auto r = ask(place::on_device(nullptr, 0), place::host(nullptr), (3 << 20) + 100);
    r.items = 2;
    r.pairs = items;
    r.one_operation_batches = false;
    const auto p = lris::plans::packed(r, d);
    CHECK(p.shape == lris::transfer_path::staged);
    // Slots of 512 KiB (two per worker, but no smaller): 6 for the first pair, 1 for the second.
    CHECK(p.slot_bytes == (512 << 10));
    CHECK(p.chunks() == 7);
    CHECK(p.chunk(6)[0].from.ptr == a.data() + (5 << 20));
  }
  SECTION("a file range to a device: chunks aligned to the file's blocks, slot offsets to match") {
    const auto path = std::filesystem::temp_directory_path() / "lris_plan_test_file.bin";
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(a.data()), 1 << 20);
    const lris::io::file f(path);
    const lris::exec::file_io_choice io{.mode = lris::io::direct_mode::never, .chunk_bytes = 256 << 10,
                                        .workers = 2};
    const auto p = lris::plans::file_device(d, f, 1000, place::on_device(b.data(), 0), 600000,
                                            true, io, {}, 64 << 20);
    lris::exec::validate(p);
    REQUIRE(p.chunks() == 3);  // [0, 256K) from 1000, [256K, 512K), [512K, 601000)
    CHECK(p.chunk(0)[0].from.offset == 1000);
    CHECK(p.chunk(0)[0].to.offset == 1000);  // the slot agrees with the file modulo the block
    CHECK(p.chunk(1)[0].from.offset == (256 << 10));
    CHECK(p.chunk(1)[0].to.offset == 0);
    CHECK(p.chunk(2)[1].to.ptr == b.data() + (512 << 10) - 1000);
    CHECK(p.ring_depth == 3);
    std::filesystem::remove(path);
  }
}

TEST_CASE("exec::validate names the chunk, the step and the fault", "[exec]") {
  std::vector<std::byte> a(4096), b(4096);
  lris::exec::plan p;
  SECTION("a step past the slot") {
    p.slot_bytes = 1024;
    p.add({place::host(a.data()), place::in_slot(512), 1000});
    p.cut();
    REQUIRE_THROWS_MATCHES(lris::exec::validate(p), lris::invalid_argument,
                           what_contains("chunk 0, step 0 (host"));
    REQUIRE_THROWS_MATCHES(lris::exec::validate(p), lris::invalid_argument,
                           what_contains("passes the end of the slot (1024 bytes)"));
  }
  SECTION("a slot in a plan without slots") {
    p.add({place::host(a.data()), place::in_slot(0), 10});
    p.cut();
    REQUIRE_THROWS_MATCHES(lris::exec::validate(p), lris::invalid_argument,
                           what_contains("the plan has none"));
  }
  SECTION("steps after the last cut") {
    p.add({place::host(a.data()), place::host(b.data()), 10});
    REQUIRE_THROWS_MATCHES(lris::exec::validate(p), lris::invalid_argument,
                           what_contains("belong to no chunk"));
  }
  SECTION("a file that is not in the plan") {
    p.add({place::in_file(2, 0), place::host(b.data()), 10});
    p.cut();
    REQUIRE_THROWS_MATCHES(lris::exec::validate(p), lris::invalid_argument,
                           what_contains("names file 2, but the plan has 0"));
  }
  SECTION("file io straight to device memory") {
    const auto path = std::filesystem::temp_directory_path() / "lris_plan_test_small.bin";
    std::ofstream(path, std::ios::binary).write("0123456789", 10);
    const lris::io::file f(path);
    p.files.push_back(&f);
    p.add({place::in_file(0, 0), place::on_device(b.data(), 0), 10});
    p.cut();
    REQUIRE_THROWS_MATCHES(lris::exec::validate(p), lris::invalid_argument,
                           what_contains("not device memory"));
    std::filesystem::remove(path);
  }
  SECTION("a partial element converted, a hash of device bytes, a null address, no bytes") {
    lris::exec::step s{place::host(a.data()), place::host(b.data()), 3};
    s.convert = true;
    s.from_type = lris::dtype::F32;
    s.to_type = lris::dtype::BF16;
    p.add(s);
    p.cut();
    REQUIRE_THROWS_MATCHES(lris::exec::validate(p), lris::invalid_argument,
                           what_contains("converts a partial element"));
    std::uint64_t h[1];
    lris::exec::plan q;
    q.add({place::on_device(a.data(), 0), place::host(b.data()), 8, false, {}, {}, h});
    q.cut();
    REQUIRE_THROWS_MATCHES(lris::exec::validate(q), lris::invalid_argument,
                           what_contains("hashes only bytes the CPU can read"));
    lris::exec::plan r;
    r.add({place::host(nullptr), place::host(b.data()), 8});
    r.cut();
    REQUIRE_THROWS_MATCHES(lris::exec::validate(r), lris::invalid_argument,
                           what_contains("null address"));
    lris::exec::plan z;
    z.add({place::host(a.data()), place::host(b.data()), 0});
    z.cut();
    REQUIRE_THROWS_MATCHES(lris::exec::validate(z), lris::invalid_argument,
                           what_contains("moves no bytes"));
  }
  SECTION("a batch as one operation: pageable memory, a copy of nothing, steps beside it, another device") {
    p.copies.from = place::host(nullptr);
    p.copies.to = place::on_device(nullptr, 0);
    p.add_copy({a.data(), b.data(), 16});
    REQUIRE_THROWS_MATCHES(lris::exec::validate(p), lris::invalid_argument,
                           what_contains("between pinned and device memory only"));
    p.copies.from = place::pinned(nullptr);
    lris::exec::validate(p, 0);
    p.add_copy({a.data() + 16, b.data() + 16, 0});
    REQUIRE_THROWS_MATCHES(lris::exec::validate(p), lris::invalid_argument,
                           what_contains("copy 1 ("));
    REQUIRE_THROWS_MATCHES(lris::exec::validate(p), lris::invalid_argument,
                           what_contains("moves no bytes"));
    p.copies.items.pop_back();
    p.add_copy({nullptr, b.data() + 16, 8});
    REQUIRE_THROWS_MATCHES(lris::exec::validate(p), lris::invalid_argument,
                           what_contains("null address"));
    p.copies.items.pop_back();
    p.add({place::host(a.data()), place::host(b.data()), 10});
    p.cut();
    REQUIRE_THROWS_MATCHES(lris::exec::validate(p), lris::invalid_argument,
                           what_contains("also has 1 steps"));
    p.steps.clear();
    p.ends.clear();
    p.copies.to = place::on_device(nullptr, 2);
    REQUIRE_THROWS_MATCHES(lris::exec::validate(p, 0), lris::unsupported,
                           what_contains("goes to or from device 2, but it runs on device 0"));
    p.copies.to = place::on_device(nullptr, 0);
    p.slot_bytes = 4096;
    REQUIRE_THROWS_MATCHES(lris::exec::validate(p), lris::invalid_argument,
                           what_contains("as one operation it uses no slot"));
  }
  SECTION("a packed batch: chunks that overflow the slot, are empty or miss copies; wrong ends") {
    p.copies.from = place::host(nullptr);
    p.copies.to = place::on_device(nullptr, 0);
    p.slot_bytes = 1024;
    for (int i = 0; i < 4; ++i) p.add_copy({a.data() + 300 * i, b.data() + 300 * i, 300});
    p.copies.ends = {2, 4};
    lris::exec::validate(p, 0);
    p.copies.ends = {3, 4};  // 3 pieces at 16-byte boundaries (908 bytes), 3 items of 24 fit
    lris::exec::validate(p, 0);
    p.copies.ends = {4};  // 4 do not
    REQUIRE_THROWS_MATCHES(lris::exec::validate(p), lris::invalid_argument,
                           what_contains("chunk 0 (copies 0 to 3) does not fit a slot of 1024 "
                                         "bytes with its item array, at copy 3 (300 bytes)"));
    REQUIRE_THROWS_MATCHES(lris::exec::validate(p), lris::invalid_argument,
                           what_contains("(host -> device, 4 copies, packed)"));
    p.copies.ends = {2, 2, 4};
    REQUIRE_THROWS_MATCHES(lris::exec::validate(p), lris::invalid_argument,
                           what_contains("chunk 1 is empty"));
    p.copies.ends = {2, 3};
    REQUIRE_THROWS_MATCHES(lris::exec::validate(p), lris::invalid_argument,
                           what_contains("copies 3 onwards belong to no chunk"));
    p.copies.ends = {2, 4};
    p.slot_bytes = 0;
    REQUIRE_THROWS_MATCHES(lris::exec::validate(p), lris::invalid_argument,
                           what_contains("the plan has none"));
    p.slot_bytes = 1024;
    p.copies.to = place::pinned(nullptr);
    REQUIRE_THROWS_MATCHES(lris::exec::validate(p), lris::invalid_argument,
                           what_contains("between host memory and a device only"));
  }
  SECTION("the pipeline refuses a bad plan before anything runs") {
    p.add({place::host(a.data()), place::in_slot(0), 10});
    p.cut();
    lris::pipeline<lris::auto_select, host_backend> pipe;
    REQUIRE_THROWS_AS(pipe.run(std::move(p)), lris::invalid_argument);
  }
}

TEST_CASE("the executor runs a hand-made plan: file -> slot -> converted, hashed sinks", "[exec]") {
  // 3 MiB of F32 in a file; chunks of 1 MiB through the slot, each converted to BF16 into
  // "device" memory and copied as it is into host memory, every block hashed.
  constexpr std::size_t bytes = 3 << 20, chunk = 1 << 20;
  const auto data = pattern(bytes, 7);
  const auto path = std::filesystem::temp_directory_path() / "lris_plan_test_f32.bin";
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(data.data()), bytes);
  const lris::io::file f(path);
  lris::pipeline<lris::auto_select, host_backend> pipe;
  host_backend be;
  auto* dev = static_cast<std::byte*>(be.allocate_device(bytes / 2));
  std::vector<std::byte> host(bytes);
  std::vector<std::uint64_t> hashes(bytes / lris::default_checksum_block);

  lris::exec::plan p;
  p.shape = lris::transfer_path::staged;
  p.files.push_back(&f);
  p.slot_bytes = chunk;
  p.workers = 2;
  p.ring_depth = 2;
  for (std::size_t off = 0; off < bytes; off += chunk) {
    p.add({place::in_file(0, off), place::in_slot(0), chunk});
    lris::exec::step to_device{place::in_slot(0), place::on_device(dev + off / 2, 0), chunk};
    to_device.convert = true;
    to_device.from_type = lris::dtype::F32;
    to_device.to_type = lris::dtype::BF16;
    to_device.check = hashes.data() + off / lris::default_checksum_block;
    p.add(to_device);
    p.add({place::in_slot(0), place::host(host.data() + off), chunk});
    p.cut();
  }
  CHECK(p.bytes == 2 * bytes);  // both sinks deliver
  const auto st = pipe.run(std::move(p)).wait();
  CHECK(st.bytes == 2 * bytes);
  CHECK(st.chunks == 3);
  CHECK(st.ring_slots == 2);
  CHECK(st.io_buffered_bytes + st.io_direct_bytes == bytes);
  CHECK(std::memcmp(host.data(), data.data(), bytes) == 0);
  std::vector<std::byte> want(bytes / 2);
  lris::convert(data.data(), lris::dtype::F32, want.data(), lris::dtype::BF16, bytes / 4);
  CHECK(std::memcmp(dev, want.data(), want.size()) == 0);
  for (std::size_t b = 0; b < hashes.size(); ++b) {
    CHECK(hashes[b] == lris::block_hash(data.data() + b * lris::default_checksum_block,
                                        lris::default_checksum_block));
  }
  be.deallocate_device(dev, bytes / 2);
  std::filesystem::remove(path);
}

TEST_CASE("fan-out is a plan with several sinks; one executor drives one device", "[exec]") {
  std::vector<std::byte> src = pattern(1 << 20, 3), d0(1 << 20), d1(1 << 20);
  lris::exec::plan p;
  p.slot_bytes = 1 << 20;
  p.add({place::host(src.data()), place::in_slot(0), src.size()});
  p.add({place::in_slot(0), place::on_device(d0.data(), 0), src.size()});
  p.add({place::in_slot(0), place::on_device(d1.data(), 1), src.size()});
  p.cut();
  lris::exec::validate(p);  // a valid plan: every byte read once, delivered twice
  CHECK(p.bytes == 2 * src.size());
  lris::pipeline<lris::auto_select, host_backend> pipe;
  REQUIRE_THROWS_MATCHES(pipe.run(std::move(p)), lris::unsupported,
                         what_contains("goes to or from device 1, but it runs on device 0"));
}

TEST_CASE("a plan with peer sources reads other devices' memory, and writes only its own",
          "[exec]") {
  std::vector<std::byte> on1 = pattern(1 << 16, 5), on0(1 << 16), small(64);
  lris::exec::plan p;
  p.add({place::on_device(on1.data(), 1), place::on_device(on0.data(), 0), on1.size()});
  p.cut();
  REQUIRE_THROWS_MATCHES(lris::exec::validate(p, 0), lris::unsupported,
                         what_contains("goes to or from device 1, but it runs on device 0"));
  p.peer_sources = true;
  lris::pipeline<lris::auto_select, host_backend> pipe;
  (void)pipe.run(p).wait();
  CHECK(on0 == on1);
  // A write to another device is still refused, and so is a read of it into host memory.
  lris::exec::plan w = p;
  w.steps[0] = {place::on_device(on0.data(), 0), place::on_device(on1.data(), 1), on1.size()};
  REQUIRE_THROWS_AS(lris::exec::validate(w, 0), lris::unsupported);
  w.steps[0] = {place::on_device(on1.data(), 1), place::pinned(on0.data()), on1.size()};
  REQUIRE_THROWS_AS(lris::exec::validate(w, 0), lris::unsupported);
  // A batch of one operation, from a peer into this device.
  lris::exec::plan b;
  b.peer_sources = true;
  b.copies.from = place::on_device(nullptr, 1);
  b.copies.to = place::on_device(nullptr, 0);
  b.add_copy({on1.data() + 100, small.data(), 64});
  (void)pipe.run(std::move(b)).wait();
  CHECK(std::memcmp(small.data(), on1.data() + 100, 64) == 0);
}

TEST_CASE("the executor runs a hand-made packed batch, both ways", "[exec]") {
  // 500 pageable buffers of 1-3000 bytes to "device" memory through slots of 16 KiB, and
  // back into other pageable buffers; the host backend batches (a loop) and has device scratch.
  constexpr std::size_t n = 500, stride = 4096;
  const auto data = pattern(n * stride, 5);
  std::vector<std::byte> back(n * stride);
  host_backend be;
  auto* dev = static_cast<std::byte*>(be.allocate_device(n * stride));
  lris::exec::plan in, out;
  for (auto* p : {&in, &out}) {
    p->shape = lris::transfer_path::packed;
    p->slot_bytes = 16 << 10;
    p->workers = 3;
    p->ring_depth = 3;
    p->streams = 2;
  }
  in.copies.from = place::host(nullptr);
  in.copies.to = place::on_device(nullptr, 0);
  out.copies.from = place::on_device(nullptr, 0);
  out.copies.to = place::host(nullptr);
  std::size_t total = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t bytes = 1 + (i * 7919) % 3000;
    in.add_copy({data.data() + i * stride, dev + i * stride, bytes});
    out.add_copy({dev + i * stride, back.data() + i * stride, bytes});
    total += bytes;
  }
  lris::detail::group_into_slots(in.copies.items, in.slot_bytes, in.copies.ends);
  out.copies.ends = in.copies.ends;
  REQUIRE(in.chunks() >= 40);
  lris::pipeline<lris::auto_select, host_backend> pipe;
  const auto st = pipe.run(std::move(in)).wait();
  CHECK(st.bytes == total);
  CHECK(st.path == lris::transfer_path::packed);
  CHECK(st.ring_slots == 3);
  const auto st2 = pipe.run(std::move(out)).wait();
  CHECK(st2.bytes == total);
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t bytes = 1 + (i * 7919) % 3000;
    CHECK(std::memcmp(dev + i * stride, data.data() + i * stride, bytes) == 0);
    CHECK(std::memcmp(back.data() + i * stride, data.data() + i * stride, bytes) == 0);
  }
  be.deallocate_device(dev, n * stride);
}

TEST_CASE("the executor runs a hand-made batched operation", "[exec]") {
  // 300 copies of 1000 bytes, pinned -> "device" (the host backend's device memory is host
  // memory, its batched copy a loop), as one operation.
  constexpr std::size_t n = 300, each = 1000;
  lris::buffer<lris::pinned_allocator<host_backend>> src(n * each);
  const auto data = pattern(n * each, 11);
  std::memcpy(src.data(), data.data(), data.size());
  host_backend be;
  auto* dev = static_cast<std::byte*>(be.allocate_device(n * 2 * each));
  lris::exec::plan p;
  p.shape = lris::transfer_path::batched;
  p.copies.from = place::pinned(nullptr);
  p.copies.to = place::on_device(nullptr, 0);
  for (std::size_t i = 0; i < n; ++i) p.add_copy({src.data() + i * each, dev + 2 * i * each, each});
  lris::pipeline<lris::auto_select, host_backend> pipe;
  const auto st = pipe.run(std::move(p)).wait();
  CHECK(st.bytes == n * each);
  CHECK(st.path == lris::transfer_path::batched);
  for (std::size_t i = 0; i < n; ++i) {
    CHECK(std::memcmp(dev + 2 * i * each, data.data() + i * each, each) == 0);
  }
  be.deallocate_device(dev, n * 2 * each);
}
