#include <lris/element/checksum.hpp>

#include <algorithm>
#include <bit>
#include <vector>

#include <xxhash.h>

#include <lris/detail/thread_pool.hpp>
#include <lris/error.hpp>

namespace lris {

namespace detail {
void check_checksum_block(const char* who, std::size_t block) {
  LRIS_EXPECTS(std::has_single_bit(block) && block >= min_checksum_block,
               "{}: checksum block size {} is not a power of two of at least {} bytes", who,
               block, min_checksum_block);
}
}  // namespace detail

namespace {

// Handing a piece to another thread costs microseconds; one piece is hashed in about a
// millisecond (XXH64 runs at several GB/s per core), so pieces this big keep that overhead small
// while 100 MiB still spreads over a dozen threads.
constexpr std::size_t min_piece_bytes = std::size_t{4} << 20;

}  // namespace

std::uint64_t block_checksum(const void* data, std::size_t n, std::uint64_t seed,
                             std::size_t block) {
  detail::check_checksum_block("block_checksum", block);
  LRIS_EXPECTS(data != nullptr || n == 0, "block_checksum: data is null but n is {} bytes", n);
  if (n <= block) {
    // libxxhash accepts (nullptr, 0), but an empty span of a real buffer says the same thing
    // without relying on it.
    static constexpr unsigned char empty = 0;
    return XXH64(n == 0 ? &empty : data, n, seed);
  }

  const auto* bytes = static_cast<const unsigned char*>(data);
  const std::size_t blocks = (n - 1) / block + 1;
  std::vector<std::uint64_t> hashes(blocks);
  const auto hash_blocks = [&](std::size_t first, std::size_t last) {
    for (std::size_t i = first; i < last; ++i) {
      const std::size_t off = i * block;
      std::uint64_t h = XXH64(bytes + off, std::min(block, n - off), seed);
      // The definition hashes the little-endian encoding; the host may not be little-endian.
      if constexpr (std::endian::native == std::endian::big) h = __builtin_bswap64(h);
      hashes[i] = h;
    }
  };

  const std::size_t per_piece = std::max<std::size_t>(1, min_piece_bytes / block);
  const std::size_t pieces = (blocks - 1) / per_piece + 1;
  const auto pool_owner = detail::default_thread_pool();
  auto& pool = *pool_owner;
  if (pieces == 1 || pool.size() <= 1) {
    hash_blocks(0, blocks);
  } else {
    // One thread per core: the caller takes part, so it counts as one of them.
    detail::parallel_for(pool, pieces, pool.size(), [&](std::size_t p) {
      hash_blocks(p * per_piece, std::min(blocks, (p + 1) * per_piece));
    });
  }
  return XXH64(hashes.data(), blocks * sizeof(std::uint64_t), seed);
}

std::uint64_t combine_block_hashes(const std::uint64_t* hashes, std::size_t blocks,
                                   std::uint64_t seed) {
  LRIS_EXPECTS(blocks > 0 && hashes != nullptr, "combine_block_hashes: no block hashes");
  if (blocks == 1) return hashes[0];
  if constexpr (std::endian::native == std::endian::big) {
    std::vector<std::uint64_t> le(hashes, hashes + blocks);
    for (auto& h : le) h = __builtin_bswap64(h);
    return XXH64(le.data(), blocks * sizeof(std::uint64_t), seed);
  }
  return XXH64(hashes, blocks * sizeof(std::uint64_t), seed);
}

std::uint64_t block_hash(const void* data, std::size_t n, std::uint64_t seed) {
  static const unsigned char empty = 0;
  return XXH64(n == 0 ? &empty : data, n, seed);
}

}  // namespace lris
