#pragma once
/// @file
/// @brief lris::dtype: the element types a safetensors file can declare, their widths and
/// their spellings. CUDA-free; shared by the format parsers and the conversion kernels.

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace lris {

/// @brief Every element type of the safetensors format (0.8), spelt as the format spells it.
///
/// The enumerators follow the order of the reference implementation's `Dtype`, which is by
/// width: the reference sorts tensors by dtype when it writes a file, so a writer that wants
/// byte-identical output needs the same order.
enum class dtype : std::uint8_t {
  BOOL,
  F4,       ///< FP4 E2M1 (OCP MX), 4 bits, packed two per byte.
  F6_E2M3,  ///< FP6 E2M3 (OCP MX), 6 bits, packed.
  F6_E3M2,  ///< FP6 E3M2 (OCP MX), 6 bits, packed.
  U8,
  I8,
  F8_E5M2,      ///< FP8 E5M2 (OCP), IEEE-like: infinities and NaNs.
  F8_E4M3,      ///< FP8 E4M3 "FN" (OCP): no infinities, NaN is S.1111.111, max 448.
  F8_E8M0,      ///< FP8 E8M0 (OCP MX scale): an exponent only.
  F8_E4M3FNUZ,  ///< FP8 E4M3 "FNUZ" (AMD, Graphcore): bias 8, no -0 or infinities, NaN 0x80.
  F8_E5M2FNUZ,  ///< FP8 E5M2 "FNUZ": bias 16, no -0, no infinities, 0x80 is the only NaN.
  I16,
  U16,
  F16,   ///< IEEE 754 binary16.
  BF16,  ///< bfloat16: the top half of a binary32.
  I32,
  U32,
  F32,
  C64,  ///< complex64: two F32, real part first.
  F64,
  I64,
  U64,
};

/// @brief Every dtype, in enumerator order: for tables and exhaustive tests.
inline constexpr std::array<dtype, 22> all_dtypes{
    dtype::BOOL,        dtype::F4,      dtype::F6_E2M3, dtype::F6_E3M2, dtype::U8,
    dtype::I8,          dtype::F8_E5M2, dtype::F8_E4M3, dtype::F8_E8M0, dtype::F8_E4M3FNUZ,
    dtype::F8_E5M2FNUZ, dtype::I16,     dtype::U16,     dtype::F16,     dtype::BF16,
    dtype::I32,         dtype::U32,     dtype::F32,     dtype::C64,     dtype::F64,
    dtype::I64,         dtype::U64};

/// @brief The width of one element in bits: 4 for F4, 6 for the F6 types, 8 for BOOL (one
/// byte per element, as safetensors stores it), 64 for C64.
[[nodiscard]] constexpr std::size_t bits_of(dtype t) noexcept {
  switch (t) {
    case dtype::F4:
      return 4;
    case dtype::F6_E2M3:
    case dtype::F6_E3M2:
      return 6;
    case dtype::BOOL:
    case dtype::U8:
    case dtype::I8:
    case dtype::F8_E5M2:
    case dtype::F8_E4M3:
    case dtype::F8_E8M0:
    case dtype::F8_E4M3FNUZ:
    case dtype::F8_E5M2FNUZ:
      return 8;
    case dtype::I16:
    case dtype::U16:
    case dtype::F16:
    case dtype::BF16:
      return 16;
    case dtype::I32:
    case dtype::U32:
    case dtype::F32:
      return 32;
    case dtype::C64:
    case dtype::F64:
    case dtype::I64:
    case dtype::U64:
      return 64;
  }
  return 0;  // not an enumerator: a cast from a corrupt byte
}

/// @brief The safetensors spelling: "F32", "BF16", "F8_E4M3"... ("?" for a value that is not
/// an enumerator, so that an error message about a corrupt value can still be printed).
[[nodiscard]] constexpr std::string_view to_string(dtype t) noexcept {
  switch (t) {
    case dtype::BOOL:
      return "BOOL";
    case dtype::F4:
      return "F4";
    case dtype::F6_E2M3:
      return "F6_E2M3";
    case dtype::F6_E3M2:
      return "F6_E3M2";
    case dtype::U8:
      return "U8";
    case dtype::I8:
      return "I8";
    case dtype::F8_E5M2:
      return "F8_E5M2";
    case dtype::F8_E4M3:
      return "F8_E4M3";
    case dtype::F8_E8M0:
      return "F8_E8M0";
    case dtype::F8_E4M3FNUZ:
      return "F8_E4M3FNUZ";
    case dtype::F8_E5M2FNUZ:
      return "F8_E5M2FNUZ";
    case dtype::I16:
      return "I16";
    case dtype::U16:
      return "U16";
    case dtype::F16:
      return "F16";
    case dtype::BF16:
      return "BF16";
    case dtype::I32:
      return "I32";
    case dtype::U32:
      return "U32";
    case dtype::F32:
      return "F32";
    case dtype::C64:
      return "C64";
    case dtype::F64:
      return "F64";
    case dtype::I64:
      return "I64";
    case dtype::U64:
      return "U64";
  }
  return "?";
}

/// @brief The dtype spelt `name` exactly as safetensors spells it (case-sensitive, as the
/// reference parser is: "f32" is not a dtype); std::nullopt for anything else.
[[nodiscard]] constexpr std::optional<dtype> dtype_from_string(std::string_view name) noexcept {
  for (const dtype t : all_dtypes) {
    if (to_string(t) == name) return t;
  }
  return std::nullopt;
}

}  // namespace lris
