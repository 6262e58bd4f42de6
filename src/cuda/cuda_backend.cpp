// cuda_backend (gpu_backend<cuda_runtime>): the shared src/gpu/gpu_backend.inl, compiled for cuda.
#include "gpu/gpu_backend.inl"
