// hip_backend (gpu_backend<hip_runtime>): the shared src/gpu/gpu_backend.inl, compiled for hip.
#include "gpu/gpu_backend.inl"
