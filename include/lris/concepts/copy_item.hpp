#pragma once
/// @file
/// @brief copy_item: one copy of a batch. Plain C++17, so that kernels may include it.

#include <cstddef>

namespace lris {

/// @brief One copy of a batch: `bytes` from `src` to `dst`.
struct copy_item {
  const void* src = nullptr;
  void* dst = nullptr;
  std::size_t bytes = 0;
};

}  // namespace lris
