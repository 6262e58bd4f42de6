#pragma once
// lris.Cache: the residency manager from Python. Units of tensors (a model's blocks) kept in
// pinned host memory and brought into one device's memory under a byte budget; a lease orders
// the caller's stream after a unit's copy, and its release orders an eviction after the
// caller's use.

#include <nanobind/nanobind.h>

namespace lris::python {

/// @brief Adds lris._lris.Cache and lris._lris.CacheLease to `m`.
void register_cache(nanobind::module_& m);

}  // namespace lris::python
