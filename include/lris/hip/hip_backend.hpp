#pragma once
/// @file
/// @brief hip_backend: backend_policy over the HIP runtime (gpu_backend<hip_runtime>), for AMD
/// GPUs through ROCm. This header does not include HIP headers; link lris::hip.

#include <lris/gpu/gpu_backend.hpp>

namespace lris {

using hip_backend = gpu_backend<hip_runtime>;
extern template class gpu_backend<hip_runtime>;

static_assert(backend_policy<hip_backend>);
static_assert(batch_backend<hip_backend>);
static_assert(convert_backend<hip_backend>);
static_assert(peer_backend<hip_backend>);
static_assert(pci_backend<hip_backend>);
static_assert(stream_ordered_backend<hip_backend>);
static_assert(flag_wait_backend<hip_backend>);
static_assert(graph_backend<hip_backend>);

}  // namespace lris
