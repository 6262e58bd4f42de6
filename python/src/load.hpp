#pragma once
// lris.load, and the load behind lris.torch.load: a checkpoint into one block of memory, read
// on a thread of its own while the caller makes its views of the block.

#include <nanobind/nanobind.h>

namespace lris::python {

/// @brief Adds lris._lris.load, load_start and _PendingLoad to `m`.
void register_load(nanobind::module_& m);

}  // namespace lris::python
