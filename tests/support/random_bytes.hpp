#pragma once
// Random test data from a seed: never all zeros, so a copy that did nothing cannot pass.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

namespace lris::test {

template <class Byte = std::byte>
std::vector<Byte> random_bytes(std::size_t n, std::uint64_t seed) {
  static_assert(sizeof(Byte) == 1);
  std::vector<Byte> v(n);
  std::mt19937_64 rng(seed);
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const std::uint64_t r = rng();
    std::memcpy(v.data() + i, &r, 8);
  }
  for (; i < n; ++i) v[i] = static_cast<Byte>(rng());
  return v;
}

}  // namespace lris::test
