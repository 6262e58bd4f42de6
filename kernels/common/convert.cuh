// Element type conversion fused with a copy. The conversion itself is the host reference in
// lris/element/dtype_convert.hpp compiled for the device, so GPU and CPU agree bit for bit; this
// file only moves the bytes. The work is memory-bound: each thread converts groups of elements
// that fill whole 16-byte loads and stores, which needs both buffers 16-byte aligned after the
// same number of head elements; other alignments take a per-element path.
#include "gpu/runtime.hpp"
#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <lris/error.hpp>
#include <lris/element/convert.hpp>
#include <lris/element/dtype_convert.hpp>

namespace lris::LRIS_GPU_NS {

namespace {

constexpr unsigned threads_per_block = 256;
// 2048 resident threads per SM on sm_80/sm_90: a full wave, every thread in a grid-stride loop.
constexpr unsigned blocks_per_sm = 2048 / threads_per_block;

// One conversion: the storage types of an element on each side (unsigned integers of the
// element's width, so that byte-wise loads can assemble them) and the reference function.
struct f32_to_bf16 {
  using from_t = std::uint32_t;
  using to_t = std::uint16_t;
  __device__ static to_t apply(from_t x) { return float_to_bf16(lris::detail::float_from_bits(x)); }
};
struct bf16_to_f32 {
  using from_t = std::uint16_t;
  using to_t = std::uint32_t;
  __device__ static to_t apply(from_t x) { return lris::detail::float_bits(bf16_to_float(x)); }
};
struct f32_to_f16 {
  using from_t = std::uint32_t;
  using to_t = std::uint16_t;
  __device__ static to_t apply(from_t x) { return float_to_f16(lris::detail::float_from_bits(x)); }
};
struct f16_to_f32 {
  using from_t = std::uint16_t;
  using to_t = std::uint32_t;
  __device__ static to_t apply(from_t x) { return lris::detail::float_bits(f16_to_float(x)); }
};
struct e4m3_to_bf16 {
  using from_t = std::uint8_t;
  using to_t = std::uint16_t;
  __device__ static to_t apply(from_t x) { return f8_e4m3_to_bf16(x); }
};
struct e4m3_to_f16 {
  using from_t = std::uint8_t;
  using to_t = std::uint16_t;
  __device__ static to_t apply(from_t x) { return f8_e4m3_to_f16(x); }
};
struct e4m3_to_f32 {
  using from_t = std::uint8_t;
  using to_t = std::uint32_t;
  __device__ static to_t apply(from_t x) { return lris::detail::float_bits(f8_e4m3_to_float(x)); }
};
struct e5m2_to_bf16 {
  using from_t = std::uint8_t;
  using to_t = std::uint16_t;
  __device__ static to_t apply(from_t x) { return f8_e5m2_to_bf16(x); }
};
struct e5m2_to_f16 {
  using from_t = std::uint8_t;
  using to_t = std::uint16_t;
  __device__ static to_t apply(from_t x) { return f8_e5m2_to_f16(x); }
};
struct e5m2_to_f32 {
  using from_t = std::uint8_t;
  using to_t = std::uint32_t;
  __device__ static to_t apply(from_t x) { return lris::detail::float_bits(f8_e5m2_to_float(x)); }
};

// How elements are reached. `vector`: 16-byte groups between scalar head and tail elements;
// `element`: one naturally aligned access per element; `bytes`: a buffer that is not even
// aligned to its element size (a tensor at an odd offset of a mapped file) is read or written
// byte by byte, since a wider access there would fault.
enum class access { vector, element, bytes };

template <class T, bool Bytes>
__device__ T load(const unsigned char* p) {
  if constexpr (Bytes) {
    T v = 0;
#pragma unroll
    for (unsigned k = 0; k < sizeof(T); ++k) v |= static_cast<T>(static_cast<T>(p[k]) << (8 * k));
    return v;
  } else {
    return *reinterpret_cast<const T*>(p);
  }
}

template <class T, bool Bytes>
__device__ void store(unsigned char* p, T v) {
  if constexpr (Bytes) {
#pragma unroll
    for (unsigned k = 0; k < sizeof(T); ++k) p[k] = static_cast<unsigned char>(v >> (8 * k));
  } else {
    *reinterpret_cast<T*>(p) = v;
  }
}

template <class Op, bool Bytes>
__device__ void convert_one(const unsigned char* src, unsigned char* dst, std::size_t i) {
  using from_t = typename Op::from_t;
  using to_t = typename Op::to_t;
  store<to_t, Bytes>(dst + i * sizeof(to_t),
                     Op::apply(load<from_t, Bytes>(src + i * sizeof(from_t))));
}

/// Elements per 16-byte group: as many as fill one 16-byte access on the narrower side.
template <class Op>
constexpr std::size_t group_elements = 16 / (sizeof(typename Op::from_t) < sizeof(typename Op::to_t)
                                                 ? sizeof(typename Op::from_t)
                                                 : sizeof(typename Op::to_t));

// Groups i, i + stride, ... (n of them): every load first, then conversions and stores.
template <class Op, unsigned N>
__device__ void convert_groups(const uint4* __restrict__ sv, uint4* __restrict__ dv, std::size_t i,
                               std::size_t stride) {
  using from_t = typename Op::from_t;
  using to_t = typename Op::to_t;
  constexpr std::size_t g = group_elements<Op>;
  constexpr std::size_t loads = g * sizeof(from_t) / 16;
  constexpr std::size_t stores = g * sizeof(to_t) / 16;
  uint4 in[N][loads];
#pragma unroll
  for (unsigned n = 0; n < N; ++n) {
#pragma unroll
    for (std::size_t l = 0; l < loads; ++l) in[n][l] = sv[(i + n * stride) * loads + l];
  }
#pragma unroll
  for (unsigned n = 0; n < N; ++n) {
    // memcpy between registers: the compiler reinterprets in place, with no aliasing UB.
    from_t x[g];
    std::memcpy(x, in[n], sizeof x);
    to_t y[g];
#pragma unroll
    for (std::size_t k = 0; k < g; ++k) y[k] = Op::apply(x[k]);
    uint4 out[stores];
    std::memcpy(out, y, sizeof out);
#pragma unroll
    for (std::size_t s = 0; s < stores; ++s) dv[(i + n * stride) * stores + s] = out[s];
  }
}

// `head` elements first (vector mode: those before both buffers reach 16-byte alignment), then
// whole groups, then the tail. Scalar modes pass head = count.
template <class Op, access A>
__global__ void __launch_bounds__(threads_per_block)
    convert_kernel(const unsigned char* __restrict__ src, unsigned char* __restrict__ dst,
                   std::size_t count, std::size_t head) {
  using from_t = typename Op::from_t;
  using to_t = typename Op::to_t;
  const std::size_t tid = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  if constexpr (A != access::vector) {
    for (std::size_t i = tid; i < count; i += stride) {
      convert_one<Op, A == access::bytes>(src, dst, i);
    }
  } else {
    constexpr std::size_t g = group_elements<Op>;
    constexpr std::size_t loads = g * sizeof(from_t) / 16;
    const std::size_t groups = (count - head) / g;
    const std::size_t tail = head + groups * g;
    if (tid < head) convert_one<Op, false>(src, dst, tid);
    if (tail + tid < count) convert_one<Op, false>(src, dst, tail + tid);
    const auto* sv = reinterpret_cast<const uint4*>(src + head * sizeof(from_t));
    auto* dv = reinterpret_cast<uint4*>(dst + head * sizeof(to_t));
    // Loads of several groups are issued before the first conversion: with one 16-byte load
    // per thread in flight a full GPU holds too few bytes in flight to cover HBM latency.
    constexpr unsigned unroll = loads >= 4 ? 1 : 4 / static_cast<unsigned>(loads);
    std::size_t i = tid;
    for (; i + (unroll - 1) * stride < groups; i += unroll * stride) {
      convert_groups<Op, unroll>(sv, dv, i, stride);
    }
    for (; i < groups; i += stride) convert_groups<Op, 1>(sv, dv, i, stride);
  }
}

template <class Op>
void launch(const void* src, void* dst, std::size_t count, LRIS_GPU(Stream_t) stream) {
  using from_t = typename Op::from_t;
  using to_t = typename Op::to_t;
  constexpr std::size_t g = group_elements<Op>;
  const auto s = reinterpret_cast<std::uintptr_t>(src);
  const auto d = reinterpret_cast<std::uintptr_t>(dst);

  // The smallest head after which both pointers are 16-byte aligned, if there is one (there is
  // none when the misalignments differ in elements, e.g. src at +4 bytes and dst at +0).
  std::size_t head = count;
  access mode =
      (s % sizeof(from_t) == 0 && d % sizeof(to_t) == 0) ? access::element : access::bytes;
  if (mode == access::element) {
    for (std::size_t h = 0; h < g; ++h) {
      if ((s + h * sizeof(from_t)) % 16 == 0 && (d + h * sizeof(to_t)) % 16 == 0) {
        if (h + g <= count) {
          head = h;
          mode = access::vector;
        }
        break;
      }
    }
  }

  int device = 0, sms = 0;
  LRIS_GPU_TRY(LRIS_GPU(GetDevice)(&device));
  LRIS_GPU_TRY(LRIS_GPU(DeviceGetAttribute)(&sms, gpu_rt::attr_multiprocessors, device));
  // Vector mode: one thread per group, plus enough for the < g head and tail elements.
  const std::size_t work = mode == access::vector ? std::max((count - head) / g, g) : count;
  const std::size_t blocks =
      std::min<std::size_t>((work + threads_per_block - 1) / threads_per_block,
                            static_cast<std::size_t>(sms) * blocks_per_sm);
  const auto* sb = static_cast<const unsigned char*>(src);
  auto* db = static_cast<unsigned char*>(dst);
  const dim3 grid(static_cast<unsigned>(blocks));
  switch (mode) {
    case access::vector:
      convert_kernel<Op, access::vector>
          <<<grid, threads_per_block, 0, stream>>>(sb, db, count, head);
      break;
    case access::element:
      convert_kernel<Op, access::element>
          <<<grid, threads_per_block, 0, stream>>>(sb, db, count, count);
      break;
    case access::bytes:
      convert_kernel<Op, access::bytes>
          <<<grid, threads_per_block, 0, stream>>>(sb, db, count, count);
      break;
  }
  LRIS_GPU_TRY(LRIS_GPU(GetLastError)());
}

[[nodiscard]] constexpr bool overlaps(std::uintptr_t a, std::size_t a_bytes, std::uintptr_t b,
                                      std::size_t b_bytes) noexcept {
  return a < b + b_bytes && b < a + a_bytes;
}

}  // namespace

bool can_convert(dtype from, dtype to) noexcept { return lris::can_convert(from, to); }

void launch_convert(const void* src, dtype from, void* dst, dtype to, std::size_t count,
                    void* stream) {
  if (!lris::can_convert(from, to)) {
    throw unsupported(fmt::format(
        "launch_convert: no GPU conversion from {} to {} (supported: F32 <-> BF16, F32 <-> F16, "
        "F8_E4M3 or F8_E5M2 -> BF16, F16 or F32, and any dtype to itself)",
        to_string(from), to_string(to)));
  }
  if (count == 0) return;
  LRIS_EXPECTS(src != nullptr && dst != nullptr,
               "launch_convert: null buffer (src {}, dst {}) for {} elements {} -> {}",
               fmt::ptr(src), fmt::ptr(dst), count, to_string(from), to_string(to));
  const std::size_t widest = std::max(bits_of(from), bits_of(to));
  LRIS_EXPECTS(count <= std::numeric_limits<std::size_t>::max() / widest,
               "launch_convert: {} elements of {} bits overflow a byte count", count, widest);
  const std::size_t src_bytes = (count * bits_of(from) + 7) / 8;
  const std::size_t dst_bytes = (count * bits_of(to) + 7) / 8;
  LRIS_EXPECTS(!overlaps(reinterpret_cast<std::uintptr_t>(src), src_bytes,
                         reinterpret_cast<std::uintptr_t>(dst), dst_bytes),
               "launch_convert: source [{}, +{}) and destination [{}, +{}) overlap", fmt::ptr(src),
               src_bytes, fmt::ptr(dst), dst_bytes);
  const auto s = static_cast<LRIS_GPU(Stream_t)>(stream);

  if (from == to) {
    // Sub-byte elements share bytes: a partial last byte cannot be copied without touching the
    // neighbour's bits, so it is refused rather than rounded.
    LRIS_EXPECTS(count * bits_of(from) % 8 == 0,
                 "launch_convert: {} elements of {} ({} bits each) are not a whole number of "
                 "bytes",
                 count, to_string(from), bits_of(from));
    // The copy engines (or the driver's copy kernel) already run at the memory's speed.
    LRIS_GPU_TRY(LRIS_GPU(MemcpyAsync)(dst, src, src_bytes, LRIS_GPU(MemcpyDefault), s));
    return;
  }
  switch (from) {
    case dtype::F32:
      if (to == dtype::BF16) return launch<f32_to_bf16>(src, dst, count, s);
      return launch<f32_to_f16>(src, dst, count, s);
    case dtype::BF16:
      return launch<bf16_to_f32>(src, dst, count, s);
    case dtype::F16:
      return launch<f16_to_f32>(src, dst, count, s);
    case dtype::F8_E4M3:
      if (to == dtype::BF16) return launch<e4m3_to_bf16>(src, dst, count, s);
      if (to == dtype::F16) return launch<e4m3_to_f16>(src, dst, count, s);
      return launch<e4m3_to_f32>(src, dst, count, s);
    case dtype::F8_E5M2:
      if (to == dtype::BF16) return launch<e5m2_to_bf16>(src, dst, count, s);
      if (to == dtype::F16) return launch<e5m2_to_f16>(src, dst, count, s);
      return launch<e5m2_to_f32>(src, dst, count, s);
    default:
      break;  // can_convert has refused every other source
  }
}

}  // namespace lris::LRIS_GPU_NS
