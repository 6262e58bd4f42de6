#pragma once
// safetensors files for tests, written byte by byte (no LRIS code): tensors of pseudo-random
// bytes in the order given.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <lris/element/dtype.hpp>

namespace lris::test {

struct raw_tensor {
  std::string name;
  lris::dtype type;
  std::vector<std::uint64_t> shape;
  std::vector<std::byte> data;
};

inline raw_tensor random_tensor(const std::string& name, lris::dtype type, std::vector<std::uint64_t> shape,
                         unsigned seed) {
  std::uint64_t n = 1;
  for (auto d : shape) n *= d;
  raw_tensor t{name, type, std::move(shape), std::vector<std::byte>(n * lris::bits_of(type) / 8)};
  std::mt19937 rng(seed);
  for (auto& b : t.data) b = static_cast<std::byte>(rng());
  if (type == lris::dtype::BF16 || type == lris::dtype::F16) {  // finite values: exact round trips
    for (std::size_t i = 1; i < t.data.size(); i += 2) t.data[i] &= std::byte{0x3F};
  }
  return t;
}

// A safetensors file of `tensors`, in the order given.
inline std::filesystem::path write_file(const std::filesystem::path& path, const std::vector<raw_tensor>& tensors) {
  std::string header = "{";
  std::uint64_t at = 0;
  for (const auto& t : tensors) {
    if (header.size() > 1) header += ",";
    header += fmt::format("\"{}\":{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
                          t.name, lris::to_string(t.type), fmt::join(t.shape, ","), at,
                          at + t.data.size());
    at += t.data.size();
  }
  header += "}";
  while ((8 + header.size()) % 8 != 0) header += ' ';
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  const std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>(n >> (8 * i)));
  out << header;
  for (const auto& t : tensors) out.write(reinterpret_cast<const char*>(t.data.data()), t.data.size());
  return path;
}

}  // namespace lris::test
