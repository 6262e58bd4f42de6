// The checksum kernels for CUDA: kernels/common/checksum.cuh, compiled by nvcc.
#include "../common/checksum.cuh"
