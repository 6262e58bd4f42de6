// The checksum kernels for HIP: kernels/common/checksum.cuh, compiled by hipcc.
#include "../common/checksum.cuh"
