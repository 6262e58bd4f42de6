#pragma once
// lris.HostPool: one copy of a checkpoint in shared memory for every process on the machine.

#include <nanobind/nanobind.h>

namespace lris::python {

/// @brief Adds lris._lris._HostPool to `m`.
void register_host_pool(nanobind::module_& m);

}  // namespace lris::python
