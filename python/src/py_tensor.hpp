#pragma once
// lris.Tensor: a tensor in memory (a load's, or a cache lease's view), its bytes and shape, and
// what keeps that memory alive.

#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include <functional>
#include <string>
#include <utility>

#include <fmt/format.h>

#include <lris/formats/loaded_tensor.hpp>

namespace lris::python {

struct py_tensor {
  explicit py_tensor(safetensors::loaded_tensor tensor) : t(std::move(tensor)) {}

  safetensors::loaded_tensor t;
  /// For memory whose bytes are written on a stream (a cache lease's): makes the consumer's
  /// stream (a runtime handle; null for the legacy default stream) wait for them. Empty for a
  /// load's tensors, whose bytes have landed when the load returns.
  std::function<void(void* stream)> before_use;
  /// Memory other processes read too (a host pool's): exported read-only to consumers that
  /// take DLPack 1.0's flag (NumPy makes a read-only array); a write would change every
  /// process's copy.
  bool read_only = false;

  [[nodiscard]] std::string device() const {
    if (!t.location.device) return "cpu";
    return fmt::format("{}:{}", t.location.backend, t.location.device_id);
  }
};

/// @brief {name: lris.Tensor} of a load's tensors (moved out of `loaded`), in its order.
inline nanobind::dict tensors_dict(safetensors::loaded_checkpoint& loaded) {
  nanobind::dict out;
  for (auto& t : loaded.tensors) {
    std::string name = t.name;
    out[nanobind::str(name.c_str(), name.size())] = nanobind::cast(py_tensor{std::move(t)});
  }
  return out;
}

}  // namespace lris::python
