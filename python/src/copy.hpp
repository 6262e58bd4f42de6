#pragma once
// lris.copy: bytes between two objects with __dlpack__ (NumPy arrays, torch tensors).

#include <nanobind/nanobind.h>

namespace lris::python {

/// @brief Copies `src` into `dst` (same dtype and shape, both contiguous): host to host by the
/// copy engine's threads, host to GPU (pageable memory through the pinned staging ring) and
/// back, or within one GPU. Returns {bytes, seconds, path, policy}.
nanobind::dict copy(nanobind::handle dst, nanobind::handle src);

}  // namespace lris::python
