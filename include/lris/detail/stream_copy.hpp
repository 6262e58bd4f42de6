#pragma once
/// @file
/// @brief memcpy with non-temporal stores, for copies whose destination the CPU will not read
/// soon (pinned staging slots that a DMA engine reads next).
///
/// Ordinary stores first read each destination line into the cache (read for ownership) and
/// later write it back: three memory transfers per line. Non-temporal stores write around the
/// cache: two. When worker threads and a DMA engine share the memory bus, that third transfer
/// is bandwidth the DMA engine does not get.

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
#include <emmintrin.h>
#endif

namespace lris::detail {

/// @brief Below this, a plain memcpy (its destination stays in cache, which is then cheaper).
inline constexpr std::size_t stream_copy_min_bytes = std::size_t{256} << 10;

/// @brief Copies `n` bytes; large copies bypass the cache on x86-64. Ends with a store fence,
/// so the bytes are visible to other agents (a DMA engine) once it returns.
inline void stream_copy(void* dst, const void* src, std::size_t n) noexcept {
#if defined(__x86_64__)
  if (n < stream_copy_min_bytes) {
    std::memcpy(dst, src, n);
    return;
  }
  auto* d = static_cast<std::byte*>(dst);
  const auto* s = static_cast<const std::byte*>(src);
  // Head up to a 16-byte aligned destination.
  const std::size_t head = (16 - (reinterpret_cast<std::uintptr_t>(d) & 15)) & 15;
  std::memcpy(d, s, head);
  d += head;
  s += head;
  n -= head;
  const std::size_t body = n & ~std::size_t{63};
  for (std::size_t i = 0; i < body; i += 64) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 16));
    const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 32));
    const __m128i e = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 48));
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i), a);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 16), b);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 32), c);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 48), e);
  }
  std::memcpy(d + body, s + body, n - body);
  _mm_sfence();
#else
  std::memcpy(dst, src, n);
#endif
}

}  // namespace lris::detail
