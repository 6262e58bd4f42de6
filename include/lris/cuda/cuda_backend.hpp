#pragma once
/// @file
/// @brief cuda_backend: backend_policy over the CUDA runtime (gpu_backend<cuda_runtime>). This
/// header does not include CUDA headers; link lris::cuda.

#include <lris/gpu/gpu_backend.hpp>

namespace lris {

using cuda_backend = gpu_backend<cuda_runtime>;
extern template class gpu_backend<cuda_runtime>;

static_assert(backend_policy<cuda_backend>);
static_assert(batch_backend<cuda_backend>);
static_assert(convert_backend<cuda_backend>);
static_assert(peer_backend<cuda_backend>);
static_assert(pci_backend<cuda_backend>);
static_assert(stream_ordered_backend<cuda_backend>);
static_assert(flag_wait_backend<cuda_backend>);
static_assert(graph_backend<cuda_backend>);

}  // namespace lris
