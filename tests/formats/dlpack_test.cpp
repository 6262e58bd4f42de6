// DLPack export: type codes of every dtype, shapes and strides, devices, and the lease an
// export holds on the memory of a load.
#include <catch2/catch.hpp>

#include "support/safetensors_file.hpp"
#include "support/what_contains.hpp"

#include <filesystem>

#include <lris/formats/dlpack.hpp>
#include <lris/formats/load.hpp>
#include <lris/lris.hpp>

using lris::dtype;
using lris::test::what_contains;
namespace st = lris::safetensors;

TEST_CASE("dlpack: the type code and width of every dtype", "[formats][dlpack]") {
  struct row {
    dtype t;
    std::uint8_t code, bits;
  };
  const row rows[] = {{dtype::BOOL, 6, 8},        {dtype::F4, 17, 4},
                      {dtype::F6_E2M3, 15, 6},    {dtype::F6_E3M2, 16, 6},
                      {dtype::U8, kDLUInt, 8},    {dtype::I8, kDLInt, 8},
                      {dtype::F8_E5M2, 12, 8},    {dtype::F8_E4M3, 10, 8},
                      {dtype::F8_E8M0, 14, 8},    {dtype::F8_E4M3FNUZ, 11, 8},
                      {dtype::F8_E5M2FNUZ, 13, 8}, {dtype::I16, kDLInt, 16},
                      {dtype::U16, kDLUInt, 16},  {dtype::F16, kDLFloat, 16},
                      {dtype::BF16, kDLBfloat, 16}, {dtype::I32, kDLInt, 32},
                      {dtype::U32, kDLUInt, 32},  {dtype::F32, kDLFloat, 32},
                      {dtype::C64, kDLComplex, 64}, {dtype::F64, kDLFloat, 64},
                      {dtype::I64, kDLInt, 64},   {dtype::U64, kDLUInt, 64}};
  STATIC_REQUIRE(std::size(rows) == lris::all_dtypes.size());
  for (const auto& r : rows) {
    CAPTURE(lris::to_string(r.t));
    const DLDataType d = st::dlpack_dtype(r.t);
    CHECK(d.code == r.code);
    CHECK(d.bits == r.bits);
    CHECK(d.lanes == 1);
  }
  CHECK_THROWS_AS(st::dlpack_dtype(static_cast<dtype>(200)), lris::invalid_argument);
}

TEST_CASE("dlpack: devices", "[formats][dlpack][errors]") {
  CHECK(st::dlpack_device({false, "host", 0}).device_type == kDLCPU);
  CHECK(st::dlpack_device({true, "host", 0}).device_type == kDLCPU);
  const DLDevice cuda = st::dlpack_device({true, "cuda", 3});
  CHECK(cuda.device_type == kDLCUDA);
  CHECK(cuda.device_id == 3);
  CHECK(st::dlpack_device({true, "hip", 1}).device_type == kDLROCM);
  CHECK_THROWS_MATCHES(st::dlpack_device({true, "tpu", 0}), lris::unsupported,
                       what_contains("backend \"tpu\""));
}

TEST_CASE("dlpack: an export of a loaded tensor keeps its memory alive", "[formats][dlpack]") {
  const auto path = std::filesystem::current_path() / "dlpack_test.safetensors";
  const auto w = lris::test::random_tensor("w", dtype::BF16, {3, 5, 7}, 9);
  lris::test::write_file(path, {w, lris::test::random_tensor("s", dtype::F32, {}, 10)});
  lris::pipeline<lris::auto_select, lris::host_backend> p;
  DLManagedTensor* exported = nullptr;
  DLManagedTensor* scalar = nullptr;
  std::weak_ptr<void> memory;
  {
    const auto loaded = st::load(p, st::checkpoint(path));
    exported = st::to_dlpack(*loaded.find("w"));
    scalar = st::to_dlpack(*loaded.find("s"));
    memory = loaded.find("w")->lease;
  }
  REQUIRE_FALSE(memory.expired());  // the exports hold it
  const DLTensor& d = exported->dl_tensor;
  CHECK(d.ndim == 3);
  CHECK(std::vector<std::int64_t>(d.shape, d.shape + 3) == std::vector<std::int64_t>{3, 5, 7});
  CHECK(std::vector<std::int64_t>(d.strides, d.strides + 3) == std::vector<std::int64_t>{35, 7, 1});
  CHECK(d.dtype.code == kDLBfloat);
  CHECK(d.device.device_type == kDLCPU);
  CHECK(d.byte_offset == 0);
  CHECK(std::memcmp(d.data, w.data.data(), w.data.size()) == 0);
  CHECK(scalar->dl_tensor.ndim == 0);
  exported->deleter(exported);
  CHECK_FALSE(memory.expired());
  scalar->deleter(scalar);
  CHECK(memory.expired());  // the last holder gone: freed

  // Memory the caller supplied: no lease, the export only points to it.
  std::vector<std::byte> mine(w.data.size());
  const auto into = st::load_into(p, st::checkpoint(path), [&](const st::tensor_request& r) {
    return r.name == "w" ? lris::as_host(mine.data(), mine.size()) : lris::host_span<std::byte>{};
  });
  DLManagedTensor* borrowed = st::to_dlpack(into.tensors.at(0));
  CHECK(borrowed->dl_tensor.data == mine.data());
  borrowed->deleter(borrowed);
  std::filesystem::remove(path);
}
