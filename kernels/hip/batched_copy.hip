// The batched_copy kernels for HIP: kernels/common/batched_copy.cuh, compiled by hipcc.
#include "../common/batched_copy.cuh"
