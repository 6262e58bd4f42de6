#include <lris/element/convert.hpp>

#include <cstdint>
#include <cstring>
#include <limits>

#include <fmt/format.h>

#include <lris/detail/thread_pool.hpp>
#include <lris/error.hpp>
#include <lris/element/dtype_convert.hpp>

namespace lris {

namespace {

// Element by element through the reference function `f`, with memcpy for the unaligned loads
// and stores (the compiler turns them into plain moves).
template <class From, class To, class F>
void each(const void* src, void* dst, std::size_t count, F f) {
  auto run = [&](std::size_t begin, std::size_t end) {
    const auto* s = static_cast<const std::byte*>(src);
    auto* d = static_cast<std::byte*>(dst);
    for (std::size_t i = begin; i < end; ++i) {
      From x;
      std::memcpy(&x, s + i * sizeof(From), sizeof(From));
      const To y = f(x);
      std::memcpy(d + i * sizeof(To), &y, sizeof(To));
    }
  };
  constexpr std::size_t per_task = std::size_t{1} << 20;
  if (count <= per_task) return run(0, count);
  const auto pool_owner = detail::default_thread_pool();
  auto& pool = *pool_owner;
  const std::size_t tasks = (count + per_task - 1) / per_task;
  detail::parallel_for(pool, tasks, pool.size() + 1, [&](std::size_t t) {
    run(t * per_task, std::min(count, (t + 1) * per_task));
  });
}

}  // namespace

void convert(const void* src, dtype from, void* dst, dtype to, std::size_t count) {
  if (!can_convert(from, to)) {
    throw unsupported(fmt::format(
        "convert: no conversion from {} to {} (supported: F32 <-> BF16, F32 <-> F16, F8_E4M3 "
        "or F8_E5M2 -> BF16, F16 or F32, and any dtype to itself)",
        to_string(from), to_string(to)));
  }
  if (count == 0) return;
  LRIS_EXPECTS(src != nullptr && dst != nullptr,
               "convert: null buffer (src {}, dst {}) for {} elements {} -> {}", fmt::ptr(src),
               fmt::ptr(dst), count, to_string(from), to_string(to));
  const std::size_t widest = std::max(bits_of(from), bits_of(to));
  LRIS_EXPECTS(count <= std::numeric_limits<std::size_t>::max() / widest,
               "convert: {} elements of {} bits overflow a byte count", count, widest);
  const std::size_t src_bytes = (count * bits_of(from) + 7) / 8;
  const std::size_t dst_bytes = (count * bits_of(to) + 7) / 8;
  const auto a = reinterpret_cast<std::uintptr_t>(src), b = reinterpret_cast<std::uintptr_t>(dst);
  LRIS_EXPECTS(a + src_bytes <= b || b + dst_bytes <= a,
               "convert: source [{}, +{}) and destination [{}, +{}) overlap", fmt::ptr(src),
               src_bytes, fmt::ptr(dst), dst_bytes);
  using u8 = std::uint8_t;
  using u16 = std::uint16_t;
  using u32 = std::uint32_t;
  const auto bits = [](float f) { return detail::float_bits(f); };
  const auto from_bits = [](u32 u) { return detail::float_from_bits(u); };
  if (from == to) {
    LRIS_EXPECTS(count * bits_of(from) % 8 == 0,
                 "convert: {} elements of {} ({} bits each) are not a whole number of bytes",
                 count, to_string(from), bits_of(from));
    const auto pool_owner = detail::default_thread_pool();
    auto& pool = *pool_owner;
    return detail::parallel_memcpy(pool, dst, src, src_bytes, pool.size(), std::size_t{4} << 20);
  }
  switch (from) {
    case dtype::F32:
      if (to == dtype::BF16) return each<u32, u16>(src, dst, count, [&](u32 x) { return float_to_bf16(from_bits(x)); });
      return each<u32, u16>(src, dst, count, [&](u32 x) { return float_to_f16(from_bits(x)); });
    case dtype::BF16:
      return each<u16, u32>(src, dst, count, [&](u16 x) { return bits(bf16_to_float(x)); });
    case dtype::F16:
      return each<u16, u32>(src, dst, count, [&](u16 x) { return bits(f16_to_float(x)); });
    case dtype::F8_E4M3:
      if (to == dtype::BF16) return each<u8, u16>(src, dst, count, f8_e4m3_to_bf16);
      if (to == dtype::F16) return each<u8, u16>(src, dst, count, f8_e4m3_to_f16);
      return each<u8, u32>(src, dst, count, [&](u8 x) { return bits(f8_e4m3_to_float(x)); });
    case dtype::F8_E5M2:
      if (to == dtype::BF16) return each<u8, u16>(src, dst, count, f8_e5m2_to_bf16);
      if (to == dtype::F16) return each<u8, u16>(src, dst, count, f8_e5m2_to_f16);
      return each<u8, u32>(src, dst, count, [&](u8 x) { return bits(f8_e5m2_to_float(x)); });
    default:
      break;  // can_convert has refused every other source
  }
}

}  // namespace lris
