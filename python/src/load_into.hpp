#pragma once
// lris.load_into: a checkpoint loaded into memory the caller allocated (a model's state_dict,
// NumPy arrays: any objects with __dlpack__), each destination checked against its tensor.

#include <nanobind/nanobind.h>

#include <filesystem>

namespace lris::python {

/// @brief Loads the tensors of `path` named in `tensors` (a mapping name -> DLPack-capable
/// object) into those objects' memory. strict: a name of `tensors` the checkpoint lacks, or a
/// checkpoint tensor `tensors` lacks, is an error. Returns {"loaded", "bytes", "missing",
/// "unexpected"}.
nanobind::dict load_into(nanobind::handle tensors, const std::filesystem::path& path, bool strict,
                         nanobind::object progress);

}  // namespace lris::python
