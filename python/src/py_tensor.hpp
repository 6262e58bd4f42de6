#pragma once
// lris.Tensor: a tensor in memory (a load's, or a cache lease's view), its bytes and shape, and
// what keeps that memory alive.

#include <string>

#include <fmt/format.h>

#include <lris/formats/loaded_tensor.hpp>

namespace lris::python {

struct py_tensor {
  safetensors::loaded_tensor t;

  [[nodiscard]] std::string device() const {
    if (!t.location.device) return "cpu";
    return fmt::format("{}:{}", t.location.backend, t.location.device_id);
  }
};

}  // namespace lris::python
