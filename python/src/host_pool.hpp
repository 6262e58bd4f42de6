#pragma once
// lris.HostPool: one copy of a checkpoint in shared memory for every process on the machine.

#include <nanobind/nanobind.h>

#include <memory>

#include <lris/error.hpp>
#include <lris/pool/host_pool.hpp>

namespace lris::python {

/// @brief lris.HostPool's state: a share of the pool, and its registration with a GPU.
struct py_pool {
  std::shared_ptr<pool::host_pool> pool;
  std::shared_ptr<void> registration;  // the data pinned for a GPU (pin()); holds `pool`

  pool::host_pool& live() const {
    if (!pool) throw invalid_argument("lris.HostPool: closed");
    return *pool;
  }
  // A share of the pool for a call that releases the GIL: another thread's close() meanwhile
  // does not unmap it under the call.
  [[nodiscard]] std::shared_ptr<pool::host_pool> hold() const {
    (void)live();
    return pool;
  }
};

/// @brief Adds lris._lris._HostPool to `m`.
void register_host_pool(nanobind::module_& m);

}  // namespace lris::python
