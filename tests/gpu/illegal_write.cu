// A kernel that writes through a null pointer: the device faults with an illegal address, a
// sticky error, for cuda_device_lost_test.
#include <cuda_runtime.h>

namespace {

__global__ void write_through(int* p) { *p = 1; }

}  // namespace

namespace lris::test {

// Queues the faulting kernel on `s`; the launch itself succeeds, the fault comes when the
// stream runs it.
cudaError_t launch_write_through_null(cudaStream_t s) {
  write_through<<<1, 1, 0, s>>>(nullptr);
  return cudaGetLastError();
}

}  // namespace lris::test
