// The batched_copy kernels for CUDA: kernels/common/batched_copy.cuh, compiled by nvcc.
#include "../common/batched_copy.cuh"
