// lris::block_checksum: plain XXH64 up to one block, XXH64 of the little-endian block hashes
// beyond; the multi-threaded result equals a single-threaded reference; bad arguments are
// rejected with messages that name them.
#include <catch2/catch.hpp>

#include "support/random_bytes.hpp"

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <xxhash.h>

#include <lris/error.hpp>
#include <lris/element/checksum.hpp>

namespace {

std::vector<unsigned char> random_bytes(std::size_t n, std::uint64_t seed) {
  return lris::test::random_bytes<unsigned char>(n, seed);
}

// The definition, written out with nothing but sequential XXH64 calls.
std::uint64_t reference(const unsigned char* p, std::size_t n, std::uint64_t seed,
                        std::size_t block) {
  if (n <= block) return XXH64(p, n, seed);
  std::vector<unsigned char> hashes;
  for (std::size_t off = 0; off < n; off += block) {
    std::uint64_t h = XXH64(p + off, std::min(block, n - off), seed);
    for (int b = 0; b < 8; ++b, h >>= 8) hashes.push_back(static_cast<unsigned char>(h));
  }
  return XXH64(hashes.data(), hashes.size(), seed);
}

const std::uint64_t seeds[] = {0, 1, 0x9E3779B97F4A7C15ull, ~std::uint64_t{0}};

}  // namespace

TEST_CASE("block checksum: up to one block it is plain XXH64", "[formats][checksum]") {
  const auto data = random_bytes((1 << 20) + 64, 1);
  for (const std::uint64_t seed : seeds) {
    for (const std::size_t n : {0, 1, 3, 4, 7, 8, 31, 32, 33, 63, 64, 100, 4095, 4096}) {
      for (const std::size_t offset : {0, 1, 3, 8}) {
        CAPTURE(seed, n, offset);
        const unsigned char* p = data.data() + offset;
        CHECK(lris::block_checksum(p, n, seed, 4096) == XXH64(p, n, seed));
      }
    }
    // Default block: 1 MiB exactly is still one block.
    CHECK(lris::block_checksum(data.data(), 1 << 20, seed) == XXH64(data.data(), 1 << 20, seed));
    CHECK(lris::block_checksum(data.data(), 12345, seed) == XXH64(data.data(), 12345, seed));
  }
}

TEST_CASE("block checksum: empty input, also from a null pointer", "[formats][checksum]") {
  for (const std::uint64_t seed : seeds) {
    CAPTURE(seed);
    const unsigned char byte = 0;
    CHECK(lris::block_checksum(nullptr, 0, seed) == XXH64(&byte, 0, seed));
    CHECK(lris::block_checksum(&byte, 0, seed, 8192) == XXH64(&byte, 0, seed));
  }
  // The known value of XXH64 of nothing with seed 0.
  CHECK(lris::block_checksum(nullptr, 0) == 0xEF46DB3751D8E999ull);
}

TEST_CASE("block checksum: beyond one block, XXH64 of the block hashes", "[formats][checksum]") {
  const auto data = random_bytes((5 << 20) + 64, 2);
  for (const std::size_t block : {std::size_t{4096}, std::size_t{65536}, std::size_t{1} << 20}) {
    for (const std::uint64_t seed : seeds) {
      const std::size_t sizes[] = {block + 1, 2 * block, 2 * block + 31, 3 * block + 4095,
                                   4 * block, 5 * block - 1, (5 << 20) + 3};
      for (const std::size_t n : sizes) {
        for (const std::size_t offset : {0, 3}) {
          CAPTURE(block, seed, n, offset);
          const unsigned char* p = data.data() + offset;
          const std::uint64_t got = lris::block_checksum(p, n, seed, block);
          CHECK(got == reference(p, n, seed, block));
          CHECK(got != XXH64(p, n, seed));
        }
      }
    }
  }
}

TEST_CASE("block checksum: the block size and the seed change the value",
          "[formats][checksum]") {
  const auto data = random_bytes(1 << 20, 3);
  const std::uint64_t a = lris::block_checksum(data.data(), data.size(), 0, 4096);
  CHECK(a != lris::block_checksum(data.data(), data.size(), 0, 8192));
  CHECK(a != lris::block_checksum(data.data(), data.size(), 1, 4096));
  // One flipped bit anywhere changes the value.
  auto copy = data;
  copy[700000] ^= 0x10;
  CHECK(a != lris::block_checksum(copy.data(), copy.size(), 0, 4096));
}

TEST_CASE("block checksum: 100 MiB on many threads equals a single-threaded reference",
          "[formats][checksum]") {
  const std::size_t n = (std::size_t{100} << 20) + 17;
  const auto data = random_bytes(n, 4);
  for (const std::size_t block : {lris::default_checksum_block, std::size_t{4096}}) {
    CAPTURE(block);
    const std::uint64_t seed = 0xC0FFEE;
    const std::uint64_t want = reference(data.data(), n, seed, block);
    CHECK(lris::block_checksum(data.data(), n, seed, block) == want);
    // Repeated: a race between the threads would show as a different value.
    CHECK(lris::block_checksum(data.data(), n, seed, block) == want);
  }
}

TEST_CASE("block checksum: invalid arguments are rejected with messages",
          "[formats][checksum]") {
  const auto data = random_bytes(1 << 16, 5);
  for (const std::size_t block : {std::size_t{0}, std::size_t{1}, std::size_t{2048},
                                  std::size_t{4095}, std::size_t{4097}, std::size_t{12288},
                                  (std::size_t{1} << 20) + 4096}) {
    CAPTURE(block);
    try {
      (void)lris::block_checksum(data.data(), data.size(), 0, block);
      FAIL("accepted block size " << block);
    } catch (const lris::invalid_argument& e) {
      const std::string what = e.what();
      CHECK_THAT(what, Catch::Contains(std::to_string(block)));
      CHECK_THAT(what, Catch::Contains("power of two"));
    }
  }
  try {
    (void)lris::block_checksum(nullptr, 10);
    FAIL("accepted a null pointer with 10 bytes");
  } catch (const lris::invalid_argument& e) {
    const std::string what = e.what();
    CHECK_THAT(what, Catch::Contains("null"));
    CHECK_THAT(what, Catch::Contains("10 bytes"));
  }
  // An invalid block size is rejected even where it would not be used.
  CHECK_THROWS_AS(lris::block_checksum(data.data(), 10, 0, 100), lris::invalid_argument);
  CHECK_THROWS_AS(lris::block_checksum(nullptr, 0, 0, 100), lris::invalid_argument);
}
