// The backend conformance suite over host_backend (the GPU backends run it in tests/gpu).
#include <lris/backends/host_backend.hpp>

#define LRIS_CONFORMANCE_BACKENDS lris::host_backend
#include "support/backend_conformance.hpp"
