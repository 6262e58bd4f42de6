#pragma once
/// @file
/// @brief loaded_tensor: a tensor in memory after a load, and who owns that memory.

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <lris/element/dtype.hpp>
#include <lris/formats/load_options.hpp>

namespace lris::safetensors {

/// @brief Where a tensor's bytes are: host memory, or memory of device `device` of a backend.
struct tensor_location {
  bool device = false;
  std::string_view backend = "host";  ///< "host", "cuda", "hip"
  int device_id = 0;
};

/// @brief A tensor in memory, dense, in row-major order.
///
/// Ownership is explicit. A tensor from safetensors::load() leases its memory: `lease` keeps
/// the block the load allocated alive, and the block is freed when the last tensor (and the
/// last DLPack export) holding it is gone, never earlier and never reused while held. A tensor
/// from load_into() has no lease: the memory is the caller's.
struct loaded_tensor {
  std::string name;
  dtype type = dtype::U8;
  std::vector<std::uint64_t> shape;
  std::byte* data = nullptr;
  std::uint64_t bytes = 0;
  tensor_location location;
  std::shared_ptr<void> lease;
  /// The part of the checkpoint's tensor it holds, when it was loaded as a slice.
  std::optional<tensor_slice> slice;

  [[nodiscard]] bool owns_memory() const noexcept { return lease != nullptr; }
};

/// @brief What safetensors::load() gives back.
struct loaded_checkpoint {
  std::vector<loaded_tensor> tensors;  ///< in checkpoint order
  std::map<std::string, std::string> metadata;
  load_report report;

  /// @brief The tensor called `name`; nullptr when it was not loaded.
  [[nodiscard]] const loaded_tensor* find(std::string_view name) const noexcept {
    for (const auto& t : tensors) {
      if (t.name == name) return &t;
    }
    return nullptr;
  }
};

}  // namespace lris::safetensors
