#pragma once
/// @file
/// @brief Element type conversion on the host: the same conversions, bit for bit, as the GPU
/// kernels (lris/cuda/convert.hpp), for loads into host memory and for the host backend.

#include <cstddef>

#include <lris/element/dtype.hpp>

namespace lris {

/// @brief True when convert() (and the GPU launch_convert) support `from` -> `to`: F32 <->
/// BF16, F32 <-> F16, F8_E4M3 and F8_E5M2 -> BF16, F16 or F32, and any dtype to itself.
[[nodiscard]] constexpr bool can_convert(dtype from, dtype to) noexcept {
  if (bits_of(from) == 0 || bits_of(to) == 0) return false;  // not enumerators
  if (from == to) return true;
  const bool fp8 = from == dtype::F8_E4M3 || from == dtype::F8_E5M2;
  if (from == dtype::F32) return to == dtype::BF16 || to == dtype::F16;
  if (to == dtype::F32) return from == dtype::BF16 || from == dtype::F16 || fp8;
  return fp8 && (to == dtype::BF16 || to == dtype::F16);
}

/// @brief Converts `count` elements of `from` at `src` into `to` at `dst` (any alignment; the
/// buffers must not overlap). Large counts are spread over the threads of
/// the default context's compute lanes (lris::detail::default_thread_pool()).
/// @throws lris::unsupported naming both dtypes when can_convert(from, to) is false;
/// lris::invalid_argument for null or overlapping buffers.
void convert(const void* src, dtype from, void* dst, dtype to, std::size_t count);

}  // namespace lris
