#pragma once
/// @file
/// @brief Reference conversions between float and the 16- and 8-bit floating-point formats,
/// on encodings (`std::uint16_t` for BF16/F16, `std::uint8_t` for FP8). CUDA-free and
/// header-only; every function is `LRIS_HOST_DEVICE`, so the conversion kernels compile this
/// very code and the GPU agrees with the CPU bit for bit.
///
/// Rules, the same everywhere:
/// - narrowing (float -> BF16/F16) rounds to nearest, ties to even; F16 keeps subnormals and
///   overflows to infinity (values from 65520 up, the midpoint above 65504);
/// - widening is exact;
/// - a NaN stays a NaN of the same sign, quietened (quiet bit set), with as much of its
///   payload as the destination holds: a signalling NaN must not turn into an infinity when its
///   payload bits are dropped, and no consumer should trap on a converted weight.

#include <cstdint>

#ifndef LRIS_HOST_DEVICE
#if defined(__CUDACC__) || defined(__HIPCC__)
/// @brief Marks a function callable from host and device code (empty outside nvcc/hipcc).
#define LRIS_HOST_DEVICE __host__ __device__
#else
#define LRIS_HOST_DEVICE
#endif
#endif

namespace lris {

namespace detail {
// __builtin_bit_cast rather than std::bit_cast: the kernels compile as C++17 (no <bit>), and
// nvcc accepts the builtin in device code, in constant expressions too. GCC, Clang and MSVC
// provide it.
[[nodiscard]] LRIS_HOST_DEVICE constexpr std::uint32_t float_bits(float f) noexcept {
  return __builtin_bit_cast(std::uint32_t, f);
}
[[nodiscard]] LRIS_HOST_DEVICE constexpr float float_from_bits(std::uint32_t u) noexcept {
  return __builtin_bit_cast(float, u);
}
}  // namespace detail

// ---- bfloat16 --------------------------------------------------------------------------------

/// @brief float -> bfloat16 encoding, round to nearest even; NaN stays a quiet NaN.
[[nodiscard]] LRIS_HOST_DEVICE constexpr std::uint16_t float_to_bf16(float f) noexcept {
  const std::uint32_t u = detail::float_bits(f);
  // A NaN whose payload lies only in the dropped half would come out as an infinity (and the
  // rounding add could carry into the sign); keep the top payload bits and set the quiet bit.
  if ((u & 0x7FFF'FFFFu) > 0x7F80'0000u) return static_cast<std::uint16_t>((u >> 16) | 0x0040u);
  // Adding 0x7FFF rounds up exactly when the dropped half exceeds the midpoint; the lsb of the
  // kept half turns the midpoint case into ties-to-even. Overflow carries into infinity.
  return static_cast<std::uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

/// @brief bfloat16 encoding -> float, exact (a NaN is quietened).
[[nodiscard]] LRIS_HOST_DEVICE constexpr float bf16_to_float(std::uint16_t h) noexcept {
  std::uint32_t u = static_cast<std::uint32_t>(h) << 16;
  if ((u & 0x7FFF'FFFFu) > 0x7F80'0000u) u |= 0x0040'0000u;
  return detail::float_from_bits(u);
}

// ---- IEEE binary16 ---------------------------------------------------------------------------

/// @brief float -> IEEE half encoding, round to nearest even, with subnormals; overflow gives
/// infinity; NaN stays a quiet NaN.
[[nodiscard]] LRIS_HOST_DEVICE constexpr std::uint16_t float_to_f16(float f) noexcept {
  const std::uint32_t u = detail::float_bits(f);
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  const std::uint32_t a = u & 0x7FFF'FFFFu;
  if (a > 0x7F80'0000u) return static_cast<std::uint16_t>(sign | 0x7E00u | ((a >> 13) & 0x3FFu));
  // 65520 = 0x477FF000 is the midpoint between 65504 (the largest half) and 65536; the tie goes
  // to the even neighbour, which is the infinity (65504's significand is odd).
  if (a >= 0x477F'F000u) return static_cast<std::uint16_t>(sign | 0x7C00u);
  if (a < 0x3880'0000u) {
    // Below 2^-14, the smallest normal half: a subnormal m * 2^-24 or zero. 2^-25 itself is the
    // tie between 0 and 2^-24 and goes to 0, the even one.
    if (a <= 0x3300'0000u) return static_cast<std::uint16_t>(sign);
    const std::uint32_t mant = (a & 0x7F'FFFFu) | 0x80'0000u;
    const std::uint32_t shift = 126u - (a >> 23);  // 14..24 for exponents 102..112
    std::uint32_t m = mant >> shift;
    const std::uint32_t rest = mant & ((1u << shift) - 1u);
    const std::uint32_t half = 1u << (shift - 1u);
    if (rest > half || (rest == half && (m & 1u) != 0)) ++m;  // 0x400 is 2^-14: still right
    return static_cast<std::uint16_t>(sign | m);
  }
  // Normal: rebias the exponent (127 -> 15) in place, then round the 13 dropped bits as
  // float_to_bf16 does; the overflow check above keeps the carry out of the infinity.
  const std::uint32_t r = a - (112u << 23);
  return static_cast<std::uint16_t>(sign | ((r + 0x0FFFu + ((r >> 13) & 1u)) >> 13));
}

/// @brief IEEE half encoding -> float, exact (a NaN is quietened).
[[nodiscard]] LRIS_HOST_DEVICE constexpr float f16_to_float(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t e = (h >> 10) & 0x1Fu;
  const std::uint32_t m = h & 0x3FFu;
  if (e == 0x1F) {
    return detail::float_from_bits(sign | 0x7F80'0000u | (m << 13) | (m != 0 ? 0x0040'0000u : 0u));
  }
  if (e == 0) {
    // m * 2^-24 is a normal float and the product is exact, so no normalisation loop is needed.
    return detail::float_from_bits(sign | detail::float_bits(static_cast<float>(m) * 0x1p-24f));
  }
  return detail::float_from_bits(sign | ((e + 112u) << 23) | (m << 13));
}

// ---- FP8 (OCP 8-bit floating point) -----------------------------------------------------------

/// @brief FP8 E4M3 (OCP "FN": bias 7, no infinities, S.1111.111 is NaN, max 448) -> float,
/// exact.
[[nodiscard]] LRIS_HOST_DEVICE constexpr float f8_e4m3_to_float(std::uint8_t b) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(b & 0x80u) << 24;
  const std::uint32_t e = (b >> 3) & 0xFu;
  const std::uint32_t m = b & 0x7u;
  if ((b & 0x7Fu) == 0x7Fu) return detail::float_from_bits(sign | 0x7FC0'0000u);
  if (e == 0) {
    return detail::float_from_bits(sign | detail::float_bits(static_cast<float>(m) * 0x1p-9f));
  }
  return detail::float_from_bits(sign | ((e + 120u) << 23) | (m << 20));
}

/// @brief FP8 E5M2 (OCP: bias 15, IEEE-like with infinities and NaNs) -> IEEE half encoding,
/// exact: E5M2 is the top byte of a binary16.
[[nodiscard]] LRIS_HOST_DEVICE constexpr std::uint16_t f8_e5m2_to_f16(std::uint8_t b) noexcept {
  const std::uint16_t h = static_cast<std::uint16_t>(b << 8);
  return (b & 0x7Fu) > 0x7Cu ? static_cast<std::uint16_t>(h | 0x0200u) : h;
}

/// @brief FP8 E5M2 -> float, exact.
[[nodiscard]] LRIS_HOST_DEVICE constexpr float f8_e5m2_to_float(std::uint8_t b) noexcept {
  return f16_to_float(f8_e5m2_to_f16(b));
}

/// @brief FP8 E4M3 -> bfloat16 encoding, exact (3 mantissa bits fit in bfloat16's 7).
[[nodiscard]] LRIS_HOST_DEVICE constexpr std::uint16_t f8_e4m3_to_bf16(std::uint8_t b) noexcept {
  // Exact, so truncation is the rounding; it saves float_to_bf16's NaN test and add.
  return static_cast<std::uint16_t>(detail::float_bits(f8_e4m3_to_float(b)) >> 16);
}

/// @brief FP8 E5M2 -> bfloat16 encoding, exact.
[[nodiscard]] LRIS_HOST_DEVICE constexpr std::uint16_t f8_e5m2_to_bf16(std::uint8_t b) noexcept {
  return static_cast<std::uint16_t>(detail::float_bits(f8_e5m2_to_float(b)) >> 16);
}

/// @brief FP8 E4M3 -> IEEE half encoding, exact (every E4M3 value, 2^-9 included, is a half).
[[nodiscard]] LRIS_HOST_DEVICE constexpr std::uint16_t f8_e4m3_to_f16(std::uint8_t b) noexcept {
  return float_to_f16(f8_e4m3_to_float(b));
}

}  // namespace lris
