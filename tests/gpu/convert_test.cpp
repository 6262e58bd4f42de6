// launch_convert on a real device: every supported pair with fresh random inputs, counts and
// pointer offsets that exercise the vector body, the scalar head and tail, and the per-element
// and byte-wise paths; poisoned guard bytes around every destination; results compared bit for
// bit with the CPU reference (the kernel compiles the same functions), with the rounding error
// of the narrowing pairs reported against double. A [.bench] case measures throughput against
// a device-to-device cudaMemcpy in the same process.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <limits>
#include <lris/cuda/convert.hpp>
#include <lris/cuda/cuda_backend.hpp>
#include <lris/error.hpp>
#include <lris/element/dtype.hpp>
#include <lris/element/dtype_convert.hpp>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "support/what_contains.hpp"

using lris::cuda_backend;
using lris::dtype;
using lris::test::what_contains;

namespace {

constexpr std::size_t guard = 64;  // poisoned bytes before and after every destination
constexpr unsigned char poison = 0xA5;

std::size_t size_of(dtype t) { return lris::bits_of(t) / 8; }

std::uint32_t bits(float f) { return lris::detail::float_bits(f); }
float from_bits(std::uint32_t u) { return lris::detail::float_from_bits(u); }

std::uint32_t load(const unsigned char* p, std::size_t n) {
  std::uint32_t v = 0;
  std::memcpy(&v, p, n);  // little-endian host and device
  return v;
}
void store(unsigned char* p, std::size_t n, std::uint32_t v) { std::memcpy(p, &v, n); }

// One element through the CPU reference, on encodings.
std::uint32_t reference(dtype from, dtype to, std::uint32_t x) {
  if (from == to) return x;
  const auto h = static_cast<std::uint16_t>(x);
  const auto b = static_cast<std::uint8_t>(x);
  switch (from) {
    case dtype::F32:
      return to == dtype::BF16 ? lris::float_to_bf16(from_bits(x))
                               : lris::float_to_f16(from_bits(x));
    case dtype::BF16:
      return bits(lris::bf16_to_float(h));
    case dtype::F16:
      return bits(lris::f16_to_float(h));
    case dtype::F8_E4M3:
      if (to == dtype::BF16) return lris::f8_e4m3_to_bf16(b);
      if (to == dtype::F16) return lris::f8_e4m3_to_f16(b);
      return bits(lris::f8_e4m3_to_float(b));
    case dtype::F8_E5M2:
      if (to == dtype::BF16) return lris::f8_e5m2_to_bf16(b);
      if (to == dtype::F16) return lris::f8_e5m2_to_f16(b);
      return bits(lris::f8_e5m2_to_float(b));
    default:
      FAIL("no reference for " << to_string(from));
      return 0;
  }
}

std::vector<unsigned char> reference(dtype from, dtype to, const std::vector<unsigned char>& src) {
  const std::size_t sf = size_of(from), st = size_of(to), count = src.size() / sf;
  std::vector<unsigned char> out(count * st);
  for (std::size_t i = 0; i < count; ++i) {
    store(out.data() + i * st, st, reference(from, to, load(src.data() + i * sf, sf)));
  }
  return out;
}

bool is_nan_code(dtype t, std::uint32_t c) {
  switch (t) {
    case dtype::F32:
      return (c & 0x7FFF'FFFFu) > 0x7F80'0000u;
    case dtype::BF16:
      return (c & 0x7FFFu) > 0x7F80u;
    case dtype::F16:
      return (c & 0x7FFFu) > 0x7C00u;
    case dtype::F8_E4M3:
      return (c & 0x7Fu) == 0x7Fu;
    case dtype::F8_E5M2:
      return (c & 0x7Fu) > 0x7Cu;
    default:
      return false;
  }
}

// Fresh random encodings, never NaN: F32 mostly uniform in +-[1e-3, 1e3] (the weights' range)
// with one in eight drawn over every finite exponent, subnormals included; narrower types as
// random bit patterns.
std::vector<unsigned char> random_source(dtype t, std::size_t count, std::mt19937_64& rng) {
  const std::size_t n = size_of(t);
  std::vector<unsigned char> out(count * n);
  std::uniform_real_distribution<float> magnitude(1e-3f, 1e3f);
  for (std::size_t i = 0; i < count; ++i) {
    std::uint32_t c;
    do {
      const std::uint64_t r = rng();
      if (t == dtype::F32 && (r & 7) != 0) {
        c = bits(magnitude(rng)) | static_cast<std::uint32_t>((r >> 8) & 1) << 31;
      } else {
        c = static_cast<std::uint32_t>(r >> 32) & static_cast<std::uint32_t>((1ull << 8 * n) - 1);
      }
    } while (is_nan_code(t, c));
    store(out.data() + i * n, n, c);
  }
  return out;
}

// Device memory freed on scope exit.
struct device_memory {
  cuda_backend be;
  std::size_t n;
  unsigned char* p;
  explicit device_memory(std::size_t bytes)
      : n(bytes), p(static_cast<unsigned char*>(be.allocate_device(bytes))) {}
  ~device_memory() { be.deallocate_device(p, n); }
  device_memory(const device_memory&) = delete;
  device_memory& operator=(const device_memory&) = delete;
};

std::vector<unsigned char> read_back(const unsigned char* p, std::size_t n) {
  std::vector<unsigned char> out(n);
  REQUIRE(cudaMemcpy(out.data(), p, n, cudaMemcpyDeviceToHost) == cudaSuccess);
  return out;
}

// Converts `src` (host encodings) at device offsets `src_off` / `dst_off` from 16-byte aligned
// addresses, checks the guards and returns the converted bytes.
std::vector<unsigned char> convert_on_device(dtype from, dtype to,
                                             const std::vector<unsigned char>& src,
                                             std::size_t src_off, std::size_t dst_off,
                                             cuda_backend::stream& stream) {
  const std::size_t count = src.size() / size_of(from);
  const std::size_t out_bytes = count * size_of(to);
  device_memory s(guard + src_off + src.size()), d(guard + dst_off + out_bytes + guard);
  REQUIRE(cudaMemcpy(s.p + guard + src_off, src.data(), src.size(), cudaMemcpyHostToDevice) ==
          cudaSuccess);
  REQUIRE(cudaMemset(d.p, poison, d.n) == cudaSuccess);
  // Both may return before the device is done (pageable copies, memsets), and the backend's
  // streams are non-blocking: they do not wait for the legacy stream.
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  lris::cuda::launch_convert(s.p + guard + src_off, from, d.p + guard + dst_off, to, count,
                             stream.native());
  REQUIRE(cudaStreamSynchronize(static_cast<cudaStream_t>(stream.native())) == cudaSuccess);
  const auto all = read_back(d.p, d.n);
  const auto before = static_cast<std::size_t>(
      std::count(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(guard + dst_off), poison));
  const auto after = static_cast<std::size_t>(
      std::count(all.end() - static_cast<std::ptrdiff_t>(guard), all.end(), poison));
  CHECK(before == guard + dst_off);
  CHECK(after == guard);
  return {all.begin() + static_cast<std::ptrdiff_t>(guard + dst_off),
          all.end() - static_cast<std::ptrdiff_t>(guard)};
}

std::size_t mismatches(const std::vector<unsigned char>& got,
                       const std::vector<unsigned char>& want, std::size_t element) {
  REQUIRE(got.size() == want.size());
  std::size_t bad = 0;
  for (std::size_t i = 0; i < got.size(); i += element) {
    bad += std::memcmp(got.data() + i, want.data() + i, element) != 0;
  }
  return bad;
}

struct pair {
  dtype from, to;
};
constexpr pair supported[] = {{dtype::F32, dtype::BF16},     {dtype::BF16, dtype::F32},
                              {dtype::F32, dtype::F16},      {dtype::F16, dtype::F32},
                              {dtype::F8_E4M3, dtype::BF16}, {dtype::F8_E4M3, dtype::F16},
                              {dtype::F8_E4M3, dtype::F32},  {dtype::F8_E5M2, dtype::BF16},
                              {dtype::F8_E5M2, dtype::F16},  {dtype::F8_E5M2, dtype::F32}};

// Rounding error of a narrowing conversion against the exact input, as double: relative where
// the result is a normal number of the target (bounded by the unit roundoff 2^-8 for bfloat16,
// 2^-11 for half), absolute where it is subnormal (half the subnormal spacing).
struct error_report {
  double max_relative = 0, max_subnormal_absolute = 0;
  std::size_t normal = 0, subnormal = 0, overflow = 0;
};

void add_errors(error_report& r, dtype to, const std::vector<unsigned char>& src,
                const std::vector<unsigned char>& out) {
  const bool half = to == dtype::F16;
  const double min_normal = half ? 0x1p-14 : 0x1p-126;
  const double max_finite = half ? 65504.0 : static_cast<double>(lris::bf16_to_float(0x7F7F));
  for (std::size_t i = 0; i < out.size() / 2; ++i) {
    const double x = from_bits(load(src.data() + 4 * i, 4));
    const auto h = static_cast<std::uint16_t>(load(out.data() + 2 * i, 2));
    const double y = half ? lris::f16_to_float(h) : lris::bf16_to_float(h);
    const double ax = std::fabs(x);
    if (ax > max_finite) {
      ++r.overflow;  // exact equality with the reference already checked these (inf or max)
    } else if (ax >= min_normal) {
      ++r.normal;
      r.max_relative = std::max(r.max_relative, std::fabs(y - x) / ax);
    } else {
      ++r.subnormal;
      r.max_subnormal_absolute = std::max(r.max_subnormal_absolute, std::fabs(y - x));
    }
  }
}

}  // namespace

TEST_CASE("convert: every supported pair, counts and offsets, matches the CPU reference",
          "[cuda][kernels][convert]") {
  cuda_backend be;
  auto stream = be.make_stream();
  std::mt19937_64 rng(std::random_device{}());
  const std::size_t counts[] = {1, 7, 1'000'003};
  // 0: aligned; 2 and 4: aligned after a scalar head, or never (when src and dst differ); 1: not
  // even element-aligned for 16- and 32-bit types, the byte-wise path.
  const std::size_t offsets[] = {0, 2, 4, 1};
  error_report bf16_errors, f16_errors;
  for (const pair p : supported) {
    for (const std::size_t count : counts) {
      const auto src = random_source(p.from, count, rng);  // fresh for every pair and count
      const auto want = reference(p.from, p.to, src);
      for (const std::size_t src_off : offsets) {
        for (const std::size_t dst_off : offsets) {
          INFO(to_string(p.from) << " -> " << to_string(p.to) << ", " << count << " elements, src +"
                                 << src_off << ", dst +" << dst_off);
          const auto got = convert_on_device(p.from, p.to, src, src_off, dst_off, stream);
          CHECK(mismatches(got, want, size_of(p.to)) == 0);
          if (p.from == dtype::F32 && src_off == 0 && dst_off == 0) {
            add_errors(p.to == dtype::BF16 ? bf16_errors : f16_errors, p.to, src, got);
          }
        }
      }
    }
  }
  for (const auto& [name, r, bound] : {std::tuple{"F32 -> BF16", bf16_errors, 0x1p-8},
                                       std::tuple{"F32 -> F16", f16_errors, 0x1p-11}}) {
    std::printf(
        "%s: max relative error %.6g (bound %.6g) over %zu normal results; max absolute "
        "error %.3g over %zu subnormal results; %zu beyond the largest finite\n",
        name, r.max_relative, bound, r.normal, r.max_subnormal_absolute, r.subnormal, r.overflow);
    CHECK(r.normal > 500'000);  // of the 1'000'011 inputs; the rest lie outside F16's range
    CHECK(r.max_relative <= bound);
    CHECK(r.max_relative > bound / 4);  // the bound is near-tight: the check measures something
  }
  CHECK(f16_errors.max_subnormal_absolute <= 0x1p-25);
  CHECK(f16_errors.subnormal > 0);
  CHECK(f16_errors.overflow > 0);
}

TEST_CASE("convert: every source code, NaNs included, matches the CPU reference",
          "[cuda][kernels][convert]") {
  cuda_backend be;
  auto stream = be.make_stream();
  // All 2^16 / 2^8 codes of the narrow sources; for F32, the values where rounding goes wrong.
  std::vector<std::uint32_t> f32_codes = {
      0x0000'0000u, 0x8000'0000u, 0x7F80'0000u, 0xFF80'0000u, 0x7FC0'0000u, 0xFFC0'0000u,
      0x7F80'0001u, 0x7FBF'FFFFu, 0x0000'0001u, 0x0000'8000u, 0x0001'8000u, 0x3F80'8000u,
      0x3F81'8000u, 0x3F80'1000u, 0x3F80'3000u, 0x7F7F'FFFFu, 0x477F'E000u, 0x477F'F000u,
      0x477F'EFFFu, 0x3380'0000u, 0x3300'0000u, 0x3300'0001u, 0x387F'E000u, 0x387F'F000u};
  for (const pair p : supported) {
    INFO(to_string(p.from) << " -> " << to_string(p.to));
    std::vector<unsigned char> src;
    const std::size_t sf = size_of(p.from);
    const std::size_t codes = p.from == dtype::F32 ? f32_codes.size() : std::size_t{1} << 8 * sf;
    src.resize(codes * sf);
    for (std::size_t c = 0; c < codes; ++c) {
      store(src.data() + c * sf, sf,
            p.from == dtype::F32 ? f32_codes[c] : static_cast<std::uint32_t>(c));
    }
    const auto got = convert_on_device(p.from, p.to, src, 0, 0, stream);
    CHECK(mismatches(got, reference(p.from, p.to, src), size_of(p.to)) == 0);
  }
}

TEST_CASE("convert: pinned host memory on either side (zero copy)", "[cuda][kernels][convert]") {
  cuda_backend be;
  auto stream = be.make_stream();
  std::mt19937_64 rng(std::random_device{}());
  const std::size_t count = 300'001;
  const auto src = random_source(dtype::F8_E4M3, count, rng);
  const auto want = reference(dtype::F8_E4M3, dtype::BF16, src);
  auto* hs = static_cast<unsigned char*>(be.allocate_pinned(src.size()));
  auto* hd = static_cast<unsigned char*>(be.allocate_pinned(want.size() + 2 * guard));
  std::memcpy(hs, src.data(), src.size());
  std::memset(hd, poison, want.size() + 2 * guard);
  lris::cuda::launch_convert(hs, dtype::F8_E4M3, hd + guard, dtype::BF16, count, stream.native());
  be.synchronize(stream);
  std::vector<unsigned char> got(hd + guard, hd + guard + want.size());
  CHECK(mismatches(got, want, 2) == 0);
  CHECK(std::count(hd, hd + guard, poison) == std::ptrdiff_t{guard});
  CHECK(std::count(hd + guard + want.size(), hd + want.size() + 2 * guard, poison) ==
        std::ptrdiff_t{guard});
  be.deallocate_pinned(hd, want.size() + 2 * guard);
  be.deallocate_pinned(hs, src.size());
}

TEST_CASE("convert: the same dtype is a plain copy", "[cuda][kernels][convert]") {
  cuda_backend be;
  auto stream = be.make_stream();
  std::mt19937_64 rng(std::random_device{}());
  for (const dtype t : {dtype::F32, dtype::BF16, dtype::U8, dtype::C64, dtype::F8_E8M0}) {
    INFO(to_string(t));
    const std::size_t n = 100'003 * size_of(t);
    std::vector<unsigned char> src(n);
    for (auto& b : src) b = static_cast<unsigned char>(rng());
    CHECK(mismatches(convert_on_device(t, t, src, 4, 2, stream), src, 1) == 0);
  }
  // Sub-byte elements: whole bytes only (two F4 per byte; four F6 in three bytes).
  device_memory s(64), d(64);
  lris::cuda::launch_convert(s.p, dtype::F4, d.p, dtype::F4, 64, stream.native());
  lris::cuda::launch_convert(s.p, dtype::F6_E2M3, d.p, dtype::F6_E2M3, 40, stream.native());
  be.synchronize(stream);
  REQUIRE_THROWS_MATCHES(
      lris::cuda::launch_convert(s.p, dtype::F4, d.p, dtype::F4, 7, stream.native()),
      lris::invalid_argument, what_contains("whole number of bytes"));
}

TEST_CASE("convert: unsupported pairs name both dtypes", "[cuda][convert]") {
  cuda_backend be;
  device_memory s(64), d(64);
  std::size_t supported_pairs = 0;
  for (const dtype from : lris::all_dtypes) {
    for (const dtype to : lris::all_dtypes) {
      const bool listed =
          from == to || std::any_of(std::begin(supported), std::end(supported),
                                    [&](pair p) { return p.from == from && p.to == to; });
      INFO(to_string(from) << " -> " << to_string(to));
      CHECK(lris::cuda::can_convert(from, to) == listed);
      supported_pairs += listed && from != to;
      if (listed) continue;
      // Refused whatever the count, so a wrong pair shows up before the first real tensor.
      for (const std::size_t count : {std::size_t{0}, std::size_t{16}}) {
        REQUIRE_THROWS_MATCHES(lris::cuda::launch_convert(s.p, from, d.p, to, count, nullptr),
                               lris::unsupported,
                               what_contains(std::string("from ") + std::string(to_string(from)) +
                                             " to " + std::string(to_string(to))));
      }
    }
  }
  CHECK(supported_pairs == std::size(supported));
  CHECK_FALSE(lris::cuda::can_convert(static_cast<dtype>(200), static_cast<dtype>(200)));
}

TEST_CASE("convert: bad arguments", "[cuda][convert]") {
  cuda_backend be;
  device_memory m(1024);
  // Nothing to do: no pointer is looked at.
  lris::cuda::launch_convert(nullptr, dtype::F32, nullptr, dtype::BF16, 0, nullptr);
  REQUIRE_THROWS_MATCHES(
      lris::cuda::launch_convert(nullptr, dtype::F32, m.p, dtype::BF16, 4, nullptr),
      lris::invalid_argument, what_contains("null"));
  REQUIRE_THROWS_MATCHES(
      lris::cuda::launch_convert(m.p, dtype::F32, m.p + 8, dtype::BF16, 16, nullptr),
      lris::invalid_argument, what_contains("overlap"));
  REQUIRE_THROWS_MATCHES(
      lris::cuda::launch_convert(m.p, dtype::F8_E4M3, m.p + 8, dtype::F8_E4M3, 16, nullptr),
      lris::invalid_argument, what_contains("overlap"));
  REQUIRE_THROWS_MATCHES(
      lris::cuda::launch_convert(m.p, dtype::F32, m.p + 512, dtype::BF16,
                                 std::numeric_limits<std::size_t>::max() / 2, nullptr),
      lris::invalid_argument, what_contains("overflow"));
  // Adjacent is not overlapping.
  lris::cuda::launch_convert(m.p, dtype::F32, m.p + 64, dtype::BF16, 16, nullptr);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
}

TEST_CASE("convert: throughput against a device-to-device copy", "[.bench][cuda][convert]") {
  cuda_backend be;
  auto stream = be.make_stream();
  const auto s = static_cast<cudaStream_t>(stream.native());
  const std::size_t in_bytes = std::size_t{1} << 30;
  constexpr int runs = 20;
  cudaEvent_t start, stop;
  REQUIRE(cudaEventCreate(&start) == cudaSuccess);
  REQUIRE(cudaEventCreate(&stop) == cudaSuccess);
  // Median milliseconds of `runs` timed calls of `f` after one warm-up call.
  auto median_ms = [&](auto&& f) {
    f();
    std::vector<float> ms(runs);
    for (float& m : ms) {
      REQUIRE(cudaEventRecord(start, s) == cudaSuccess);
      f();
      REQUIRE(cudaEventRecord(stop, s) == cudaSuccess);
      REQUIRE(cudaEventSynchronize(stop) == cudaSuccess);
      REQUIRE(cudaEventElapsedTime(&m, start, stop) == cudaSuccess);
    }
    std::sort(ms.begin(), ms.end());
    return static_cast<double>(ms[runs / 2]);
  };
  std::mt19937_64 rng(1);
  for (const pair p : {pair{dtype::F32, dtype::BF16}, pair{dtype::F8_E4M3, dtype::BF16}}) {
    const std::size_t count = in_bytes / size_of(p.from);
    const std::size_t out_bytes = count * size_of(p.to);
    device_memory src(in_bytes), dst(out_bytes), copy(in_bytes);
    // Random valid inputs (branches in the decoders see realistic data): a 64 MiB random block
    // repeated.
    const auto block = random_source(p.from, (std::size_t{64} << 20) / size_of(p.from), rng);
    for (std::size_t o = 0; o < in_bytes; o += block.size()) {
      REQUIRE(cudaMemcpy(src.p + o, block.data(), block.size(), cudaMemcpyHostToDevice) ==
              cudaSuccess);
    }
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);  // the non-blocking stream would not wait
    const double copy_ms = median_ms([&] {
      REQUIRE(cudaMemcpyAsync(copy.p, src.p, in_bytes, cudaMemcpyDeviceToDevice, s) == cudaSuccess);
    });
    const double conv_ms = median_ms(
        [&] { lris::cuda::launch_convert(src.p, p.from, dst.p, p.to, count, stream.native()); });
    // "Moved" counts bytes read plus bytes written: the memory traffic each one causes.
    const double copy_moved = 2.0 * static_cast<double>(in_bytes) / (copy_ms * 1e6);
    const double conv_moved = static_cast<double>(in_bytes + out_bytes) / (conv_ms * 1e6);
    std::printf(
        "%s -> %s, %zu MiB in, %zu MiB out: convert %.3f ms (%.0f GB/s in, %.0f GB/s "
        "moved); D2D cudaMemcpy of the %zu MiB input %.3f ms (%.0f GB/s moved); moved "
        "bandwidth ratio %.3f, time ratio copy/convert %.3f\n",
        std::string(to_string(p.from)).c_str(), std::string(to_string(p.to)).c_str(),
        in_bytes >> 20, out_bytes >> 20, conv_ms, static_cast<double>(in_bytes) / (conv_ms * 1e6),
        conv_moved, in_bytes >> 20, copy_ms, copy_moved, conv_moved / copy_moved,
        copy_ms / conv_ms);
    // Spot-check the converted bytes (the first block) so a fast wrong kernel cannot pass.
    const auto head = read_back(dst.p, block.size() / size_of(p.from) * size_of(p.to));
    CHECK(mismatches(head, reference(p.from, p.to, block), size_of(p.to)) == 0);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
}
