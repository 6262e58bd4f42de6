// The convert kernels for HIP: kernels/common/convert.cuh, compiled by hipcc.
#include "../common/convert.cuh"
