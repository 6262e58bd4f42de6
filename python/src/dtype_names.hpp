#pragma once
// The names Python users give dtypes (PyTorch's and NumPy's: "bfloat16", "float8_e4m3fn"),
// both ways, and the safetensors spellings ("BF16") accepted too.

#include <array>
#include <string>
#include <string_view>
#include <utility>

#include <fmt/format.h>

#include <lris/element/dtype.hpp>
#include <lris/error.hpp>

namespace lris::python {

inline constexpr std::array<std::pair<dtype, std::string_view>, 22> dtype_names{{
    {dtype::BOOL, "bool"},
    {dtype::F4, "float4_e2m1fn_x2"},
    {dtype::F6_E2M3, "float6_e2m3fn"},
    {dtype::F6_E3M2, "float6_e3m2fn"},
    {dtype::U8, "uint8"},
    {dtype::I8, "int8"},
    {dtype::F8_E5M2, "float8_e5m2"},
    {dtype::F8_E4M3, "float8_e4m3fn"},
    {dtype::F8_E8M0, "float8_e8m0fnu"},
    {dtype::F8_E4M3FNUZ, "float8_e4m3fnuz"},
    {dtype::F8_E5M2FNUZ, "float8_e5m2fnuz"},
    {dtype::I16, "int16"},
    {dtype::U16, "uint16"},
    {dtype::F16, "float16"},
    {dtype::BF16, "bfloat16"},
    {dtype::I32, "int32"},
    {dtype::U32, "uint32"},
    {dtype::F32, "float32"},
    {dtype::C64, "complex64"},
    {dtype::F64, "float64"},
    {dtype::I64, "int64"},
    {dtype::U64, "uint64"},
}};

/// @brief "bfloat16" for BF16.
[[nodiscard]] inline std::string dtype_name(dtype t) {
  for (const auto& [d, n] : dtype_names) {
    if (d == t) return std::string(n);
  }
  return std::string(to_string(t));
}

/// @brief The dtype called `name` ("bfloat16", "torch.bfloat16", or "BF16").
/// @throws lris::invalid_argument naming the name and the names there are.
[[nodiscard]] inline dtype dtype_from_name(std::string_view name) {
  std::string_view n = name;
  if (n.starts_with("torch.")) n.remove_prefix(6);
  for (const auto& [d, s] : dtype_names) {
    if (s == n) return d;
  }
  if (const auto d = dtype_from_string(n)) return *d;
  std::string known;
  for (const auto& [d, s] : dtype_names) known += fmt::format("{}{}", known.empty() ? "" : ", ", s);
  throw invalid_argument(fmt::format("dtype \"{}\" is not one LRIS knows ({})", name, known));
}

}  // namespace lris::python
