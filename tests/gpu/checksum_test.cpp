// lris::cuda::block_checksum equals the host's lris::block_checksum (libxxhash) bit for bit: on
// random data, for sizes around the block boundaries, misaligned starts, several seeds and block
// sizes; inputs get buffers of exactly their size, so that compute-sanitizer sees any read past
// them. The [.bench] case times 4 GiB against a device-memory read bound in the same process.
#include <catch2/catch.hpp>

#include "support/random_bytes.hpp"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <xxhash.h>

#include <lris/cuda.hpp>
#include <lris/cuda/checksum.hpp>
#include <lris/detail/thread_pool.hpp>
#include <lris/error.hpp>
#include <lris/element/checksum.hpp>

using lris::cuda_backend;
using device_bytes = lris::buffer<lris::device_allocator<cuda_backend>>;
using device_words = lris::buffer<lris::device_allocator<cuda_backend>, std::uint64_t>;
using pinned_bytes = lris::buffer<lris::pinned_allocator<cuda_backend>>;
using pinned_words = lris::buffer<lris::pinned_allocator<cuda_backend>, std::uint64_t>;

namespace {

std::vector<unsigned char> random_bytes(std::size_t n, std::uint64_t seed) {
  return lris::test::random_bytes<unsigned char>(n, seed);
}

// `n` bytes of `host` in a device buffer of exactly `offset + n` bytes, starting at `offset`.
struct device_copy {
  device_copy(const unsigned char* host, std::size_t offset, std::size_t n)
      : buffer(offset + n), offset(offset) {
    REQUIRE(cudaMemcpy(buffer.data(), host, offset + n, cudaMemcpyHostToDevice) == cudaSuccess);
  }
  [[nodiscard]] const std::byte* data() const { return buffer.data() + offset; }
  device_bytes buffer;
  std::size_t offset;
};

}  // namespace

TEST_CASE("device block checksum equals the host's", "[cuda][checksum]") {
  const std::size_t big = (std::size_t{64} << 20) + 13;
  const auto host = random_bytes(big + 16, 11);
  cuda_backend be;
  auto stream = be.make_stream();
  std::size_t cases = 0;
  for (const std::size_t block : {std::size_t{4096}, std::size_t{65536}, std::size_t{1} << 20}) {
    const std::size_t sizes[] = {0,         1,     31,        32,        33,        4095,
                                 block - 1, block, block + 1, 2 * block + 31, 3 * block,
                                 5 * block + 7};
    for (const std::size_t n : sizes) {
      for (const std::size_t offset : {0, 1, 3, 8}) {
        const device_copy dev(host.data(), offset, n);
        const std::uint64_t seeds[] = {0, std::uint64_t{0x9E3779B97F4A7C15ull} ^ n};
        for (const std::uint64_t seed : seeds) {
          CAPTURE(block, n, offset, seed);
          const std::uint64_t want = lris::block_checksum(host.data() + offset, n, seed, block);
          CHECK(lris::cuda::block_checksum(dev.data(), n, seed, block, stream.native()) == want);
          ++cases;
        }
      }
    }
  }
  // Many blocks: 64 MiB + 13 in 1 MiB and in 4 KiB blocks, aligned and not.
  for (const std::size_t block : {lris::default_checksum_block, std::size_t{4096}}) {
    for (const std::size_t offset : {0, 1}) {
      CAPTURE(block, offset);
      const device_copy dev(host.data(), offset, big);
      const std::uint64_t seed = 0xABCDEF0123456789ull;
      CHECK(lris::cuda::block_checksum(dev.data(), big, seed, block, stream.native()) ==
            lris::block_checksum(host.data() + offset, big, seed, block));
      ++cases;
    }
  }
  std::printf("cuda checksum: %zu cases compared with the host\n", cases);
}

TEST_CASE("launch_block_checksum: block hashes, a pinned result, a stream", "[cuda][checksum]") {
  cuda_backend be;
  auto stream = be.make_stream();
  const std::size_t block = std::size_t{1} << 20;
  const std::size_t n = 5 * block + 77;
  const auto host = random_bytes(n + 3, 21);
  const device_copy dev(host.data(), 3, n);
  const std::size_t blocks = lris::cuda::checksum_block_count(n, block);
  REQUIRE(blocks == 6);
  device_words hashes(blocks);
  REQUIRE(cudaMemset(hashes.data(), 0xA5, blocks * 8) == cudaSuccess);
  pinned_words result(1);
  result.data()[0] = 0;
  const std::uint64_t seed = 77;
  lris::cuda::launch_block_checksum(dev.data(), n, seed, block, hashes.data(), result.data(),
                                    stream.native());
  be.synchronize(stream);
  CHECK(result.data()[0] == lris::block_checksum(host.data() + 3, n, seed, block));
  std::vector<std::uint64_t> got(blocks);
  REQUIRE(cudaMemcpy(got.data(), hashes.data(), blocks * 8, cudaMemcpyDeviceToHost) ==
          cudaSuccess);
  for (std::size_t i = 0; i < blocks; ++i) {
    CAPTURE(i);
    CHECK(got[i] == XXH64(host.data() + 3 + i * block, std::min(block, n - i * block), seed));
  }

  // One block: the result is plain XXH64, the array (optional) holds the same value.
  result.data()[0] = 0;
  lris::cuda::launch_block_checksum(dev.data(), block, seed, block, hashes.data(), result.data(),
                                    stream.native());
  be.synchronize(stream);
  CHECK(result.data()[0] == XXH64(host.data() + 3, block, seed));
  REQUIRE(cudaMemcpy(got.data(), hashes.data(), 8, cudaMemcpyDeviceToHost) == cudaSuccess);
  CHECK(got[0] == result.data()[0]);
  lris::cuda::launch_block_checksum(dev.data(), 1000, seed, block, nullptr, result.data(),
                                    stream.native());
  be.synchronize(stream);
  CHECK(result.data()[0] == XXH64(host.data() + 3, 1000, seed));
}

TEST_CASE("device block checksum of pinned host memory (read over PCIe)", "[cuda][checksum]") {
  cuda_backend be;
  auto stream = be.make_stream();
  const std::size_t n = (std::size_t{3} << 20) + 5;
  const auto host = random_bytes(n + 1, 31);
  pinned_bytes pinned(n + 1);
  std::memcpy(pinned.data(), host.data(), n + 1);
  for (const std::size_t block : {std::size_t{65536}, std::size_t{1} << 20}) {
    for (const std::size_t offset : {0, 1}) {
      CAPTURE(block, offset);
      CHECK(lris::cuda::block_checksum(pinned.data() + offset, n - offset, 5, block,
                                       stream.native()) ==
            lris::block_checksum(host.data() + offset, n - offset, 5, block));
    }
  }
}

TEST_CASE("device block checksum: empty input and invalid arguments", "[cuda][checksum]") {
  cuda_backend be;
  auto stream = be.make_stream();
  const unsigned char none = 0;
  CHECK(lris::cuda::block_checksum(nullptr, 0, 3) == XXH64(&none, 0, 3));
  CHECK(lris::cuda::block_checksum(nullptr, 0, 0, 4096, stream.native()) == 0xEF46DB3751D8E999ull);

  device_words scratch(16);
  try {
    (void)lris::cuda::block_checksum(scratch.data(), 64, 0, 1000);
    FAIL("accepted block size 1000");
  } catch (const lris::invalid_argument& e) {
    CHECK_THAT(std::string(e.what()), Catch::Contains("1000"));
  }
  CHECK_THROWS_AS(lris::cuda::block_checksum(scratch.data(), 64, 0, 2048), lris::invalid_argument);
  CHECK_THROWS_AS(lris::cuda::block_checksum(nullptr, 64), lris::invalid_argument);
  CHECK_THROWS_AS(lris::cuda::launch_block_checksum(scratch.data(), 64, 0, 4096, nullptr, nullptr,
                                                    stream.native()),
                  lris::invalid_argument);
  try {
    // 3 blocks of 4 KiB need the block-hash array.
    lris::cuda::launch_block_checksum(scratch.data(), 3 * 4096, 0, 4096, nullptr,
                                      scratch.data() + 8, stream.native());
    FAIL("accepted a null block_hashes for 3 blocks");
  } catch (const lris::invalid_argument& e) {
    CHECK_THAT(std::string(e.what()), Catch::Contains("block_hashes"));
  }
  be.synchronize(stream);
}

// ---- benchmark -----------------------------------------------------------------------------

namespace {

// The read bound: XOR of every 16-byte word, four loads in flight per thread, in PTX because
// this test is not compiled by nvcc; the store, taken only if the XOR hits one value, keeps the
// loads from being optimized away.
constexpr const char* read_bound_ptx = R"(
.version 7.0
.target sm_80
.address_size 64
.visible .entry lris_read_bound(.param .u64 data, .param .u64 n16, .param .u64 out)
{
  .reg .pred %p<4>;
  .reg .b32 %r<32>;
  .reg .b64 %rd<20>;
  ld.param.u64 %rd1, [data];
  ld.param.u64 %rd2, [n16];
  ld.param.u64 %rd3, [out];
  cvta.to.global.u64 %rd1, %rd1;
  cvta.to.global.u64 %rd3, %rd3;
  mov.u32 %r1, %ctaid.x;
  mov.u32 %r2, %ntid.x;
  mov.u32 %r3, %tid.x;
  mov.u32 %r4, %nctaid.x;
  mul.wide.u32 %rd4, %r1, %r2;
  cvt.u64.u32 %rd5, %r3;
  add.u64 %rd4, %rd4, %rd5;
  mul.wide.u32 %rd6, %r4, %r2;
  shl.b64 %rd7, %rd6, 4;
  mul.lo.u64 %rd8, %rd6, 3;
  shl.b64 %rd15, %rd6, 2;
  mov.b32 %r10, 0;
  mov.b32 %r11, 0;
  mov.b32 %r12, 0;
  mov.b32 %r13, 0;
LOOP4:
  add.u64 %rd9, %rd4, %rd8;
  setp.ge.u64 %p1, %rd9, %rd2;
  @%p1 bra TAIL;
  shl.b64 %rd10, %rd4, 4;
  add.u64 %rd11, %rd1, %rd10;
  add.u64 %rd12, %rd11, %rd7;
  add.u64 %rd13, %rd12, %rd7;
  add.u64 %rd14, %rd13, %rd7;
  ld.global.cs.v4.u32 {%r14, %r15, %r16, %r17}, [%rd11];
  ld.global.cs.v4.u32 {%r18, %r19, %r20, %r21}, [%rd12];
  ld.global.cs.v4.u32 {%r22, %r23, %r24, %r25}, [%rd13];
  ld.global.cs.v4.u32 {%r26, %r27, %r28, %r29}, [%rd14];
  xor.b32 %r10, %r10, %r14;
  xor.b32 %r11, %r11, %r15;
  xor.b32 %r12, %r12, %r16;
  xor.b32 %r13, %r13, %r17;
  xor.b32 %r10, %r10, %r18;
  xor.b32 %r11, %r11, %r19;
  xor.b32 %r12, %r12, %r20;
  xor.b32 %r13, %r13, %r21;
  xor.b32 %r10, %r10, %r22;
  xor.b32 %r11, %r11, %r23;
  xor.b32 %r12, %r12, %r24;
  xor.b32 %r13, %r13, %r25;
  xor.b32 %r10, %r10, %r26;
  xor.b32 %r11, %r11, %r27;
  xor.b32 %r12, %r12, %r28;
  xor.b32 %r13, %r13, %r29;
  add.u64 %rd4, %rd4, %rd15;
  bra.uni LOOP4;
TAIL:
  setp.ge.u64 %p2, %rd4, %rd2;
  @%p2 bra DONE;
  shl.b64 %rd10, %rd4, 4;
  add.u64 %rd11, %rd1, %rd10;
  ld.global.cs.v4.u32 {%r14, %r15, %r16, %r17}, [%rd11];
  xor.b32 %r10, %r10, %r14;
  xor.b32 %r11, %r11, %r15;
  xor.b32 %r12, %r12, %r16;
  xor.b32 %r13, %r13, %r17;
  add.u64 %rd4, %rd4, %rd6;
  bra.uni TAIL;
DONE:
  xor.b32 %r30, %r10, %r11;
  xor.b32 %r30, %r30, %r12;
  xor.b32 %r30, %r30, %r13;
  setp.ne.u32 %p3, %r30, 1592595029;
  @%p3 bra END;
  st.global.u32 [%rd3], %r30;
END:
  ret;
}
)";

// Median milliseconds of `reps` runs of `fn` on `stream`, after two warm-up runs.
template <class Fn>
double median_ms(cudaStream_t stream, Fn&& fn, int reps = 10) {
  cudaEvent_t start = nullptr, stop = nullptr;
  REQUIRE(cudaEventCreate(&start) == cudaSuccess);
  REQUIRE(cudaEventCreate(&stop) == cudaSuccess);
  fn();
  fn();
  std::vector<float> ms;
  for (int i = 0; i < reps; ++i) {
    REQUIRE(cudaEventRecord(start, stream) == cudaSuccess);
    fn();
    REQUIRE(cudaEventRecord(stop, stream) == cudaSuccess);
    REQUIRE(cudaEventSynchronize(stop) == cudaSuccess);
    float t = 0;
    REQUIRE(cudaEventElapsedTime(&t, start, stop) == cudaSuccess);
    ms.push_back(t);
  }
  (void)cudaEventDestroy(start);
  (void)cudaEventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

TEST_CASE("device block checksum: 4 GiB against the read bandwidth", "[cuda][checksum][.bench]") {
  const std::size_t n = std::size_t{4} << 30;
  const std::size_t block = lris::default_checksum_block;
  const std::uint64_t seed = 0x5EED;
  cuda_backend be;
  auto stream = be.make_stream();
  const auto s = static_cast<cudaStream_t>(stream.native());
  int device = 0, sms = 0;
  REQUIRE(cudaGetDevice(&device) == cudaSuccess);
  REQUIRE(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) == cudaSuccess);
  cudaDeviceProp prop{};
  REQUIRE(cudaGetDeviceProperties(&prop, device) == cudaSuccess);

  // Random bytes (splitmix64 of the word index, filled on all cores), 16 more for offset 1.
  const std::size_t words = (n + 16) / 8;
  std::unique_ptr<std::uint64_t[]> host(new std::uint64_t[words]);
  const auto pool_owner = lris::detail::default_thread_pool();
  auto& pool = *pool_owner;
  const std::size_t piece = std::size_t{1} << 22;
  lris::detail::parallel_for(pool, (words + piece - 1) / piece, pool.size(), [&](std::size_t p) {
    for (std::size_t i = p * piece; i < std::min(words, (p + 1) * piece); ++i) {
      std::uint64_t z = (i + 1) * 0x9E3779B97F4A7C15ull;
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      host[i] = z ^ (z >> 31);
    }
  });
  device_bytes dev(words * 8);
  REQUIRE(cudaMemcpy(dev.data(), host.get(), words * 8, cudaMemcpyHostToDevice) == cudaSuccess);
  const auto* bytes = reinterpret_cast<const unsigned char*>(host.get());

  const auto t0 = std::chrono::steady_clock::now();
  const std::uint64_t want = lris::block_checksum(bytes, n, seed, block);
  const double host_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::uint64_t want1 = lris::block_checksum(bytes + 1, n, seed, block);
  CHECK(lris::cuda::block_checksum(dev.data(), n, seed, block, s) == want);
  CHECK(lris::cuda::block_checksum(dev.data() + 1, n, seed, block, s) == want1);

  device_words scratch(lris::cuda::checksum_block_count(n, block) + 1);
  const double ck_ms = median_ms(s, [&] {
    lris::cuda::launch_block_checksum(dev.data(), n, seed, block, scratch.data() + 1,
                                      scratch.data(), s);
  });
  const double ck1_ms = median_ms(s, [&] {
    lris::cuda::launch_block_checksum(dev.data() + 1, n, seed, block, scratch.data() + 1,
                                      scratch.data(), s);
  });
  std::uint64_t last = 0;
  REQUIRE(cudaMemcpy(&last, scratch.data(), 8, cudaMemcpyDeviceToHost) == cudaSuccess);
  CHECK(last == want1);

  // Bound 1: the best of a few grid shapes of a 16-byte-load read kernel over the same bytes.
  cudaLibrary_t library = nullptr;
  cudaKernel_t read_kernel = nullptr;
  double read_gbs = 0;
  if (cudaLibraryLoadData(&library, read_bound_ptx, nullptr, nullptr, 0, nullptr, nullptr, 0) ==
          cudaSuccess &&
      cudaLibraryGetKernel(&read_kernel, library, "lris_read_bound") == cudaSuccess) {
    void* data = dev.data();
    std::uint64_t n16 = n / 16;
    void* out = scratch.data();
    void* args[] = {&data, &n16, &out};
    for (const unsigned threads : {256u, 512u}) {
      for (const unsigned per_sm : {4u, 8u, 16u}) {
        const double ms = median_ms(s, [&] {
          REQUIRE(cudaLaunchKernel(reinterpret_cast<const void*>(read_kernel),
                                   dim3(per_sm * static_cast<unsigned>(sms)), dim3(threads), args,
                                   0, s) == cudaSuccess);
        });
        read_gbs = std::max(read_gbs, static_cast<double>(n) / ms / 1e6);
      }
    }
    (void)cudaLibraryUnload(library);
  } else {
    (void)cudaGetLastError();
    WARN("could not load the PTX read kernel; only the copy bound is reported");
  }
  // Bound 2: a device-to-device copy, which reads n and writes n bytes.
  double copy_gbs = 0;
  {
    device_bytes target(n);
    const double ms = median_ms(s, [&] {
      REQUIRE(cudaMemcpyAsync(target.data(), dev.data(), n, cudaMemcpyDeviceToDevice, s) ==
              cudaSuccess);
    });
    copy_gbs = 2.0 * static_cast<double>(n) / ms / 1e6;
  }

  const double ck_gbs = static_cast<double>(n) / ck_ms / 1e6;
  const double ck1_gbs = static_cast<double>(n) / ck1_ms / 1e6;
  std::printf("\n%s, %d SMs: block checksum of 4 GiB (1 MiB blocks)\n", prop.name, sms);
  std::printf("  read bound (16-byte-load XOR kernel, best grid) %8.1f GB/s\n", read_gbs);
  std::printf("  D2D copy (read + write bytes)                  %8.1f GB/s\n", copy_gbs);
  const auto report = [&](const char* what, double ms, double gbs) {
    std::printf("  checksum, %-10s %6.3f ms %8.1f GB/s  ratio to read bound %.3f, to copy %.3f\n",
                what, ms, gbs, read_gbs > 0 ? gbs / read_gbs : 0.0, gbs / copy_gbs);
  };
  report("aligned", ck_ms, ck_gbs);
  report("offset 1", ck1_ms, ck1_gbs);
  std::printf("  host block_checksum (%u threads) %.2f GB/s\n", pool.size(),
              static_cast<double>(n) / host_s / 1e9);
}
