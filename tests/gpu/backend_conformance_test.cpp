// The backend conformance suite (tests/support/backend_conformance.hpp) over the GPU backend:
// CUDA, or HIP when LRIS_TEST_HIP is defined. The same suite runs over host_backend in every
// build (tests/backends).
#if defined(LRIS_TEST_HIP)
#include <lris/hip.hpp>
#define LRIS_CONFORMANCE_BACKENDS lris::hip_backend
#else
#include <lris/cuda.hpp>
#define LRIS_CONFORMANCE_BACKENDS lris::cuda_backend
#endif

#include "support/backend_conformance.hpp"
