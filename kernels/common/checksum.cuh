// The LRIS block checksum on the GPU: XXH64 of every block, then XXH64 of the block hashes.
//
// Inside one block XXH64 is four sequential chains (one per accumulator; accumulator j takes
// bytes [8j, 8j+8) of every 32-byte stripe), so a block can use at most four threads: a group of
// four threads per block, adjacent groups on adjacent blocks. 4 GiB in 1 MiB blocks is then
// 16384 chains, about one warp per SM scheduler. A chain step costs two 64-bit multiplies
// (~25 cycles of dependent latency), under the ~60 cycles per 8 bytes a chain may take at full
// HBM bandwidth; what limits the speed is how many bytes are in flight. Two ways to keep them
// in flight: loads into registers, a batch ahead of the hashing (any GPU; pinned host memory;
// the final hash over the block hashes), and on sm_90 and later the bulk-copy engine streaming
// chunks into shared memory, which goes further (see block_hash_bulk_kernel).
#include "gpu/runtime.hpp"

#include <algorithm>
#include <cstdint>

#include <lris/element/checksum.hpp>

namespace lris::LRIS_GPU_NS {

namespace {

// The XXH64 specification (github.com/Cyan4973/xxHash/blob/dev/doc/xxhash_spec.md).
constexpr std::uint64_t prime1 = 0x9E3779B185EBCA87ull;
constexpr std::uint64_t prime2 = 0xC2B2AE3D27D4EB4Full;
constexpr std::uint64_t prime3 = 0x165667B19E3779F9ull;
constexpr std::uint64_t prime4 = 0x85EBCA77C2B2AE63ull;
constexpr std::uint64_t prime5 = 0x27D4EB2F165667C5ull;

constexpr unsigned threads_per_cta = 128;
constexpr unsigned lanes = 4;        // threads per block: one per accumulator
constexpr int batch = 32;            // loads a thread keeps in flight (per buffer)

// std::min is host-only in C++17 device code.
__device__ __forceinline__ std::size_t min_size(std::size_t a, std::size_t b) {
  return a < b ? a : b;
}

__device__ __forceinline__ std::uint64_t rotl(std::uint64_t x, int r) {
  return (x << r) | (x >> (64 - r));
}

__device__ __forceinline__ std::uint64_t xxh_round(std::uint64_t acc, std::uint64_t input) {
  acc += input * prime2;
  return rotl(acc, 31) * prime1;
}

__device__ __forceinline__ std::uint64_t merge_round(std::uint64_t h, std::uint64_t v) {
  return (h ^ xxh_round(0, v)) * prime1 + prime4;
}

__device__ __forceinline__ std::uint64_t avalanche(std::uint64_t h) {
  h ^= h >> 33;
  h *= prime2;
  h ^= h >> 29;
  h *= prime3;
  return h ^ (h >> 32);
}

// Byte loads: any alignment, and never a byte outside [p, p + count).
__device__ __forceinline__ std::uint64_t load_bytes(const unsigned char* p, int count) {
  std::uint64_t v = 0;
  for (int i = 0; i < count; ++i) v |= std::uint64_t{p[i]} << (8 * i);
  return v;
}

// The accumulator lane `j` starts from.
__device__ __forceinline__ std::uint64_t lane_init(unsigned j, std::uint64_t seed) {
  switch (j) {
    case 0: return seed + prime1 + prime2;
    case 1: return seed + prime2;
    case 2: return seed;
    default: return seed - prime1;
  }
}

// XXH64's end: the four accumulators after all full stripes of `len` bytes (ignored when there
// is none), then the last len % 32 bytes at `tail`, which are read byte by byte: they are at most
// 31 bytes of one block, and this way neither alignment nor the buffer's end matters.
__device__ std::uint64_t xxh64_finish(std::uint64_t v1, std::uint64_t v2, std::uint64_t v3,
                                      std::uint64_t v4, std::size_t len, std::uint64_t seed,
                                      const unsigned char* tail) {
  std::uint64_t h;
  if (len >= 32) {
    h = rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18);
    h = merge_round(h, v1);
    h = merge_round(h, v2);
    h = merge_round(h, v3);
    h = merge_round(h, v4);
  } else {
    h = seed + prime5;
  }
  h += len;
  std::size_t rest = len & 31;
  const unsigned char* p = tail;
  for (; rest >= 8; rest -= 8, p += 8) {
    h ^= xxh_round(0, load_bytes(p, 8));
    h = rotl(h, 27) * prime1 + prime4;
  }
  if (rest >= 4) {
    h ^= load_bytes(p, 4) * prime1;
    h = rotl(h, 23) * prime2 + prime3;
    rest -= 4;
    p += 4;
  }
  for (; rest > 0; --rest, ++p) {
    h ^= std::uint64_t{*p} * prime5;
    h = rotl(h, 11) * prime1;
  }
  return avalanche(h);
}

// The 8 bytes at `p`. Misaligned: the two aligned words around them, shifted together; the
// caller keeps that pair inside the buffer. The data is read once, so it bypasses L1 (a 32-byte
// sector serves one warp instruction and is never read again).
template <bool Aligned>
__device__ __forceinline__ std::uint64_t load_word(const unsigned char* p) {
  if constexpr (Aligned) {
    return gpu_rt::load_streaming(reinterpret_cast<const unsigned long long*>(p));
  } else {
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    const auto* q = reinterpret_cast<const unsigned long long*>(a & ~std::uintptr_t{7});
    const unsigned shift = static_cast<unsigned>(a & 7) * 8;  // 8..56
    return (gpu_rt::load_streaming(q) >> shift) | (gpu_rt::load_streaming(q + 1) << (64 - shift));
  }
}

// `count` rounds of one accumulator over the words at p, p + 32, p + 64, ...: one batch of loads
// is in flight while the previous batch is hashed.
template <bool Aligned>
__device__ __forceinline__ std::uint64_t hash_lane_run(const unsigned char* p, std::size_t count,
                                                       std::uint64_t acc) {
  const std::size_t batches = count / batch;
  if (batches > 0) {
    std::uint64_t cur[batch];
#pragma unroll
    for (int i = 0; i < batch; ++i) cur[i] = load_word<Aligned>(p + 32 * i);
    for (std::size_t b = 1; b < batches; ++b) {
      p += 32 * batch;
      std::uint64_t next[batch];
#pragma unroll
      for (int i = 0; i < batch; ++i) next[i] = load_word<Aligned>(p + 32 * i);
#pragma unroll
      for (int i = 0; i < batch; ++i) acc = xxh_round(acc, cur[i]);
#pragma unroll
      for (int i = 0; i < batch; ++i) cur[i] = next[i];
    }
#pragma unroll
    for (int i = 0; i < batch; ++i) acc = xxh_round(acc, cur[i]);
    p += 32 * batch;
  }
  for (std::size_t k = batches * batch; k < count; ++k, p += 32) {
    acc = xxh_round(acc, load_word<Aligned>(p));
  }
  return acc;
}

// Accumulator `lane` of a block's `stripes` full stripes; `p` is the block start plus 8 * lane.
template <bool Aligned>
__device__ __forceinline__ std::uint64_t hash_lane(const unsigned char* p, std::size_t stripes,
                                                   std::uint64_t acc) {
  if constexpr (Aligned) {
    return hash_lane_run<true>(p, stripes, acc);
  } else {
    // The aligned word pair of the first and last stripe can reach up to 7 bytes before the
    // buffer or past its end; those two stripes are read byte by byte instead.
    if (stripes == 0) return acc;
    acc = xxh_round(acc, load_bytes(p, 8));
    if (stripes == 1) return acc;
    acc = hash_lane_run<false>(p + 32, stripes - 2, acc);
    return xxh_round(acc, load_bytes(p + 32 * (stripes - 1), 8));
  }
}

// One group of four threads per block: XXH64 of block b into block_hashes[b] (when not null),
// and into *result (when not null; the launch then has one block).
template <bool Aligned>
__global__ void __launch_bounds__(threads_per_cta)
    block_hash_kernel(const unsigned char* __restrict__ data, std::size_t n, std::uint64_t seed,
                      std::size_t block, std::size_t blocks, std::uint64_t* block_hashes,
                      std::uint64_t* result) {
  const std::size_t thread = std::size_t{blockIdx.x} * blockDim.x + threadIdx.x;
  const std::size_t b = thread / lanes;
  const unsigned lane = threadIdx.x % lanes;
  // Threads past the last block still take part in the shuffles below (full warps), with
  // nothing to hash.
  const bool active = b < blocks;
  const std::size_t offset = active ? b * block : 0;
  const std::size_t len = active ? min_size(block, n - offset) : 0;
  const std::size_t stripes = len / 32;
  const unsigned char* start = data + offset;

  const std::uint64_t acc = hash_lane<Aligned>(start + 8 * lane, stripes, lane_init(lane, seed));
  const std::uint64_t v1 = LRIS_SHFL(acc, 0, lanes);
  const std::uint64_t v2 = LRIS_SHFL(acc, 1, lanes);
  const std::uint64_t v3 = LRIS_SHFL(acc, 2, lanes);
  const std::uint64_t v4 = LRIS_SHFL(acc, 3, lanes);
  if (active && lane == 0) {
    const std::uint64_t h = xxh64_finish(v1, v2, v3, v4, len, seed, start + stripes * 32);
    if (block_hashes != nullptr) block_hashes[b] = h;
    if (result != nullptr) *result = h;
  }
}

#if defined(LRIS_GPU_CUDA)  // the bulk-copy engine is NVIDIA's
// ---- Hopper: blocks streamed into shared memory by the bulk-copy engine ----------------------
//
// With loads from registers a chain can keep ~32 loads in flight, and 16384 chains then reach
// ~70% of HBM bandwidth on an H200: the SM's tracking of outstanding loads is the limit, not the
// hashing. On sm_90 the bulk-copy engine (cp.async.bulk, completing on an mbarrier) moves each
// block's next chunks into shared memory while the four threads hash the current one: one
// producer warp per CTA issues the copies, one consumer warp of 8 groups hashes. Small CTAs,
// shallow-but-many stages: 8 blocks x 6 stages x 1 KiB keeps ~50 KB in shared memory, so four
// CTAs share an SM and 4096 blocks (4 GiB) are resident at once: on an H200 the best of the
// shapes tried (8-32 blocks per CTA, 1-4 KiB chunks, 4-6 stages), ~85% of the read bandwidth.
constexpr unsigned bulk_groups = 8;    // blocks per CTA
constexpr unsigned bulk_chunk = 1024;  // bytes of each block per stage
constexpr unsigned bulk_stages = 6;
// A chunk lands 0-15 bytes into its slot when the data is not 16-byte aligned, and is copied
// with the 16-byte granules around it; the reads of the last word then reach 4 bytes further.
constexpr unsigned bulk_slot = bulk_chunk + 32;
constexpr unsigned bulk_consumers = bulk_groups * lanes;  // one warp
constexpr unsigned bulk_threads = bulk_consumers + 32;    // and one producer warp
constexpr std::size_t bulk_smem =
    std::size_t{bulk_stages} * bulk_groups * bulk_slot + 2 * bulk_stages * sizeof(std::uint64_t);
static_assert(bulk_consumers == 32, "the consumers' shuffles assume one full warp");
static_assert(bulk_chunk % 32 == 0 && bulk_slot % 16 == 0, "bulk copies move 16-byte granules");

// Device code of the bulk path exists only where the bulk-copy engine does.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define LRIS_CHECKSUM_BULK 1
#else
#define LRIS_CHECKSUM_BULK 0
#endif

#if LRIS_CHECKSUM_BULK
// One bulk copy: bytes [src, src + bytes) of the input into slot offset dst. The source is
// 16-byte aligned; `r` (data address mod 16, the same for every block since blocks are
// multiples of 4096 bytes) is where the chunk's first byte lands in the slot.
struct bulk_copy {
  std::size_t src;
  unsigned dst;
  unsigned bytes;
};

// The copy for chunk t of a block at `block_offset` whose full stripes span `stripe_bytes`
// (t * bulk_chunk < stripe_bytes). Misaligned, the granules around the chunk are copied too,
// except the one holding the block's first bytes and the one holding its last stripe's end:
// they may lie outside the buffer, so the first and last stripes are read from global memory.
__device__ __forceinline__ bulk_copy bulk_chunk_copy(std::size_t block_offset,
                                                     std::size_t stripe_bytes, std::size_t t,
                                                     unsigned r) {
  const std::size_t begin = t * bulk_chunk;
  const auto len = static_cast<unsigned>(min_size(bulk_chunk, stripe_bytes - begin));
  if (r == 0) return {block_offset + begin, 0, len};
  bulk_copy c{block_offset + begin - r, 0, len + 16};
  if (t == 0) {
    c.src += 16;
    c.dst = 16;
    c.bytes -= 16;
  }
  if (begin + len == stripe_bytes) c.bytes -= 16;
  return c;
}

// The 8 bytes at shared address p, at any alignment: three aligned 32-bit words shifted
// together. Branch-free, so that the unrolled loop can issue all its loads ahead of the hashing
// (with a branch on the alignment, misaligned 4 GiB ran at 0.58 of the read bandwidth, not 0.72).
__device__ __forceinline__ std::uint64_t load_shared(const unsigned char* p) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  const auto* q = reinterpret_cast<const unsigned*>(a & ~std::uintptr_t{3});
  const auto shift = static_cast<unsigned>(a & 3) * 8;
  const unsigned w0 = q[0], w1 = q[1], w2 = q[2];
  return std::uint64_t{__funnelshift_r(w1, w2, shift)} << 32 | __funnelshift_r(w0, w1, shift);
}

// The word of lane `lane` in stripe i of a slot whose chunk starts at slot + r.
template <bool Misaligned>
__device__ __forceinline__ std::uint64_t slot_word(const unsigned char* p, unsigned i) {
  if constexpr (Misaligned) {
    return load_shared(p + 32 * i);
  } else {
    return *reinterpret_cast<const std::uint64_t*>(p + 32 * i);
  }
}

// Lane `lane`'s rounds over chunk t of a block, from its slot. Misaligned, the block's first
// and last stripes are left out: the caller reads them from global memory.
template <bool Misaligned>
__device__ __forceinline__ std::uint64_t bulk_hash_chunk(std::uint64_t acc,
                                                         const unsigned char* slot, unsigned lane,
                                                         unsigned r, std::size_t stripe_bytes,
                                                         std::size_t t) {
  const std::size_t begin = t * bulk_chunk;
  const unsigned char* p = slot + r + 8 * lane;
  const bool whole = begin + bulk_chunk <= stripe_bytes &&
                     (!Misaligned || (t > 0 && begin + bulk_chunk < stripe_bytes));
  if (whole) {
#pragma unroll
    for (unsigned i = 0; i < bulk_chunk / 32; ++i) {
      acc = xxh_round(acc, slot_word<Misaligned>(p, i));
    }
    return acc;
  }
  const auto stripes = static_cast<unsigned>(min_size(bulk_chunk, stripe_bytes - begin) / 32);
  const unsigned first = Misaligned && t == 0 ? 1 : 0;
  const unsigned last = Misaligned && begin + 32 * stripes == stripe_bytes ? stripes - 1 : stripes;
  for (unsigned i = first; i < last; ++i) acc = xxh_round(acc, slot_word<Misaligned>(p, i));
  return acc;
}

__device__ __forceinline__ unsigned shared_address(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void mbarrier_init(std::uint64_t* bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(shared_address(bar)), "r"(count)
               : "memory");
}
__device__ __forceinline__ void mbarrier_arrive_expect_tx(std::uint64_t* bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(shared_address(bar)),
               "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void mbarrier_arrive(std::uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(shared_address(bar)) : "memory");
}
__device__ __forceinline__ void mbarrier_wait(std::uint64_t* bar, unsigned parity) {
  unsigned done = 0;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        " selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(shared_address(bar)), "r"(parity)
        : "memory");
  } while (done == 0);
}
__device__ __forceinline__ void bulk_load(void* dst, const void* src, unsigned bytes,
                                          std::uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::
          "r"(shared_address(dst)),
      "l"(src), "r"(bytes), "r"(shared_address(bar))
      : "memory");
}
#endif

// XXH64 of 8 consecutive blocks per CTA into block_hashes (sm_90 and later only).
template <bool Misaligned>
__global__ void __launch_bounds__(bulk_threads)
    block_hash_bulk_kernel(const unsigned char* __restrict__ data, std::size_t n,
                           std::uint64_t seed, std::size_t block, std::size_t blocks,
                           std::uint64_t* block_hashes) {
#if LRIS_CHECKSUM_BULK
  extern __shared__ __align__(128) unsigned char smem[];
  auto* full =
      reinterpret_cast<std::uint64_t*>(smem + std::size_t{bulk_stages} * bulk_groups * bulk_slot);
  std::uint64_t* empty = full + bulk_stages;
  const std::size_t first_block = std::size_t{blockIdx.x} * bulk_groups;
  const unsigned r =
      Misaligned ? static_cast<unsigned>(reinterpret_cast<std::uintptr_t>(data) & 15) : 0;
  const auto stripe_bytes = [&](std::size_t b) -> std::size_t {
    return b < blocks ? min_size(block, n - b * block) / 32 * 32 : 0;
  };
  // Every block but the input's last is full, so the CTA's first block has the most chunks.
  const std::size_t chunks = (stripe_bytes(first_block) + bulk_chunk - 1) / bulk_chunk;
  if (threadIdx.x == 0) {
    for (unsigned s = 0; s < bulk_stages; ++s) {
      mbarrier_init(&full[s], 1);
      mbarrier_init(&empty[s], bulk_consumers);
    }
    // Makes the initialized barriers visible to the bulk-copy engine.
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();

  if (threadIdx.x >= bulk_consumers) {
    // Producer warp: lane g copies block g's chunks; lane 0 announces the stage's bytes first.
    const unsigned g = threadIdx.x - bulk_consumers;
    for (std::size_t t = 0; t < chunks; ++t) {
      const auto s = static_cast<unsigned>(t % bulk_stages);
      const auto round = static_cast<unsigned>(t / bulk_stages);
      if (round > 0) mbarrier_wait(&empty[s], (round - 1) & 1);
      if (g == 0) {
        unsigned total = 0;
        for (unsigned k = 0; k < bulk_groups; ++k) {
          const std::size_t sb = stripe_bytes(first_block + k);
          if (t * bulk_chunk < sb) total += bulk_chunk_copy(0, sb, t, r).bytes;
        }
        mbarrier_arrive_expect_tx(&full[s], total);
      }
      __syncwarp();
      const std::size_t sb = stripe_bytes(first_block + g);
      if (g < bulk_groups && t * bulk_chunk < sb) {
        const bulk_copy c = bulk_chunk_copy((first_block + g) * block, sb, t, r);
        bulk_load(smem + (std::size_t{s} * bulk_groups + g) * bulk_slot + c.dst, data + c.src,
                  c.bytes, &full[s]);
      }
    }
    return;
  }

  const unsigned g = threadIdx.x / lanes;
  const unsigned lane = threadIdx.x % lanes;
  const std::size_t b = first_block + g;
  const bool active = b < blocks;
  const std::size_t sb = stripe_bytes(b);
  const std::size_t stripes = sb / 32;
  const unsigned char* start = data + (active ? b * block : 0);
  std::uint64_t acc = lane_init(lane, seed);
  if (Misaligned && stripes > 0) acc = xxh_round(acc, load_bytes(start + 8 * lane, 8));
  for (std::size_t t = 0; t < chunks; ++t) {
    const auto s = static_cast<unsigned>(t % bulk_stages);
    mbarrier_wait(&full[s], static_cast<unsigned>(t / bulk_stages) & 1);
    if (t * bulk_chunk < sb) {
      acc = bulk_hash_chunk<Misaligned>(
          acc, smem + (std::size_t{s} * bulk_groups + g) * bulk_slot, lane, r, sb, t);
    }
    mbarrier_arrive(&empty[s]);
  }
  if (Misaligned && stripes > 1) {
    acc = xxh_round(acc, load_bytes(start + 32 * (stripes - 1) + 8 * lane, 8));
  }
  const std::uint64_t v1 = LRIS_SHFL(acc, 0, lanes);
  const std::uint64_t v2 = LRIS_SHFL(acc, 1, lanes);
  const std::uint64_t v3 = LRIS_SHFL(acc, 2, lanes);
  const std::uint64_t v4 = LRIS_SHFL(acc, 3, lanes);
  if (active && lane == 0) {
    const std::size_t len = min_size(block, n - b * block);
    block_hashes[b] = xxh64_finish(v1, v2, v3, v4, len, seed, start + sb);
  }
#else
  // The host launches this kernel only on devices of compute capability 9.0 or later.
  __trap();
#endif
}
#endif  // LRIS_GPU_CUDA

// Queues XXH64 of each of `blocks` blocks of `block` bytes (the last one shorter) of n bytes.
void launch_hash_blocks(const unsigned char* data, std::size_t n, std::uint64_t seed,
                        std::size_t block, std::size_t blocks, std::uint64_t* block_hashes,
                        std::uint64_t* result, LRIS_GPU(Stream_t) stream) {
  // Small inputs get small CTAs, so that their few groups spread over SMs.
  const std::size_t threads = blocks * lanes;
  const auto cta = static_cast<unsigned>(
      std::min<std::size_t>(threads_per_cta, (threads + 31) / 32 * 32));
  const std::size_t grid = (threads + cta - 1) / cta;
  LRIS_EXPECTS(grid <= 0x7fffffffu,
               LRIS_GPU_PREFIX "launch_block_checksum: {} bytes in blocks of {} are too many "
               "blocks for one launch",
               n, block);
  if (reinterpret_cast<std::uintptr_t>(data) % 8 == 0) {
    block_hash_kernel<true><<<static_cast<unsigned>(grid), cta, 0, stream>>>(
        data, n, seed, block, blocks, block_hashes, result);
  } else {
    block_hash_kernel<false><<<static_cast<unsigned>(grid), cta, 0, stream>>>(
        data, n, seed, block, blocks, block_hashes, result);
  }
  LRIS_GPU_TRY(LRIS_GPU(GetLastError)());
}

// Queues the per-block hashes of an input of several blocks: through shared memory on sm_90
// and later when the input is device memory (read over PCIe, pinned host memory gains nothing
// from it), else from registers.
void launch_block_hashes(const unsigned char* data, std::size_t n, std::uint64_t seed,
                         std::size_t block, std::size_t blocks, std::uint64_t* block_hashes,
                         LRIS_GPU(Stream_t) stream) {
#if defined(LRIS_GPU_CUDA)
  int device = 0, major = 0;
  LRIS_GPU_TRY(LRIS_GPU(GetDevice)(&device));
  LRIS_GPU_TRY(LRIS_GPU(DeviceGetAttribute)(&major, gpu_rt::attr_cc_major, device));
  if (major < 9 || gpu_rt::memory_type(data) != LRIS_GPU(MemoryTypeDevice)) {
    launch_hash_blocks(data, n, seed, block, blocks, block_hashes, nullptr, stream);
    return;
  }
  const std::size_t grid = (blocks + bulk_groups - 1) / bulk_groups;
  LRIS_EXPECTS(grid <= 0x7fffffffu,
               LRIS_GPU_PREFIX "launch_block_checksum: {} bytes in blocks of {} are too many "
               "blocks for one launch",
               n, block);
  using kernel_fn = void (*)(const unsigned char*, std::size_t, std::uint64_t, std::size_t,
                             std::size_t, std::uint64_t*);
  const kernel_fn kernel = reinterpret_cast<std::uintptr_t>(data) % 16 == 0
                               ? &block_hash_bulk_kernel<false>
                               : &block_hash_bulk_kernel<true>;
  // Above the 48 KB a launch gets without asking; cheap enough to set on every launch, which
  // also covers every device of the process.
  LRIS_GPU_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(bulk_smem)));
  kernel<<<static_cast<unsigned>(grid), bulk_threads, bulk_smem, stream>>>(data, n, seed, block,
                                                                          blocks, block_hashes);
  LRIS_GPU_TRY(LRIS_GPU(GetLastError)());
#else
  launch_hash_blocks(data, n, seed, block, blocks, block_hashes, nullptr, stream);
#endif
}

}  // namespace

void launch_block_checksum(const void* device_data, std::size_t n, std::uint64_t seed,
                           std::size_t block, std::uint64_t* block_hashes, std::uint64_t* result,
                           void* stream) {
  lris::detail::check_checksum_block(LRIS_GPU_PREFIX "launch_block_checksum", block);
  LRIS_EXPECTS(device_data != nullptr || n == 0,
               LRIS_GPU_PREFIX "launch_block_checksum: device_data is null but n is {} bytes", n);
  LRIS_EXPECTS(result != nullptr, LRIS_GPU_PREFIX "launch_block_checksum: result is null");
  const std::size_t blocks = checksum_block_count(n, block);
  LRIS_EXPECTS(block_hashes != nullptr || blocks <= 1,
               LRIS_GPU_PREFIX "launch_block_checksum: block_hashes is null but {} bytes in "
               "blocks of {} need {} entries",
               n, block, blocks);
  const auto s = static_cast<LRIS_GPU(Stream_t)>(stream);
  const auto* bytes = static_cast<const unsigned char*>(device_data);
  if (blocks <= 1) {
    // Plain XXH64 of the whole input (empty included), straight into *result.
    launch_hash_blocks(bytes, n, seed, block, 1, n == 0 ? nullptr : block_hashes, result, s);
    return;
  }
  launch_block_hashes(bytes, n, seed, block, blocks, block_hashes, s);
  // The final XXH64 over the block hashes is the same kernel with one group: four chains of
  // blocks / 4 steps each, ~15 us for 4096 blocks (4 GiB), against ~1 ms for the blocks.
  const std::size_t hash_bytes = blocks * sizeof(std::uint64_t);
  launch_hash_blocks(reinterpret_cast<const unsigned char*>(block_hashes), hash_bytes, seed,
                     hash_bytes, 1, nullptr, result, s);
}

std::uint64_t block_checksum(const void* device_data, std::size_t n, std::uint64_t seed,
                             std::size_t block, void* stream) {
  lris::detail::check_checksum_block(LRIS_GPU_PREFIX "block_checksum", block);
  LRIS_EXPECTS(device_data != nullptr || n == 0,
               LRIS_GPU_PREFIX "block_checksum: device_data is null but n is {} bytes", n);
  const auto s = static_cast<LRIS_GPU(Stream_t)>(stream);
  const std::size_t blocks = checksum_block_count(n, block);
  const std::size_t bytes = (blocks + 1) * sizeof(std::uint64_t);

  int device = 0, pools = 0;
  LRIS_GPU_TRY(LRIS_GPU(GetDevice)(&device));
  LRIS_GPU_TRY(LRIS_GPU(DeviceGetAttribute)(&pools, gpu_rt::attr_memory_pools, device));
  // Stream-ordered allocation avoids the device-wide synchronization of Malloc/Free.
  struct scratch_guard {
    void* p = nullptr;
    LRIS_GPU(Stream_t) s;
    bool pooled;
    ~scratch_guard() {
      if (p != nullptr) (void)(pooled ? LRIS_GPU(FreeAsync)(p, s) : LRIS_GPU(Free)(p));
    }
  } scratch{nullptr, s, pools != 0};
  if (scratch.pooled) {
    LRIS_GPU_TRY(LRIS_GPU(MallocAsync)(&scratch.p, bytes, s));
  } else {
    LRIS_GPU_TRY(LRIS_GPU(Malloc)(&scratch.p, bytes));
  }
  auto* result = static_cast<std::uint64_t*>(scratch.p);
  launch_block_checksum(device_data, n, seed, block, blocks > 1 ? result + 1 : nullptr, result,
                        stream);
  std::uint64_t value = 0;
  LRIS_GPU_TRY(
      LRIS_GPU(MemcpyAsync)(&value, result, sizeof value, LRIS_GPU(MemcpyDeviceToHost), s));
  LRIS_GPU_TRY(LRIS_GPU(StreamSynchronize)(s));
  return value;
}

}  // namespace lris::LRIS_GPU_NS
