// fanout::plan_fan_out: every file byte read once, each device's parts delivered whole (checked
// by running the plan on memory), chunks within their bound, rows of split tensors not cut, and
// the errors.
#include <catch2/catch.hpp>

#include "support/what_contains.hpp"

#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include <lris/error.hpp>
#include <lris/fanout/fan_out_plan.hpp>

using lris::test::what_contains;
namespace fo = lris::fanout;

namespace {

// A "file" of bytes i % 251 and one destination per device; runs the plan the way the loader
// does (each chunk into a buffer, then each device's copies), and checks every part.
struct bench {
  std::vector<std::byte> file;
  std::vector<std::vector<std::byte>> memory;  // per device

  explicit bench(std::size_t bytes, std::size_t devices) : file(bytes), memory(devices) {
    for (std::size_t i = 0; i < bytes; ++i) file[i] = static_cast<std::byte>(i % 251);
  }
  // Gives each part its memory in memory[d], one after another.
  void place(std::vector<fo::fan_tensor>& tensors) {
    std::vector<std::size_t> used(memory.size());
    for (auto& t : tensors) {
      for (std::size_t d = 0; d < t.parts.size(); ++d) used[d] += t.parts[d].bytes();
    }
    for (std::size_t d = 0; d < memory.size(); ++d) memory[d].assign(used[d] + 1, std::byte{0xee});
    std::fill(used.begin(), used.end(), 0);
    for (auto& t : tensors) {
      for (std::size_t d = 0; d < t.parts.size(); ++d) {
        t.parts[d].dst = memory[d].data() + used[d];
        used[d] += t.parts[d].bytes();
      }
    }
  }
  std::uint64_t run(const fo::fan_plan& plan, std::size_t chunk_bytes) {
    std::vector<std::byte> buffer(plan.buffer_bytes);
    std::uint64_t moved = 0;
    for (std::size_t c = 0; c < plan.chunks.size(); ++c) {
      const auto& ch = plan.chunks[c];
      REQUIRE(ch.bytes <= chunk_bytes);
      REQUIRE(ch.at + ch.bytes <= plan.buffer_bytes);
      std::memcpy(buffer.data() + ch.at, file.data() + ch.file_offset, ch.bytes);
      for (std::size_t d = 0; d < plan.devices; ++d) {
        for (const auto& v : plan.deliveries(c, d)) {
          REQUIRE(v.from + v.bytes <= ch.at + ch.bytes);
          std::memcpy(v.to, buffer.data() + v.from, v.bytes);
          moved += v.bytes;
        }
      }
    }
    return moved;
  }
  void check(const std::vector<fo::fan_tensor>& tensors) {
    for (const auto& t : tensors) {
      for (std::size_t d = 0; d < t.parts.size(); ++d) {
        const auto& p = t.parts[d];
        for (std::uint64_t r = 0; r < p.rows; ++r) {
          const std::byte* want = file.data() + t.file_offset + p.offset + r * p.row_stride;
          REQUIRE(std::memcmp(p.dst + r * p.row_bytes, want, p.row_bytes) == 0);
        }
      }
    }
  }
};

// Part `rank` of `ranks` of a [rows, cols] tensor of `element` bytes split along `dim`.
fo::part split(std::uint64_t rows, std::uint64_t cols, std::uint64_t element, unsigned dim,
               unsigned rank, unsigned ranks) {
  const std::uint64_t row = cols * element;
  if (dim == 0) {
    const std::uint64_t per = rows / ranks * row;
    return {rank * per, 1, per, per, nullptr};
  }
  const std::uint64_t piece = row / ranks;
  return {rank * piece, rows, piece, row, nullptr};
}

}  // namespace

TEST_CASE("plan_fan_out: replicated tensors, each byte read once, every device gets all") {
  bench b(1 << 20, 3);
  std::vector<fo::fan_tensor> t;
  for (std::uint64_t at : {0ull, 1000ull, 300000ull}) {
    const std::uint64_t n = at == 300000 ? 600000 : (at == 0 ? 1000 : 299000);
    t.push_back({0, at, n, {{0, 1, n, n, nullptr}, {0, 1, n, n, nullptr}, {0, 1, n, n, nullptr}}});
  }
  b.place(t);
  const std::size_t chunk = 64 << 10;
  auto plan = fo::plan_fan_out(t, 3, chunk, 4096);
  CHECK(plan.storage_bytes() == 900000);  // once
  CHECK(plan.device_bytes(1) == 900000);
  CHECK(b.run(plan, chunk) == 3 * 900000);
  b.check(plan.tensors);
  // Deliveries are merged: one per tensor piece at most.
  for (std::size_t c = 0; c < plan.chunks.size(); ++c) {
    CHECK(plan.deliveries(c, 0).size() <= plan.chunks[c].pieces.size());
  }
}

TEST_CASE("plan_fan_out: row and column slices move only their bytes, rows are not cut") {
  const unsigned ranks = GENERATE(2u, 4u);
  const std::size_t chunk = GENERATE(std::size_t{4096}, std::size_t{1} << 16, std::size_t{1} << 22);
  bench b(1 << 21, ranks);
  std::vector<fo::fan_tensor> t;
  // [256, 512] F16 colwise (rows), then [256, 512] F16 rowwise (columns), then a bias.
  const std::uint64_t n = 256 * 512 * 2;
  fo::fan_tensor col{0, 64, n, {}}, row{0, 64 + n, n, {}}, bias{0, 64 + 2 * n, 1024, {}};
  for (unsigned r = 0; r < ranks; ++r) {
    col.parts.push_back(split(256, 512, 2, 0, r, ranks));
    row.parts.push_back(split(256, 512, 2, 1, r, ranks));
    bias.parts.push_back({0, 1, 1024, 1024, nullptr});
  }
  t = {row, col, bias};  // any order: the plan follows the file
  b.place(t);
  auto plan = fo::plan_fan_out(t, ranks, chunk, 4096);
  CHECK(plan.storage_bytes() == 2 * n + 1024);
  CHECK(plan.device_bytes(0) == 2 * n / ranks + 1024);
  CHECK(b.run(plan, chunk) == 2 * n + ranks * 1024);
  b.check(plan.tensors);
  for (const auto& c : plan.chunks) {
    for (const auto& pc : c.pieces) {
      if (pc.tensor == 0 && 1024 <= chunk) {  // the rowwise tensor: whole rows of 1 KiB
        CHECK(pc.begin % 1024 == 0);
        CHECK((pc.end % 1024 == 0 || pc.end == n));
      }
    }
  }
}

TEST_CASE("plan_fan_out: rows larger than a chunk, gaps, several files, empty parts") {
  bench b(1 << 21, 2);
  std::vector<fo::fan_tensor> t;
  // [2, 65536] F32 split along dimension 1: rows of 256 KiB in chunks of 64 KiB.
  const std::uint64_t n = 2 * 65536 * 4;
  fo::fan_tensor wide{0, 0, n, {split(2, 65536, 4, 1, 0, 2), split(2, 65536, 4, 1, 1, 2)}};
  // After a gap of 100 KiB (not loaded): read as a new chunk.
  fo::fan_tensor later{0, n + 102400, 5000, {{0, 1, 5000, 5000, nullptr}, {0, 1, 0, 0, nullptr}}};
  // Another file: never in the same chunk.
  fo::fan_tensor other{1, 0, 4096, {{0, 1, 4096, 4096, nullptr}, {0, 1, 4096, 4096, nullptr}}};
  t = {wide, later, other};
  b.place(t);
  auto plan = fo::plan_fan_out(t, 2, 1 << 16, 4096);
  CHECK(plan.storage_bytes() == n + 5000 + 4096);
  for (const auto& c : plan.chunks) {
    std::uint64_t end = c.file_offset;
    for (const auto& pc : c.pieces) {
      CHECK(plan.tensors[pc.tensor].shard == c.shard);
      end = std::max(end, plan.tensors[pc.tensor].file_offset + pc.end);
    }
    CHECK(end == c.file_offset + c.bytes);
  }
  // Only run the first file: the second reads the same bytes of the bench's one "file".
  std::vector<fo::fan_tensor> first(t.begin(), t.begin() + 2);
  bench b2(1 << 21, 2);
  b2.place(first);
  auto p2 = fo::plan_fan_out(first, 2, 1 << 16, 4096);
  CHECK(b2.run(p2, 1 << 16) == n + 5000);
  b2.check(p2.tensors);
}

TEST_CASE("plan_fan_out: a small gap is read through; a tensor no device takes is not read") {
  std::vector<fo::fan_tensor> t{
      {0, 0, 1000, {{0, 1, 1000, 1000, nullptr}}},
      {0, 2000, 1000, {{0, 1, 0, 0, nullptr}}},
      {0, 1000 + 4000, 1000, {{0, 1, 1000, 1000, nullptr}}}};
  bench b(1 << 16, 1);
  b.place(t);
  auto plan = fo::plan_fan_out(t, 1, 1 << 20, 4096);
  REQUIRE(plan.chunks.size() == 1);
  CHECK(plan.storage_bytes() == 6000);  // 4000 bytes between them read through
  CHECK(plan.chunks[0].pieces.size() == 2);
  b.run(plan, 1 << 20);
  b.check(plan.tensors);
}

TEST_CASE("plan_fan_out: errors name the tensor and the device") {
  std::vector<fo::fan_tensor> t{{0, 0, 100, {{50, 1, 60, 60, nullptr}}}};
  std::vector<std::byte> m(100);
  t[0].parts[0].dst = m.data();
  CHECK_THROWS_MATCHES(fo::plan_fan_out(t, 1, 4096, 4096), lris::invalid_argument,
                       what_contains("tensor 0 (file offset 0, 100 bytes): device 0's part"));
  CHECK_THROWS_MATCHES(fo::plan_fan_out(t, 2, 4096, 4096), lris::invalid_argument,
                       what_contains("tensor 0 has 1 parts for 2 devices"));
  t[0].parts[0] = {0, 1, 10, 10, nullptr};
  CHECK_THROWS_MATCHES(fo::plan_fan_out(t, 1, 4096, 4096), lris::invalid_argument,
                       what_contains("device 0's part has no memory"));
  CHECK_THROWS_MATCHES(fo::plan_fan_out({}, 1, 0, 4096), lris::invalid_argument,
                       what_contains("neither may be 0"));
}
