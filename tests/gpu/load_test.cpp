// safetensors::load into GPU memory, through LRIS's API only (one source, both runtimes): every
// tensor byte-identical, conversion by the kernel, slices, checksums, a cancel, and the
// staging memory it uses.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <vector>

#include <lris/fanout/fan_out_load.hpp>
#include <lris/formats/load.hpp>
#include <lris/lris.hpp>
#if defined(LRIS_TEST_HIP)
#include <lris/hip.hpp>
using backend = lris::hip_backend;
#else
#include <lris/cuda.hpp>
using backend = lris::cuda_backend;
#endif

#include "support/safetensors_file.hpp"

using lris::dtype;
namespace st = lris::safetensors;
using lris::test::random_tensor;

namespace {

std::vector<std::byte> on_host(lris::pipeline<lris::auto_select, backend>& p,
                               const st::loaded_tensor& t) {
  std::vector<std::byte> out(t.bytes);
  if (t.bytes > 0) {
    p.copy(lris::as_host(out.data(), out.size()),
           lris::memory_span<lris::device_space<backend>, std::byte>(t.data, t.bytes, t.location.device_id))
        .wait();
  }
  return out;
}

}  // namespace

TEST_CASE("gpu load: every tensor, converted, sliced and checked", "[gpu][load]") {
  const std::vector<lris::test::raw_tensor> tensors = {
      random_tensor("w1", dtype::BF16, {512, 768}, 1), random_tensor("n1", dtype::F32, {768}, 2),
      random_tensor("e", dtype::U8, {0}, 3),           random_tensor("w2", dtype::F16, {1024, 2048}, 4),
      random_tensor("q", dtype::F8_E5M2, {64, 64}, 5), random_tensor("s", dtype::I32, {}, 6)};
  const auto path = std::filesystem::current_path() / "gpu_load_test.safetensors";
  lris::test::write_file(path, tensors);
  const st::checkpoint ck(path);
  lris::pipeline<lris::auto_select, backend> p;
  for (const auto direct : {lris::io::direct_mode::never, lris::io::direct_mode::always}) {
    st::load_options o;
    o.transfer.chunk_bytes = 1 << 20;
    o.transfer.io.direct = direct;
    for (const auto& t : tensors) o.expected_checksums[t.name] = lris::block_checksum(t.data.data(), t.data.size());
    const auto plain = st::load(p, ck, o);
    CHECK(plain.report.verified == tensors.size());
    for (const auto& t : tensors) {
      CAPTURE(t.name);
      const auto* l = plain.find(t.name);
      REQUIRE(l != nullptr);
      CHECK(l->location.device);
      CHECK(on_host(p, *l) == t.data);
    }
    o.convert_to = dtype::F32;
    const auto wide = st::load(p, ck, o);
    CHECK(wide.report.converted == 3);
    for (const auto& t : tensors) {
      CAPTURE(t.name);
      const auto* l = wide.find(t.name);
      if (t.type == dtype::F32 || !lris::can_convert(t.type, dtype::F32)) {
        CHECK(on_host(p, *l) == t.data);
        continue;
      }
      const std::size_t n = t.data.size() * 8 / lris::bits_of(t.type);
      std::vector<std::byte> want(n * 4);
      lris::convert(t.data.data(), t.type, want.data(), dtype::F32, n);
      CHECK(on_host(p, *l) == want);
    }
  }
  // Rank 1 of 2 along each dimension of w2.
  const auto& w2 = tensors[3];
  for (unsigned dim : {0u, 1u}) {
    st::load_options o;
    o.names = {"w2"};
    o.slice = [&](const st::tensor_info&) { return st::tensor_slice{dim, 1, 2}; };
    const auto part = st::load(p, ck, o);
    std::vector<std::byte> want;
    for (std::size_t r = 0; r < 1024; ++r) {
      for (std::size_t c = 0; c < 2048; ++c) {
        if ((dim == 0 ? r / 512 : c / 1024) != 1) continue;
        want.push_back(w2.data[(r * 2048 + c) * 2]);
        want.push_back(w2.data[(r * 2048 + c) * 2 + 1]);
      }
    }
    CHECK(on_host(p, part.tensors.at(0)) == want);
  }
  st::load_options cancel;
  cancel.transfer.chunk_bytes = 1 << 20;
  cancel.transfer.workers = 1;  // chunks in turn: the cancel lands before the last one starts
  cancel.on_progress = [](std::uint64_t, std::uint64_t) { return false; };
  CHECK_THROWS_AS(st::load(p, ck, cancel), lris::cancelled);
  std::filesystem::remove(path);
}

TEST_CASE("gpu fan-out: the nccl route onto every device, checked", "[gpu][fanout]") {
  // NCCL (RCCL) where the dynamic loader finds it, or the file LRIS_TEST_NCCL names (a
  // PyTorch wheel's libnccl.so.2).
  const char* named = std::getenv("LRIS_TEST_NCCL");
  const lris::fanout::nccl_library nccl(backend::name, named != nullptr ? named : "");
  if (!nccl.available()) {
    WARN("no NCCL: " << nccl.why());
    return;
  }
  const std::vector<lris::test::raw_tensor> tensors = {
      random_tensor("model.layers.0.self_attn.q_proj.weight", dtype::BF16, {1024, 512}, 1),
      random_tensor("model.layers.0.self_attn.o_proj.weight", dtype::BF16, {512, 1024}, 2),
      random_tensor("model.norm.weight", dtype::F32, {512}, 3)};
  const auto path = std::filesystem::current_path() / "gpu_fan_out_test.safetensors";
  lris::test::write_file(path, tensors);
  const st::checkpoint ck(path);
  std::vector<lris::pipeline<lris::auto_select, backend>> p;
  for (int d = 0; d < backend::device_count(); ++d) p.emplace_back(lris::auto_select{}, backend(d));
  for (const unsigned tp : {1u, static_cast<unsigned>(p.size())}) {
    lris::fanout::fan_out_options o;
    o.path = lris::fanout::fan_path::nccl;
    o.nccl_library = named != nullptr ? named : "";
    o.tp = tp;
    o.plan = lris::fanout::sharding::llama();
    o.verify = true;  // every device's bytes against the file, and checksums across ranks
    // Several chunks, every device a root in turn: a chunk is the io engine's chunk on each
    // of its workers, so one worker.
    o.load.transfer.chunk_bytes = 256 << 10;
    o.load.transfer.workers = 1;
    const auto r = lris::fanout::load(std::span(p), ck, o);
    CHECK(r.report.path == lris::fanout::fan_path::nccl);
    CHECK(r.report.nccl == nccl.describe());
    CHECK(r.report.chunks > 1);
    for (const auto& d : r.report.devices) {
      CHECK(d.verified == tensors.size());
      CHECK_THAT(d.path, Catch::Contains("broadcast to it by " + nccl.describe()));
    }
  }
  std::filesystem::remove(path);
}
