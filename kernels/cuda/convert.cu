// The convert kernels for CUDA: kernels/common/convert.cuh, compiled by nvcc.
#include "../common/convert.cuh"
