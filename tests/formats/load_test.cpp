// safetensors::checkpoint and load: every tensor byte-identical into host and (host backend)
// device memory, selection, slices, conversion, checksums, SHA-256, progress and cancel, sharded
// directories and their errors.
#include <catch2/catch.hpp>

#include "support/safetensors_file.hpp"
#include "support/what_contains.hpp"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <fmt/format.h>

#include <lris/exec/cpu_budget.hpp>
#include <lris/formats/load.hpp>
#include <lris/formats/verify.hpp>
#include <lris/lris.hpp>

using lris::dtype;
using lris::test::what_contains;
using lris::test::raw_tensor;
using lris::test::random_tensor;
using lris::test::write_file;
namespace st = lris::safetensors;

namespace {

std::filesystem::path dir() {
  auto d = std::filesystem::current_path() / "load_test_files";
  std::filesystem::create_directories(d);
  return d;
}

std::vector<raw_tensor> model() {
  return {random_tensor("a.weight", dtype::F32, {64, 96}, 1),
          random_tensor("b.norm", dtype::BF16, {33}, 2),
          random_tensor("c.empty", dtype::U8, {0, 5}, 3),
          random_tensor("d.scale", dtype::F16, {8, 4096}, 4),
          random_tensor("e.big", dtype::F32, {1024, 1100}, 5),
          random_tensor("f.scalar", dtype::I64, {}, 6),
          random_tensor("g.fp8", dtype::F8_E4M3, {16, 64}, 7)};
}

std::vector<std::byte> bytes_of(const st::loaded_tensor& t) {
  return {t.data, t.data + t.bytes};
}

using host_pipeline = lris::pipeline<lris::auto_select, lris::host_backend>;

// Drops `f` from the page cache, so that the next load of it is cold; false (with a warning)
// where the page cache keeps it all the same (tmpfs).
bool evicted(const lris::io::file& f) {
  REQUIRE(::fdatasync(f.fd()) == 0);
  REQUIRE(::posix_fadvise(f.fd(), 0, 0, POSIX_FADV_DONTNEED) == 0);
  if (lris::io::io_engine::resident_fraction(f, 0, f.size()) > 0.5) {
    WARN("the page cache keeps this file (tmpfs?): no cold read to test");
    return false;
  }
  return true;
}

st::load_options selecting(std::vector<std::string> names, std::string regex = {}) {
  st::load_options o;
  o.names = std::move(names);
  o.select = std::move(regex);
  return o;
}

}  // namespace

TEST_CASE("load: every tensor byte-identical, into device and host memory", "[formats][load]") {
  const auto tensors = model();
  const auto path = write_file(dir() / "model.safetensors", tensors);
  const st::checkpoint ck(path);
  REQUIRE(ck.tensors().size() == tensors.size());
  host_pipeline p;
  for (const auto where : {st::load_target_memory::device, st::load_target_memory::host}) {
    for (const auto direct : {lris::io::direct_mode::never, lris::io::direct_mode::always}) {
      st::load_options o;
      o.transfer.chunk_bytes = 1 << 20;  // several chunks for the big tensor
      o.transfer.io.direct = direct;
      const auto loaded = st::load(p, ck, o, where);
      REQUIRE(loaded.tensors.size() == tensors.size());
      for (const auto& t : tensors) {
        CAPTURE(t.name, static_cast<int>(where), static_cast<int>(direct));
        const auto* l = loaded.find(t.name);
        REQUIRE(l != nullptr);
        CHECK(l->type == t.type);
        CHECK(l->shape == t.shape);
        CHECK(bytes_of(*l) == t.data);
        const auto address = reinterpret_cast<std::uintptr_t>(l->data);
        if (where == st::load_target_memory::device) {
          CHECK(address % 256 == 0);
        } else {
          // Laid out as in the file, so that reads go straight in, where the file has the
          // tensor at a multiple of its element size; this file has two that it has not.
          const std::size_t element = std::max<std::size_t>(1, lris::bits_of(t.type) / 8);
          const std::uint64_t in_file = ck.file_offset(*ck.find(t.name));
          CHECK(address % element == 0);
          CHECK(address % (in_file % element == 0 ? 4096 : 256) ==
                (in_file % element == 0 ? in_file % 4096 : 0));
        }
        CHECK(l->owns_memory());
        CHECK(l->location.device == (where == st::load_target_memory::device));
      }
      CHECK(loaded.report.file_bytes == ck.data_bytes());
      CHECK(loaded.report.chunks > 1);
    }
  }
}

TEST_CASE("load: host memory stays within the pipeline's staging bound", "[formats][load]") {
  const auto tensors = model();
  const auto path = write_file(dir() / "bounded.safetensors", tensors);
  const st::checkpoint ck(path);
  for (const std::size_t bound : {std::size_t{3} << 20, std::size_t{64} << 20}) {
    CAPTURE(bound);
    lris::pipeline_config config;
    config.max_staging_bytes = bound;
    host_pipeline p(lris::auto_select{}, lris::host_backend{}, {}, config);
    for (const auto direct : {lris::io::direct_mode::never, lris::io::direct_mode::always}) {
      st::load_options o;
      o.transfer.io.direct = direct;
      const auto loaded = st::load(p, ck, o);
      CHECK(loaded.report.staging_bytes > 0);
      CHECK(loaded.report.staging_bytes <= bound);
      for (const auto& t : tensors) CHECK(bytes_of(*loaded.find(t.name)) == t.data);
    }
  }
}

TEST_CASE("load: the memory of a load lives as long as any tensor leases it", "[formats][load]") {
  const auto path = write_file(dir() / "lease.safetensors", model());
  host_pipeline p;
  st::loaded_tensor kept;
  {
    auto loaded = st::load(p, st::checkpoint(path));
    kept = loaded.tensors.front();
    CHECK(kept.lease.use_count() == static_cast<long>(loaded.tensors.size()) + 1);
  }
  CHECK(kept.lease.use_count() == 1);
  CHECK(bytes_of(kept) == model().front().data);
}

TEST_CASE("load: selection by name and by regular expression", "[formats][load]") {
  const auto path = write_file(dir() / "select.safetensors", model());
  const st::checkpoint ck(path);
  host_pipeline p;
  auto loaded = st::load(p, ck, selecting({"b.norm"}, "^(d|e)\\."));
  REQUIRE(loaded.tensors.size() == 3);
  CHECK(loaded.tensors[0].name == "b.norm");
  CHECK(loaded.tensors[1].name == "d.scale");
  CHECK(loaded.tensors[2].name == "e.big");
  CHECK(loaded.report.file_bytes == ck.find("b.norm")->info->bytes() +
                                        ck.find("d.scale")->info->bytes() +
                                        ck.find("e.big")->info->bytes());
  CHECK_THROWS_MATCHES(st::load(p, ck, selecting({"nope"})), lris::invalid_argument,
                       what_contains("no tensor \"nope\""));
  CHECK_THROWS_MATCHES(st::load(p, ck, selecting({}, "((")), lris::invalid_argument,
                       what_contains("bad regular expression \"((\""));
  // Past what std::regex's recursion takes on a thread's stack: refused, not a crash.
  const std::string deep = std::string(20000, '(') + std::string(20000, ')');
  CHECK_THROWS_MATCHES(st::load(p, ck, selecting({}, deep)), lris::invalid_argument,
                       what_contains("nests 20000 groups deep (at most 256)"));
  CHECK(st::load(p, ck, selecting({}, "[(((]\\(b\\.norm")).tensors.empty());  // no group
  const std::string long_name = "x." + std::string(50000, 'n');
  const auto odd = write_file(dir() / "long-name.safetensors",
                              {random_tensor(long_name, dtype::U8, {4}, 3),
                               random_tensor("w", dtype::U8, {4}, 4)});
  const st::checkpoint lk(odd);
  CHECK_THROWS_MATCHES(st::load(p, lk, selecting({}, ".*")), lris::invalid_argument,
                       what_contains("has a name of 50002 bytes; a regular expression is matched "
                                     "against names of at most 1024"));
  CHECK(st::load(p, lk, selecting({long_name})).tensors.size() == 1);  // by its name: fine
}

TEST_CASE("load: tensor-parallel slices read only their bytes", "[formats][load]") {
  const auto tensors = model();
  const auto path = write_file(dir() / "slices.safetensors", tensors);
  const st::checkpoint ck(path);
  host_pipeline p;
  const auto& a = tensors[0];  // F32 [64, 96]
  for (unsigned dim : {0u, 1u}) {
    for (unsigned rank = 0; rank < 4; ++rank) {
      CAPTURE(dim, rank);
      st::load_options o;
      o.names = {"a.weight"};
      o.slice = [&](const st::tensor_info&) { return st::tensor_slice{dim, rank, 4}; };
      const auto loaded = st::load(p, ck, o);
      const auto& t = loaded.tensors.at(0);
      std::vector<std::byte> want;
      for (std::uint64_t r = 0; r < 64; ++r) {
        for (std::uint64_t c = 0; c < 96; ++c) {
          if ((dim == 0 ? r : c) / (dim == 0 ? 16 : 24) != rank) continue;
          const auto* e = a.data.data() + (r * 96 + c) * 4;
          want.insert(want.end(), e, e + 4);
        }
      }
      CHECK(t.shape == (dim == 0 ? std::vector<std::uint64_t>{16, 96} : std::vector<std::uint64_t>{64, 24}));
      CHECK(bytes_of(t) == want);
      CHECK(loaded.report.file_bytes == want.size());
      REQUIRE(t.slice);
      CHECK(t.slice->dim == dim);
      CHECK(st::verify(p, ck, loaded) == 1);  // against its rows of the file's tensor
      t.data[t.bytes - 1] ^= std::byte{1};
      CHECK_THROWS_MATCHES(st::verify(p, ck, loaded), lris::integrity_error,
                           what_contains(fmt::format("first at byte {}", t.bytes - 1)));
    }
  }
  {  // rows close together are read with their gaps and gathered; rows far apart one by one
    const auto wide = write_file(dir() / "wide.safetensors",
                                 {random_tensor("near", dtype::F32, {64, 96}, 11),
                                  random_tensor("far", dtype::F32, {6, 65536}, 12)});
    const st::checkpoint wck(wide);
    for (const unsigned rank : {0u, 3u}) {
      CAPTURE(rank);
      st::load_options o;
      o.transfer.chunk_bytes = 1 << 20;
      for (const auto direct : {lris::io::direct_mode::never, lris::io::direct_mode::always}) {
        o.transfer.io.direct = direct;
        o.slice = [rank](const st::tensor_info&) { return st::tensor_slice{1, rank, 4}; };
        o.names = {"near"};  // rows of 96 bytes every 384: read as one range of 63 * 384 + 96
        auto near = st::load(p, wck, o);
        CHECK(near.report.io_direct_bytes + near.report.io_buffered_bytes == 63 * 384 + 96);
        CHECK(st::verify(p, wck, near) == 1);
        o.names = {"far"};  // an eighth: rows of 32 KiB every 256 KiB, read one by one
        o.slice = [rank](const st::tensor_info&) { return st::tensor_slice{1, rank, 8}; };
        auto far = st::load(p, wck, o);
        CHECK(far.report.io_direct_bytes + far.report.io_buffered_bytes == 6 * 32768);
        CHECK(st::verify(p, wck, far) == 1);
      }
    }
  }
  {  // a slice converted as it loads: verified after the same conversion
    st::load_options o;
    o.names = {"a.weight", "d.scale"};
    o.slice = [](const st::tensor_info&) { return st::tensor_slice{1, 1, 2}; };
    o.convert_to = dtype::BF16;
    const auto loaded = st::load(p, ck, o, st::load_target_memory::host);
    CHECK(loaded.report.converted >= 1);  // a.weight, F32
    CHECK(st::verify(p, ck, loaded) == 2);
  }
  st::load_options bad;
  bad.names = {"a.weight"};
  bad.slice = [](const st::tensor_info&) { return st::tensor_slice{1, 0, 5}; };
  CHECK_THROWS_MATCHES(st::load(p, ck, bad), lris::invalid_argument,
                       what_contains("tensor \"a.weight\": dimension 1 (96) does not divide into 5"));
  bad.slice = [](const st::tensor_info&) { return st::tensor_slice{2, 0, 2}; };
  CHECK_THROWS_MATCHES(st::load(p, ck, bad), lris::invalid_argument,
                       what_contains("has 2 dimensions"));
  bad.slice = [](const st::tensor_info&) { return st::tensor_slice{0, 2, 2}; };
  CHECK_THROWS_MATCHES(st::load(p, ck, bad), lris::invalid_argument, what_contains("rank 2 of 2"));
}

TEST_CASE("load: dtype conversion as it loads, the same as lris::convert", "[formats][load]") {
  const auto tensors = model();
  const auto path = write_file(dir() / "convert.safetensors", tensors);
  const st::checkpoint ck(path);
  host_pipeline p;
  for (const auto where : {st::load_target_memory::device, st::load_target_memory::host}) {
    st::load_options o;
    o.convert_to = dtype::F32;
    o.transfer.chunk_bytes = 1 << 20;
    const auto loaded = st::load(p, ck, o, where);
    CHECK(loaded.report.converted == 3);  // BF16, F16 and F8_E4M3
    for (const auto& t : tensors) {
      CAPTURE(t.name);
      const auto* l = loaded.find(t.name);
      REQUIRE(l != nullptr);
      if (!lris::can_convert(t.type, dtype::F32) || t.type == dtype::F32) {
        CHECK(l->type == t.type);
        CHECK(bytes_of(*l) == t.data);
        continue;
      }
      CHECK(l->type == dtype::F32);
      const std::size_t n = t.data.size() * 8 / lris::bits_of(t.type);
      std::vector<std::byte> want(n * 4);
      lris::convert(t.data.data(), t.type, want.data(), dtype::F32, n);
      CHECK(bytes_of(*l) == want);
    }
  }
  // A type no tensor converts to is refused, not taken as "load them as they are".
  for (const dtype to : {dtype::F64, dtype::I8, dtype::F8_E4M3}) {
    st::load_options o;
    o.convert_to = to;
    CHECK_THROWS_MATCHES(st::load(p, ck, o), lris::unsupported,
                         what_contains(fmt::format("tensors convert to BF16, F16 or F32 as they "
                                                   "load, not to {}", lris::to_string(to))));
  }
}

TEST_CASE("load: checksums per tensor and SHA-256 per file", "[formats][load][errors]") {
  const auto tensors = model();
  const auto path = write_file(dir() / "verify.safetensors", tensors);
  const st::checkpoint ck(path);
  host_pipeline p;
  st::load_options o;
  o.transfer.chunk_bytes = 1 << 20;
  for (const auto& t : tensors) o.expected_checksums[t.name] = lris::block_checksum(t.data.data(), t.data.size());
  for (const auto where : {st::load_target_memory::device, st::load_target_memory::host}) {
    CAPTURE(static_cast<int>(where));
    auto loaded = st::load(p, ck, o, where);
    CHECK(loaded.report.verified == tensors.size());
    for (const auto& t : tensors) CHECK(bytes_of(*loaded.find(t.name)) == t.data);
    o.expected_checksums["e.big"] ^= 1;
    CHECK_THROWS_MATCHES(st::load(p, ck, o, where), lris::integrity_error,
                         what_contains("tensor \"e.big\""));
    o.expected_checksums["e.big"] ^= 1;
  }
  o.expected_checksums.clear();
  o.expected_checksums["zzz"] = 1;
  CHECK_THROWS_MATCHES(st::load(p, ck, o), lris::invalid_argument, what_contains("\"zzz\""));
  o.expected_checksums.clear();

  // SHA-256: of a known input first, then of the model file.
  const auto abc = dir() / "abc.txt";
  std::ofstream(abc) << "abc";
  CHECK(st::detail::sha256_hex(p.io(), lris::io::file(abc)) ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string digest = st::detail::sha256_hex(p.io(), ck.shards()[0].file);
  o.expected_sha256["verify.safetensors"] = digest;
  CHECK(st::load(p, ck, o).report.files_verified == 1);
  o.expected_sha256["verify.safetensors"] = std::string(64, '0');
  CHECK_THROWS_MATCHES(st::load(p, ck, o), lris::integrity_error, what_contains("SHA-256 mismatch"));
  o.expected_sha256.clear();
  o.expected_sha256["other.safetensors"] = digest;
  CHECK_THROWS_MATCHES(st::load(p, ck, o), lris::invalid_argument,
                       what_contains("\"other.safetensors\", which is no file"));
}

TEST_CASE("host_layout: runs of tensors as in the file, the others aligned", "[formats][load]") {
  using st::detail::layout_item;
  // Shard 0: three adjacent tensors from offset 100, a gap, one more; a tensor that does not
  // mirror; shard 1: one tensor at 4096 + 8. Listed out of file order.
  const std::vector<layout_item> items{{0, 300, 50, true},   {0, 100, 200, true},
                                       {1, 4104, 64, true},  {0, 350, 10, true},
                                       {0, 9000, 16, true},  {0, 20000, 30, false}};
  const auto l = st::detail::host_layout(items, 4096, 256);
  REQUIRE(l.offsets.size() == items.size());
  CHECK(l.offsets[1] == 100);                   // the first run starts as in the file
  CHECK(l.offsets[0] == l.offsets[1] + 200);    // and goes on as the file does
  CHECK(l.offsets[3] == l.offsets[0] + 50);
  CHECK(l.offsets[4] % 4096 == 9000 % 4096);    // after a gap: congruent again
  CHECK(l.offsets[4] >= l.offsets[3] + 10);
  CHECK(l.offsets[4] < l.offsets[3] + 10 + 4096);
  CHECK(l.offsets[5] % 256 == 0);               // does not mirror: aligned
  CHECK(l.offsets[5] >= l.offsets[4] + 16);
  CHECK(l.offsets[2] % 4096 == 8);              // shard 1 starts its own run
  CHECK(l.offsets[2] >= l.offsets[5] + 30);
  CHECK(l.bytes == l.offsets[2] + 64);
  // Nothing mirrors (device memory): each tensor aligned, one after another.
  std::vector<layout_item> plain = items;
  for (auto& it : plain) it.mirrors = false;
  const auto d = st::detail::host_layout(plain, 256, 256);
  std::uint64_t end = 0;
  for (std::size_t i : {1, 0, 3, 4, 5, 2}) {
    CHECK(d.offsets[i] % 256 == 0);
    CHECK(d.offsets[i] >= end);
    CHECK(d.offsets[i] < end + 256);
    end = d.offsets[i] + plain[i].bytes;
  }
  CHECK_THROWS_MATCHES(st::detail::host_layout(items, 256, 4096), lris::invalid_argument,
                       what_contains("a block aligned to 256 bytes cannot hold tensors aligned to 4096"));
}

TEST_CASE("load: host memory straight from the file, slices and conversions through slots",
          "[formats][load]") {
  // Every tensor at a multiple of its element size, as safetensors writers store them.
  const std::vector<raw_tensor> tensors{random_tensor("a.weight", dtype::F32, {64, 96}, 1),
                                        random_tensor("b.norm", dtype::BF16, {32}, 2),
                                        random_tensor("c.big", dtype::F32, {1024, 1100}, 3),
                                        random_tensor("d.scale", dtype::F16, {8, 4096}, 4),
                                        random_tensor("e.last", dtype::I64, {3}, 5)};
  const auto path = write_file(dir() / "straight.safetensors", tensors);
  const st::checkpoint ck(path);
  host_pipeline p;
  auto same_as_file = [&](const st::loaded_checkpoint& l, const std::string& name) {
    return reinterpret_cast<std::uintptr_t>(l.find(name)->data) % 4096 ==
           ck.file_offset(*ck.find(name)) % 4096;
  };
  for (const auto direct : {lris::io::direct_mode::never, lris::io::direct_mode::always}) {
    CAPTURE(static_cast<int>(direct));
    st::load_options o;
    o.transfer.chunk_bytes = 1 << 20;  // several chunks for the big tensor
    o.transfer.io.direct = direct;
    for (const auto& t : tensors) o.expected_checksums[t.name] = lris::block_checksum(t.data.data(), t.data.size());
    // Every tensor, each checked where it lands: no staging slot at all.
    auto loaded = st::load(p, ck, o, st::load_target_memory::host);
    CHECK(loaded.report.staging_bytes == 0);
    CHECK(loaded.report.verified == tensors.size());
    for (const auto& t : tensors) {
      CAPTURE(t.name);
      CHECK(same_as_file(loaded, t.name));
      CHECK(bytes_of(*loaded.find(t.name)) == t.data);
    }
    o.expected_checksums["c.big"] ^= 1;
    CHECK_THROWS_MATCHES(st::load(p, ck, o, st::load_target_memory::host), lris::integrity_error,
                         what_contains("tensor \"c.big\""));
    o.expected_checksums.clear();
    // Two tensors apart in the file: two runs, each as in the file.
    o.names = {"a.weight", "d.scale"};
    loaded = st::load(p, ck, o, st::load_target_memory::host);
    CHECK(loaded.report.staging_bytes == 0);
    CHECK(same_as_file(loaded, "a.weight"));
    CHECK(same_as_file(loaded, "d.scale"));
    CHECK(bytes_of(*loaded.find("d.scale")) == tensors[3].data);
    // A slice and a conversion go through the slots; the whole tensor beside them reads
    // straight.
    o.names = {"a.weight", "b.norm", "c.big"};
    o.slice = [](const st::tensor_info& i) {
      return i.name == "a.weight" ? std::optional<st::tensor_slice>(st::tensor_slice{1, 1, 2})
                                  : std::nullopt;
    };
    o.convert_to = dtype::F32;  // converts b.norm only
    loaded = st::load(p, ck, o, st::load_target_memory::host);
    CHECK(loaded.report.staging_bytes > 0);
    CHECK(loaded.report.converted == 1);
    CHECK(reinterpret_cast<std::uintptr_t>(loaded.find("a.weight")->data) % 256 == 0);
    CHECK(reinterpret_cast<std::uintptr_t>(loaded.find("b.norm")->data) % 256 == 0);
    CHECK(same_as_file(loaded, "c.big"));
    CHECK(bytes_of(*loaded.find("c.big")) == tensors[2].data);
  }
}

TEST_CASE("load: progress, and a cancel from the progress callback", "[formats][load][errors]") {
  const auto path = write_file(dir() / "progress.safetensors", model());
  const st::checkpoint ck(path);
  host_pipeline p;
  std::uint64_t last = 0, total = 0;
  st::load_options o;
  o.transfer.chunk_bytes = 1 << 20;
  o.on_progress = [&](std::uint64_t done, std::uint64_t all) {
    CHECK(done >= last);
    last = done;
    total = all;
    return true;
  };
  st::load(p, ck, o);
  CHECK(last == ck.data_bytes());
  CHECK(total == ck.data_bytes());
  o.transfer.workers = 1;  // chunks in turn: the cancel lands before the last one starts
  o.on_progress = [](std::uint64_t, std::uint64_t) { return false; };
  CHECK_THROWS_MATCHES(st::load(p, ck, o), lris::cancelled,
                       what_contains(fmt::format("load {}: transfer cancelled after",
                                                 ck.path().string())));
}

TEST_CASE("load: on_placed sees every tensor's place before the first read; its error ends "
          "the load and frees the memory", "[formats][load][errors]") {
  const auto tensors = model();
  const auto path = write_file(dir() / "placed.safetensors", tensors);
  const st::checkpoint ck(path);
  host_pipeline p;
  for (const auto where : {st::load_target_memory::device, st::load_target_memory::host}) {
    CAPTURE(static_cast<int>(where));
    std::vector<st::loaded_tensor> placed;
    int calls = 0;
    std::uint64_t progress_at_placing = 1;
    std::uint64_t progress = 0;
    st::load_options o;
    o.transfer.chunk_bytes = 1 << 20;
    o.on_progress = [&](std::uint64_t done, std::uint64_t) {
      progress = done;
      return true;
    };
    o.on_placed = [&](const std::vector<st::loaded_tensor>& t) {
      ++calls;
      placed = t;
      progress_at_placing = progress;
    };
    const auto loaded = st::load(p, ck, o, where);
    CHECK(calls == 1);
    CHECK(progress_at_placing == 0);
    REQUIRE(placed.size() == loaded.tensors.size());
    for (std::size_t i = 0; i < placed.size(); ++i) {
      CAPTURE(placed[i].name);
      CHECK(placed[i].name == loaded.tensors[i].name);
      CHECK(placed[i].data == loaded.tensors[i].data);
      CHECK(placed[i].bytes == loaded.tensors[i].bytes);
      CHECK(placed[i].shape == loaded.tensors[i].shape);
      CHECK(placed[i].type == loaded.tensors[i].type);
      CHECK(placed[i].lease != nullptr);
      CHECK(placed[i].lease == loaded.tensors[i].lease);
      CHECK(bytes_of(loaded.tensors[i]) == tensors[i].data);
    }

    // A consumer that fails while the tensors are placed: no read, the error as it was, and
    // the block gone with the last lease.
    std::weak_ptr<void> block;
    progress = 0;
    o.on_placed = [&](const std::vector<st::loaded_tensor>& t) {
      block = t.front().lease;
      throw lris::invalid_argument("the consumer refused the block");
    };
    CHECK_THROWS_MATCHES(st::load(p, ck, o, where), lris::invalid_argument,
                         what_contains("the consumer refused the block"));
    CHECK(progress == 0);
    CHECK(block.expired());
  }
  // load_into: the caller's memory, placed as the callback returned it, with no lease.
  std::map<std::string, std::vector<std::byte>> mine;
  std::vector<st::loaded_tensor> placed;
  st::load_options o;
  o.on_placed = [&](const std::vector<st::loaded_tensor>& t) { placed = t; };
  st::load_into(p, ck, [&](const st::tensor_request& r) {
    auto& v = mine[std::string(r.name)];
    v.resize(r.bytes);
    return lris::as_host(v.data(), v.size());
  }, o);
  REQUIRE(placed.size() == tensors.size());
  for (const auto& t : placed) {
    CHECK(t.data == mine[t.name].data());
    CHECK_FALSE(t.owns_memory());
  }
}

TEST_CASE("load_into: the caller's memory, skipped tensors, a destination too small",
          "[formats][load][errors]") {
  const auto tensors = model();
  const auto path = write_file(dir() / "into.safetensors", tensors);
  const st::checkpoint ck(path);
  host_pipeline p;
  std::map<std::string, std::vector<std::byte>> mine;
  const auto loaded = st::load_into(p, ck, [&](const st::tensor_request& r) {
    if (r.name == "e.big") return lris::host_span<std::byte>{};  // skipped
    auto& v = mine[std::string(r.name)];
    v.resize(r.bytes);
    return lris::as_host(v.data(), v.size());
  });
  CHECK(loaded.tensors.size() == tensors.size() - 1);
  CHECK(loaded.find("e.big") == nullptr);
  for (const auto& t : tensors) {
    if (t.name == "e.big") continue;
    CHECK(mine[t.name] == t.data);
    CHECK_FALSE(loaded.find(t.name)->owns_memory());
  }
  std::vector<std::byte> small(10);
  CHECK_THROWS_MATCHES(st::load_into(p, ck, [&](const st::tensor_request&) {
                         return lris::as_host(small.data(), small.size());
                       }, selecting({"a.weight"})),
                       lris::invalid_argument,
                       what_contains("tensor \"a.weight\" needs 24576 bytes; the destination has 10"));
  // Device memory of another device than the pipeline's.
  std::vector<std::byte> big(1 << 16);
  CHECK_THROWS_MATCHES(st::load_into(p, ck, [&](const st::tensor_request&) {
                         return lris::memory_span<lris::device_space<lris::host_backend>, std::byte>(
                             big.data(), big.size(), 1);
                       }, selecting({"a.weight"})),
                       lris::invalid_argument,
                       what_contains("the destination is on device 1 but the pipeline drives device 0"));
}

TEST_CASE("checkpoint: a sharded directory through its index", "[formats][load]") {
  const auto d = dir() / "sharded";
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  auto tensors = model();
  const std::vector<raw_tensor> one(tensors.begin(), tensors.begin() + 3);
  const std::vector<raw_tensor> two(tensors.begin() + 3, tensors.end());
  write_file(d / "model-00001-of-00002.safetensors", one);
  write_file(d / "model-00002-of-00002.safetensors", two);
  auto write_index = [&](const std::string& extra) {
    std::string map;
    for (const auto& t : one) map += fmt::format("\"{}\":\"model-00001-of-00002.safetensors\",", t.name);
    for (const auto& t : two) map += fmt::format("\"{}\":\"model-00002-of-00002.safetensors\",", t.name);
    map += extra;
    if (map.back() == ',') map.pop_back();
    std::ofstream(d / "model.safetensors.index.json")
        << "{\"metadata\":{\"total_size\":1},\"weight_map\":{" << map << "}}";
  };
  write_index("");
  const st::checkpoint ck(d);
  CHECK(ck.shards().size() == 2);
  host_pipeline p;
  const auto loaded = st::load(p, ck);
  REQUIRE(loaded.tensors.size() == tensors.size());
  for (const auto& t : tensors) CHECK(bytes_of(*loaded.find(t.name)) == t.data);

  auto kind = [&] {
    try {
      st::checkpoint bad(d);
    } catch (const st::error& e) {
      return e.kind();
    }
    FAIL("no error");
    return st::error_kind::gap;
  };
  write_index("\"x\":\"../outside.safetensors\"");
  CHECK(kind() == st::error_kind::shard_outside_directory);
  write_index("\"x\":\"/etc/passwd\"");
  CHECK(kind() == st::error_kind::shard_outside_directory);
  write_index("\"x\":\"model-00003-of-00002.safetensors\"");
  CHECK(kind() == st::error_kind::shard_missing);
  write_index("\"x\":\"model-00001-of-00002.safetensors\"");
  CHECK(kind() == st::error_kind::index_mismatch);
  write_index("\"x\":5");
  CHECK(kind() == st::error_kind::index_invalid);
  std::ofstream(d / "model.safetensors.index.json") << "{\"weight_map\":{\"a.weight\":\"model-00001-of-00002.safetensors\"}}";
  CHECK(kind() == st::error_kind::index_mismatch);  // the shard holds tensors the index omits
  std::ofstream(d / "model.safetensors.index.json") << "[1,2]";
  CHECK(kind() == st::error_kind::index_invalid);

  // An index that is a directory: said so, with its path.
  std::filesystem::remove(d / "model.safetensors.index.json");
  std::filesystem::create_directory(d / "model.safetensors.index.json");
  CHECK(kind() == st::error_kind::index_invalid);
  CHECK_THROWS_MATCHES(st::checkpoint(d), st::error,
                       what_contains("model.safetensors.index.json: a directory, not a file"));
  std::filesystem::remove(d / "model.safetensors.index.json");

  // Without an index: every *.safetensors file, and a name in two of them is an error.
  CHECK(st::checkpoint(d).tensors().size() == tensors.size());
  write_file(d / "model-extra.safetensors", {one[0]});
  CHECK(kind() == st::error_kind::duplicate_tensor);
  const auto empty = dir() / "empty_dir";
  std::filesystem::create_directories(empty);
  CHECK_THROWS_MATCHES(st::checkpoint(empty), st::error, what_contains("neither"));
}

TEST_CASE("load: cold files read as the disk's profile says (direct, buffered, both)",
          "[formats][load]") {
  const std::vector<raw_tensor> tensors = {random_tensor("w", dtype::F32, {6, 1 << 18}, 11)};
  const auto path = write_file(dir() / "cold.safetensors", tensors);
  const st::checkpoint ck(path);
  const lris::io::file& f = ck.shards().front().file;
  host_pipeline p;
  for (const auto how : {lris::cold_read_method::direct, lris::cold_read_method::buffered,
                         lris::cold_read_method::both}) {
    for (const auto where : {st::load_target_memory::device, st::load_target_memory::host}) {
      CAPTURE(lris::to_string(how), static_cast<int>(where));
      if (!evicted(f)) return;
      st::load_options o;
      o.transfer.chunk_bytes = 1 << 20;  // six chunks
      o.transfer.workers = 2;
      lris::disk_profile disk;
      disk.method = how;
      disk.workers = 3;
      disk.source = "the call's";
      o.transfer.cold_reads = disk;
      const auto loaded = st::load(p, ck, o, where);
      CHECK(bytes_of(*loaded.find("w")) == tensors.front().data);
      const auto& r = loaded.report;
      CHECK_THAT(r.io, Catch::Contains("reads on 2 workers (disk profile: the call's)"));
      CHECK(r.workers == 2);  // the call's sizes stand
      // A cold load into LRIS's host block faults its pages in ahead of the reads.
      CHECK((r.populate_threads > 0) == (where == st::load_target_memory::host));
      if (how == lris::cold_read_method::buffered || !f.direct()) {
        CHECK(r.io_direct_bytes == 0);
        CHECK(r.io_buffered_bytes >= r.file_bytes);
      } else if (how == lris::cold_read_method::both) {
        CHECK(r.io_direct_bytes > 0);
        CHECK(r.io_buffered_bytes >= r.file_bytes / 3);  // every second chunk of six
      } else {
        CHECK(r.io_buffered_bytes < r.file_bytes / 6);  // unaligned ends only
      }
    }
  }
}

TEST_CASE("load: without a call's method, the disk's calibrated profile from the context's file",
          "[formats][load]") {
  const std::vector<raw_tensor> tensors = {random_tensor("w", dtype::F32, {4, 1 << 18}, 12)};
  const auto path = write_file(dir() / "cold-profiled.safetensors", tensors);
  const st::checkpoint ck(path);
  const lris::io::file& f = ck.shards().front().file;
  const auto profile = dir() / "cold-profile.json";
  lris::disk_profile disk;
  disk.method = lris::cold_read_method::buffered;
  disk.workers = 3;
  lris::save_disk_profile(profile, lris::sched::storage_resource(f.fd()), disk);
  lris::context_options co;
  co.profile_path = profile;
  lris::pipeline_config config;
  config.context = lris::context::make(co);
  host_pipeline p(lris::auto_select{}, lris::host_backend{}, {}, std::move(config));
  if (!evicted(f)) return;
  CHECK(p.cold_reads(f).method == lris::cold_read_method::buffered);
  const auto loaded = st::load(p, ck, {}, st::load_target_memory::host);
  CHECK(bytes_of(*loaded.find("w")) == tensors.front().data);
  CHECK(loaded.report.populate_threads >= 1);  // cold, buffered reads too
  const auto warm = st::load(p, ck, {}, st::load_target_memory::host);  // now in the page cache
  CHECK(warm.report.populate_threads == 0);
  CHECK(bytes_of(*warm.find("w")) == tensors.front().data);
  CHECK_THAT(loaded.report.io,
             Catch::Contains("buffered reads on 3 workers (disk profile: " + profile.string()));
  CHECK(loaded.report.io_direct_bytes == 0);
}

TEST_CASE("load: populate_threads sets how many threads fault a cold host load's pages in, "
          "0 none", "[formats][load]") {
  const std::vector<raw_tensor> tensors = {random_tensor("w", dtype::BF16, {8, 1 << 18}, 31)};
  const auto path = write_file(dir() / "cold-populate.safetensors", tensors);
  const st::checkpoint ck(path);
  const lris::io::file& f = ck.shards().front().file;
  host_pipeline p;
  for (const std::optional<unsigned> threads :
       {std::optional<unsigned>(0), std::optional<unsigned>(2), std::optional<unsigned>(1000),
        std::optional<unsigned>()}) {
    CAPTURE(threads.value_or(12345));
    if (!evicted(f)) return;
    st::load_options o;
    o.populate_threads = threads;
    const auto loaded = st::load(p, ck, o, st::load_target_memory::host);
    CHECK(bytes_of(*loaded.find("w")) == tensors.front().data);
    const unsigned cpus = lris::usable_cpus();
    const unsigned want = threads ? std::min(*threads, cpus) : std::clamp(cpus / 8, 1u, 4u);
    CHECK(loaded.report.populate_threads == want);
    if (want == 0) CHECK(loaded.report.populated_bytes == 0);
  }
}

TEST_CASE("load_into: the caller's fresh host memory faulted in ahead of cold reads, as the "
          "tensors are read", "[formats][load]") {
  const std::vector<raw_tensor> tensors = {random_tensor("a", dtype::F32, {3, 1 << 18}, 21),
                                           random_tensor("b", dtype::F16, {1000, 37}, 22),
                                           random_tensor("c", dtype::BF16, {5, 1 << 17}, 23)};
  const auto path = write_file(dir() / "cold-into.safetensors", tensors);
  const st::checkpoint ck(path);
  const lris::io::file& f = ck.shards().front().file;
  const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  const std::size_t span = 8 << 20;
  host_pipeline p;
  for (const bool cold : {true, false}) {
    CAPTURE(cold);
    if (!cold) {  // the file read through the page cache (the cold load's reads went around it)
      std::ifstream in(path, std::ios::binary);
      std::vector<char> all(f.size());
      REQUIRE(in.read(all.data(), static_cast<std::streamsize>(all.size())));
    } else {
      if (!evicted(f)) continue;
    }
    // Fresh memory, as a caller's just-allocated tensors: each at an offset off a page
    // boundary, in another order than the file's, with untouched pages between them.
    void* m = ::mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(m != MAP_FAILED);
    std::unique_ptr<void, std::function<void(void*)>> unmap(m, [&](void* q) { ::munmap(q, span); });
    auto* base = static_cast<std::byte*>(m);
    REQUIRE(::madvise(base, span, MADV_NOHUGEPAGE) == 0);  // pages of 4 KiB: the gaps stay out
    const std::map<std::string, std::size_t> at = {
        {"a", 40 * page + 64}, {"b", 2 * page + 128}, {"c", (span / page - 330) * page}};
    const auto loaded = st::load_into(p, ck, [&](const st::tensor_request& r) {
      return lris::memory_span<lris::host_space, std::byte>(base + at.at(std::string(r.name)),
                                                            r.bytes);
    });
    for (const auto& t : tensors) {
      CAPTURE(t.name);
      CHECK(std::memcmp(base + at.at(t.name), t.data.data(), t.data.size()) == 0);
    }
    const auto& r = loaded.report;
    if (!cold) {
      CHECK(r.populate_threads == 0);  // from the page cache: nothing to do ahead of it
      continue;
    }
    CHECK(r.populate_threads >= 1);
    std::size_t pages = 0;  // the pages that hold the tensors, none twice
    std::vector<bool> held(span / page);
    for (const auto& t : tensors) {
      const std::size_t first = at.at(t.name) / page;
      const std::size_t last = (at.at(t.name) + t.data.size() - 1) / page;
      for (std::size_t i = first; i <= last; ++i) {
        pages += held[i] ? 0 : 1;
        held[i] = true;
      }
    }
    // All of them by the load's end, or none where the kernel has no MADV_POPULATE_WRITE.
    CHECK((r.populated_bytes == pages * page || r.populated_bytes == 0));
    std::vector<unsigned char> vec(span / page);
    REQUIRE(::mincore(base, span, vec.data()) == 0);
    for (std::size_t i = 0; i < vec.size(); ++i) {
      if (!held[i]) {
        INFO("page " << i << " holds no tensor");
        CHECK((vec[i] & 1) == 0);
      }
    }
  }
}

TEST_CASE("verify: every loaded byte against the file, and the first that differs",
          "[formats][load][errors]") {
  const auto tensors = model();
  const auto path = write_file(dir() / "verified.safetensors", tensors);
  const st::checkpoint ck(path);
  host_pipeline p;
  auto loaded = st::load(p, ck, {}, st::load_target_memory::host);
  CHECK(st::verify(p, ck, loaded) == tensors.size());
  st::load_options to_f32;
  to_f32.convert_to = dtype::F32;
  const auto converted = st::load(p, ck, to_f32, st::load_target_memory::host);
  CHECK(st::verify(p, ck, converted) == tensors.size());  // compared after the same conversion
  const st::loaded_tensor& t = loaded.tensors.at(1);
  t.data[t.bytes - 3] ^= std::byte{0x40};
  CHECK_THROWS_MATCHES(st::verify(p, ck, loaded), lris::integrity_error,
                       what_contains(fmt::format("verify: tensor \"{}\" differs from {} (its bytes "
                                                 "at offset {}) first at byte {} of the tensor",
                                                 t.name, path.string(),
                                                 ck.file_offset(*ck.find(t.name)), t.bytes - 3)));
}
