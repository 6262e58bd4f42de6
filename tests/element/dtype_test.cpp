// lris::dtype names and widths, and the reference conversions of dtype_convert.hpp: known
// encodings, every FP8/F16/BF16 code against tables built here from the formats' definitions,
// and rounding checked as a property (no representable neighbour is nearer; ties go to the even
// code) rather than against a second implementation of the same bit tricks.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <lris/element/dtype.hpp>
#include <lris/element/dtype_convert.hpp>
#include <random>
#include <string>
#include <string_view>

using lris::dtype;

namespace {

// Compile-time use is part of the contract (tables of constants in user code).
static_assert(lris::float_to_bf16(1.0f) == 0x3F80);
static_assert(lris::float_to_f16(1.0f) == 0x3C00);
static_assert(lris::f8_e4m3_to_float(0x7E) == 448.0f);
static_assert(lris::bits_of(dtype::F4) == 4);
static_assert(lris::dtype_from_string("BF16") == dtype::BF16);

std::uint32_t bits(float f) { return lris::detail::float_bits(f); }
float from_bits(std::uint32_t u) { return lris::detail::float_from_bits(u); }

// A binary floating-point code with the given field widths, decoded in double from the format
// definition: (-1)^s * 2^(e - bias) * 1.m for normals, 2^(1 - bias) * 0.m for subnormals.
// `ieee_specials` says the top exponent holds infinities and NaNs (F16, E5M2); without it
// (E4M3 "FN") only the all-ones code is NaN and the top exponent holds normal numbers.
double decode_by_definition(std::uint32_t code, int exp_bits, int man_bits, bool ieee_specials) {
  const int bias = (1 << (exp_bits - 1)) - 1;
  const bool negative = (code >> (exp_bits + man_bits)) & 1u;
  const std::uint32_t e = (code >> man_bits) & ((1u << exp_bits) - 1u);
  const std::uint32_t m = code & ((1u << man_bits) - 1u);
  const std::uint32_t e_max = (1u << exp_bits) - 1u;
  double v;
  if (ieee_specials && e == e_max) {
    v = m == 0 ? std::numeric_limits<double>::infinity() : std::numeric_limits<double>::quiet_NaN();
  } else if (!ieee_specials && e == e_max && m == (1u << man_bits) - 1u) {
    v = std::numeric_limits<double>::quiet_NaN();
  } else if (e == 0) {
    v = std::ldexp(static_cast<double>(m), 1 - bias - man_bits);
  } else {
    v = std::ldexp(static_cast<double>(m + (1u << man_bits)),
                   static_cast<int>(e) - bias - man_bits);
  }
  return negative ? -v : v;
}

// True when `got` is a NaN or a value equal to `want` with the same sign (zeros included).
bool same_value(float got, double want) {
  if (std::isnan(want)) return std::isnan(got);
  return static_cast<double>(got) == want && std::signbit(got) == std::signbit(want);
}

bool is_quiet_nan(float f) { return std::isnan(f) && (bits(f) & 0x0040'0000u) != 0; }

// The magnitude of a 16-bit code for rounding purposes: the infinity code stands for the next
// power of two above the largest finite value, as IEEE 754 rounds with an unbounded exponent.
double magnitude_f16(std::uint16_t m) {
  return m == 0x7C00 ? 65536.0 : decode_by_definition(m, 5, 10, true);
}
double magnitude_bf16(std::uint16_t m) {
  return m == 0x7F80 ? std::ldexp(1.0, 128) : decode_by_definition(m, 8, 7, true);
}

// `h` is the correctly rounded (nearest, ties to even) code of `x` among the codes 0..inf of
// `magnitude`, with x's sign; NaN -> NaN.
template <class Magnitude>
bool rounds_correctly(float x, std::uint16_t h, std::uint16_t inf_code, Magnitude magnitude) {
  const std::uint16_t m = h & 0x7FFF;
  if (std::isnan(x)) return m > inf_code;
  if (((h >> 15) != 0) != std::signbit(x)) return false;
  if (std::isinf(x)) return m == inf_code;
  if (m > inf_code) return false;
  const double ax = std::fabs(static_cast<double>(x));
  const double d = std::fabs(ax - magnitude(m));
  // A neighbour nearer than the result is wrong; one as near means a tie, which the even code
  // must win.
  for (const int step : {-1, 1}) {
    if ((step < 0 && m == 0) || (step > 0 && m == inf_code)) continue;
    const double n = std::fabs(ax - magnitude(static_cast<std::uint16_t>(m + step)));
    if (n < d || (n == d && (m & 1u) != 0)) return false;
  }
  return true;
}

// Floats worth rounding: a sweep over every exponent with random mantissas, plus the exact
// midpoints and their neighbours, where rounding bugs live.
template <class Check>
void for_test_floats(Check check) {
  std::mt19937 rng(20240607);
  for (std::uint32_t u = 0; u < 0x7F80'0000u; u += 0x0000'1F3Du) {
    for (const std::uint32_t s : {0u, 0x8000'0000u}) check(from_bits(u | s));
  }
  for (int i = 0; i < 1'000'000; ++i) check(from_bits(static_cast<std::uint32_t>(rng())));
}

}  // namespace

// ---- dtype -------------------------------------------------------------------------------------

TEST_CASE("dtype: every name round-trips and unknown names are rejected", "[formats][dtype]") {
  CHECK(lris::all_dtypes.size() == 22);
  for (const dtype t : lris::all_dtypes) {
    CAPTURE(to_string(t));
    CHECK(to_string(t) != "?");
    CHECK(lris::dtype_from_string(to_string(t)) == t);
  }
  CHECK(to_string(dtype::F8_E4M3) == "F8_E4M3");
  CHECK(to_string(dtype::BF16) == "BF16");
  CHECK(to_string(dtype::F8_E5M2FNUZ) == "F8_E5M2FNUZ");
  CHECK(to_string(dtype::F6_E2M3) == "F6_E2M3");
  for (const std::string_view bad :
       {"", "f32", "Bf16", "F32 ", " F32", "FLOAT32", "F8_E4M3FN", "F8", "F6", "C128", "BF", "?"}) {
    CAPTURE(std::string(bad));
    CHECK_FALSE(lris::dtype_from_string(bad).has_value());
  }
  CHECK_FALSE(lris::dtype_from_string(std::string_view("F32\0", 4)).has_value());
  CHECK(to_string(static_cast<dtype>(200)) == "?");
  CHECK(lris::bits_of(static_cast<dtype>(200)) == 0);
}

TEST_CASE("dtype: widths in bits", "[formats][dtype]") {
  CHECK(lris::bits_of(dtype::F4) == 4);
  CHECK(lris::bits_of(dtype::F6_E2M3) == 6);
  CHECK(lris::bits_of(dtype::F6_E3M2) == 6);
  for (const dtype t : {dtype::BOOL, dtype::U8, dtype::I8, dtype::F8_E5M2, dtype::F8_E4M3,
                        dtype::F8_E8M0, dtype::F8_E4M3FNUZ, dtype::F8_E5M2FNUZ}) {
    CAPTURE(to_string(t));
    CHECK(lris::bits_of(t) == 8);
  }
  for (const dtype t : {dtype::I16, dtype::U16, dtype::F16, dtype::BF16}) {
    CHECK(lris::bits_of(t) == 16);
  }
  for (const dtype t : {dtype::I32, dtype::U32, dtype::F32}) CHECK(lris::bits_of(t) == 32);
  for (const dtype t : {dtype::C64, dtype::F64, dtype::I64, dtype::U64}) {
    CHECK(lris::bits_of(t) == 64);
  }
}

// ---- bfloat16 ----------------------------------------------------------------------------------

TEST_CASE("bf16: known encodings", "[formats][convert]") {
  using lris::float_to_bf16;
  CHECK(float_to_bf16(1.0f) == 0x3F80);
  CHECK(float_to_bf16(-2.0f) == 0xC000);
  CHECK(float_to_bf16(0.0f) == 0x0000);
  CHECK(float_to_bf16(-0.0f) == 0x8000);
  CHECK(float_to_bf16(std::numeric_limits<float>::infinity()) == 0x7F80);
  CHECK(float_to_bf16(-std::numeric_limits<float>::infinity()) == 0xFF80);
  CHECK(float_to_bf16(3.0e38f) == 0x7F62);
  // Ties to even: 1 + 2^-8 lies halfway between 0x3F80 (even) and 0x3F81.
  CHECK(float_to_bf16(from_bits(0x3F80'8000u)) == 0x3F80);
  CHECK(float_to_bf16(from_bits(0x3F81'8000u)) == 0x3F82);
  CHECK(float_to_bf16(from_bits(0x3F80'8001u)) == 0x3F81);
  CHECK(float_to_bf16(from_bits(0x3F80'7FFFu)) == 0x3F80);
  // The largest float rounds up into infinity; a mantissa carry crosses into the exponent.
  CHECK(float_to_bf16(std::numeric_limits<float>::max()) == 0x7F80);
  CHECK(float_to_bf16(from_bits(0x3FFF'FFFFu)) == 0x4000);
  // Float subnormals keep their top bits (bfloat16 has the same exponent range).
  CHECK(float_to_bf16(from_bits(0x0000'8000u)) == 0x0000);
  CHECK(float_to_bf16(from_bits(0x0001'8000u)) == 0x0002);
  CHECK(float_to_bf16(from_bits(0x0000'8001u)) == 0x0001);

  CHECK(lris::bf16_to_float(0x3F80) == 1.0f);
  CHECK(lris::bf16_to_float(0xC000) == -2.0f);
  CHECK(std::isinf(lris::bf16_to_float(0x7F80)));
  CHECK(bits(lris::bf16_to_float(0x8000)) == 0x8000'0000u);
}

TEST_CASE("bf16: NaN stays a quiet NaN of the same sign", "[formats][convert]") {
  // A NaN with its payload only in the low half would truncate to the infinity 0x7F80.
  for (const std::uint32_t nan :
       {0x7FC0'0000u, 0x7F80'0001u, 0x7FBF'FFFFu, 0x7FFF'FFFFu, 0xFF80'0001u, 0xFFC0'0000u}) {
    CAPTURE(nan);
    const std::uint16_t h = lris::float_to_bf16(from_bits(nan));
    CHECK((h & 0x7FFF) > 0x7F80);
    CHECK((h & 0x0040) != 0);
    CHECK((h >> 15) == (nan >> 31));
  }
  CHECK(lris::float_to_bf16(from_bits(0x7FC0'0000u)) == 0x7FC0);
  CHECK(lris::float_to_bf16(from_bits(0xFFC0'0000u)) == 0xFFC0);
  CHECK(is_quiet_nan(lris::bf16_to_float(0x7F81)));  // a signalling bf16 NaN comes out quiet
}

TEST_CASE("bf16: every code decodes by definition and round-trips", "[formats][convert]") {
  std::size_t wrong_value = 0, wrong_round_trip = 0, nans = 0;
  for (std::uint32_t c = 0; c <= 0xFFFF; ++c) {
    const auto h = static_cast<std::uint16_t>(c);
    const float f = lris::bf16_to_float(h);
    if (!same_value(f, decode_by_definition(h, 8, 7, true))) ++wrong_value;
    const std::uint16_t back = lris::float_to_bf16(f);
    if (std::isnan(f)) {
      ++nans;
      if (!is_quiet_nan(f) || (back & 0x7FFF) <= 0x7F80 || (back >> 15) != (h >> 15)) {
        ++wrong_round_trip;
      }
    } else if (back != h) {
      ++wrong_round_trip;
    }
  }
  CHECK(wrong_value == 0);
  CHECK(wrong_round_trip == 0);
  CHECK(nans == 2 * 127);
}

TEST_CASE("bf16: float_to_bf16 rounds to nearest even", "[formats][convert]") {
  std::size_t checked = 0, wrong = 0;
  for_test_floats([&](float x) {
    ++checked;
    if (!rounds_correctly(x, lris::float_to_bf16(x), 0x7F80, magnitude_bf16)) {
      if (++wrong < 5) FAIL_CHECK("bf16 of " << bits(x) << " is " << lris::float_to_bf16(x));
    }
  });
  CHECK(checked > 1'000'000);
  CHECK(wrong == 0);
}

// ---- IEEE half ---------------------------------------------------------------------------------

TEST_CASE("f16: known encodings", "[formats][convert]") {
  using lris::float_to_f16;
  constexpr float inf = std::numeric_limits<float>::infinity();
  CHECK(float_to_f16(1.0f) == 0x3C00);
  CHECK(float_to_f16(-2.0f) == 0xC000);
  CHECK(float_to_f16(0.0f) == 0x0000);
  CHECK(float_to_f16(-0.0f) == 0x8000);
  CHECK(float_to_f16(65504.0f) == 0x7BFF);  // the largest half
  CHECK(float_to_f16(-65504.0f) == 0xFBFF);
  CHECK(float_to_f16(65519.996f) == 0x7BFF);
  CHECK(float_to_f16(65520.0f) == 0x7C00);  // the midpoint to 65536 ties to even: infinity
  CHECK(float_to_f16(1.0e6f) == 0x7C00);
  CHECK(float_to_f16(-1.0e6f) == 0xFC00);
  CHECK(float_to_f16(std::numeric_limits<float>::max()) == 0x7C00);
  CHECK(float_to_f16(inf) == 0x7C00);
  CHECK(float_to_f16(-inf) == 0xFC00);
  CHECK(float_to_f16(0x1p-14f) == 0x0400);  // the smallest normal
  CHECK(float_to_f16(0x1p-24f) == 0x0001);  // the smallest subnormal
  CHECK(float_to_f16(-0x1p-24f) == 0x8001);
  CHECK(float_to_f16(0x1p-25f) == 0x0000);  // tie between 0 and 2^-24: 0 is even
  CHECK(float_to_f16(from_bits(bits(0x1p-25f) + 1)) == 0x0001);
  CHECK(float_to_f16(3 * 0x1p-25f) == 0x0002);         // tie between 1 and 2 codes
  CHECK(float_to_f16(5 * 0x1p-25f) == 0x0002);         // tie between 2 and 3 codes
  CHECK(float_to_f16(0x1p-14f - 0x1p-25f) == 0x0400);  // tie between 0x3FF and 0x400
  CHECK(float_to_f16(1023 * 0x1p-24f) == 0x03FF);
  CHECK(float_to_f16(0x1p-30f) == 0x0000);
  CHECK(float_to_f16(from_bits(1)) == 0x0000);  // a float subnormal
  // Ties in the normal range: 1 + 2^-11 lies halfway between 0x3C00 and 0x3C01.
  CHECK(float_to_f16(1.0f + 0x1p-11f) == 0x3C00);
  CHECK(float_to_f16(1.0f + 3 * 0x1p-11f) == 0x3C02);
  CHECK(float_to_f16(1.0f + 0x1p-11f + 0x1p-20f) == 0x3C01);
  CHECK(float_to_f16(1.0f - 0x1p-12f) == 0x3C00);  // a tie whose rounding carries into the exponent

  CHECK(lris::f16_to_float(0x3C00) == 1.0f);
  CHECK(lris::f16_to_float(0x7BFF) == 65504.0f);
  CHECK(lris::f16_to_float(0x0001) == 0x1p-24f);
  CHECK(lris::f16_to_float(0x8001) == -0x1p-24f);
  CHECK(lris::f16_to_float(0x03FF) == 1023 * 0x1p-24f);
  CHECK(lris::f16_to_float(0xFC00) == -inf);
}

TEST_CASE("f16: NaN stays a quiet NaN of the same sign", "[formats][convert]") {
  for (const std::uint32_t nan : {0x7FC0'0000u, 0x7F80'0001u, 0x7F80'1000u, 0xFFFF'FFFFu}) {
    CAPTURE(nan);
    const std::uint16_t h = lris::float_to_f16(from_bits(nan));
    CHECK((h & 0x7FFF) > 0x7C00);
    CHECK((h & 0x0200) != 0);
    CHECK((h >> 15) == (nan >> 31));
  }
  CHECK(lris::float_to_f16(from_bits(0x7FC0'0000u)) == 0x7E00);
  CHECK(is_quiet_nan(lris::f16_to_float(0x7C01)));
  CHECK(std::signbit(lris::f16_to_float(0xFC01)));
}

TEST_CASE("f16: every code decodes by definition and round-trips", "[formats][convert]") {
  std::size_t wrong_value = 0, wrong_round_trip = 0, nans = 0;
  for (std::uint32_t c = 0; c <= 0xFFFF; ++c) {
    const auto h = static_cast<std::uint16_t>(c);
    const float f = lris::f16_to_float(h);
    if (!same_value(f, decode_by_definition(h, 5, 10, true))) ++wrong_value;
    const std::uint16_t back = lris::float_to_f16(f);
    if (std::isnan(f)) {
      ++nans;
      if (!is_quiet_nan(f) || (back & 0x7FFF) <= 0x7C00 || (back >> 15) != (h >> 15)) {
        ++wrong_round_trip;
      }
    } else if (back != h) {
      ++wrong_round_trip;
    }
  }
  CHECK(wrong_value == 0);
  CHECK(wrong_round_trip == 0);
  CHECK(nans == 2 * 1023);
}

TEST_CASE("f16: float_to_f16 rounds to nearest even, with subnormals", "[formats][convert]") {
  std::size_t checked = 0, wrong = 0;
  auto check = [&](float x) {
    ++checked;
    if (!rounds_correctly(x, lris::float_to_f16(x), 0x7C00, magnitude_f16)) {
      if (++wrong < 5) FAIL_CHECK("f16 of " << bits(x) << " is " << lris::float_to_f16(x));
    }
  };
  for_test_floats(check);
  // Every half, the midpoints to its neighbours and the floats next to those midpoints.
  for (std::uint32_t c = 0; c < 0x7C00; ++c) {
    const double lo = magnitude_f16(static_cast<std::uint16_t>(c));
    const auto mid =
        static_cast<float>((lo + magnitude_f16(static_cast<std::uint16_t>(c + 1))) / 2);
    for (const float x :
         {static_cast<float>(lo), mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e9f)}) {
      check(x);
      check(-x);
    }
  }
  CHECK(wrong == 0);
}

// ---- FP8 ---------------------------------------------------------------------------------------

TEST_CASE("fp8 e4m3: all 256 codes decode as the format defines", "[formats][convert]") {
  std::size_t wrong = 0, nans = 0;
  for (std::uint32_t c = 0; c < 256; ++c) {
    const auto b = static_cast<std::uint8_t>(c);
    const double want = decode_by_definition(b, 4, 3, false);
    const float got = lris::f8_e4m3_to_float(b);
    if (!same_value(got, want)) {
      if (++wrong < 5) FAIL_CHECK("e4m3 " << c << " -> " << got << ", want " << want);
    }
    if (std::isnan(got)) {
      ++nans;
      CHECK(is_quiet_nan(got));
      CHECK(std::signbit(got) == (b >= 0x80));
      CHECK((lris::f8_e4m3_to_f16(b) & 0x0200) != 0);
      CHECK((lris::f8_e4m3_to_bf16(b) & 0x0040) != 0);
    }
    // The narrower encodings of the same value, exact: compare through float.
    CHECK(same_value(lris::bf16_to_float(lris::f8_e4m3_to_bf16(b)), want));
    CHECK(same_value(lris::f16_to_float(lris::f8_e4m3_to_f16(b)), want));
  }
  CHECK(wrong == 0);
  CHECK(nans == 2);  // only S.1111.111: the "FN" variant has no infinities
  CHECK(lris::f8_e4m3_to_float(0x7E) == 448.0f);
  CHECK(lris::f8_e4m3_to_float(0x01) == 0x1p-9f);
  CHECK(lris::f8_e4m3_to_float(0x08) == 0x1p-6f);
  CHECK(lris::f8_e4m3_to_float(0x38) == 1.0f);
  CHECK(lris::f8_e4m3_to_float(0xC0) == -2.0f);
  CHECK(bits(lris::f8_e4m3_to_float(0x80)) == 0x8000'0000u);
}

TEST_CASE("fp8 e5m2: all 256 codes decode as the format defines", "[formats][convert]") {
  std::size_t wrong = 0, nans = 0, infs = 0;
  for (std::uint32_t c = 0; c < 256; ++c) {
    const auto b = static_cast<std::uint8_t>(c);
    const double want = decode_by_definition(b, 5, 2, true);
    const float got = lris::f8_e5m2_to_float(b);
    if (!same_value(got, want)) {
      if (++wrong < 5) FAIL_CHECK("e5m2 " << c << " -> " << got << ", want " << want);
    }
    if (std::isnan(got)) {
      ++nans;
      CHECK(is_quiet_nan(got));
      CHECK(std::signbit(got) == (b >= 0x80));
    }
    infs += std::isinf(got);
    CHECK(same_value(lris::bf16_to_float(lris::f8_e5m2_to_bf16(b)), want));
    CHECK(same_value(lris::f16_to_float(lris::f8_e5m2_to_f16(b)), want));
    if (std::isnan(got)) {
      CHECK((lris::f8_e5m2_to_f16(b) & 0x0200) != 0);  // quiet
      CHECK((lris::f8_e5m2_to_bf16(b) & 0x0040) != 0);
    } else {
      CHECK(lris::f8_e5m2_to_f16(b) == (b << 8));  // E5M2 is the top byte of a half
    }
  }
  CHECK(wrong == 0);
  CHECK(nans == 6);
  CHECK(infs == 2);
  CHECK(lris::f8_e5m2_to_float(0x7B) == 57344.0f);
  CHECK(lris::f8_e5m2_to_float(0x01) == 0x1p-16f);
  CHECK(lris::f8_e5m2_to_float(0x3C) == 1.0f);
  CHECK(lris::f8_e5m2_to_float(0xFC) == -std::numeric_limits<float>::infinity());
}
