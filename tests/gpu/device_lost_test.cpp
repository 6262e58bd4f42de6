// A real sticky error, in a program of its own (the device stays lost until the process
// ends): a kernel writes through a null pointer. The call that reports the fault throws
// lris::device_lost, and so does every later call on the device, naming that first failure;
// the process lives on.
#include <catch2/catch.hpp>

#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <lris/cuda/cuda_backend.hpp>
#include <lris/cuda/cuda_try.hpp>
#include <lris/error.hpp>

#include "support/what_contains.hpp"

using lris::test::what_contains;

namespace lris::test {
cudaError_t launch_write_through_null(cudaStream_t s);  // illegal_write.cu
}

TEST_CASE("cuda: a sticky error loses the device and every later call says so",
          "[cuda][health]") {
  lris::cuda_backend b;
  auto s = b.make_stream();
  void* dev = b.allocate_device(64);
  std::vector<std::byte> host(64);
  REQUIRE(lris::test::launch_write_through_null(static_cast<cudaStream_t>(s.native())) ==
          cudaSuccess);

  std::string error_name;
  try {
    b.synchronize(s);
    FAIL("the fault was not reported");
  } catch (const lris::device_lost& e) {
    const std::string what = e.what();
    const auto code = static_cast<cudaError_t>(e.code());
    error_name = cudaGetErrorName(code);
    CAPTURE(what);
    CHECK(lris::cuda::detail::is_sticky(code));
    CHECK(e.device() == b.device());
    CHECK_THAT(what, Catch::Contains(fmt::format("CUDA device {} is lost: cudaStreamSynchronize(",
                                                 b.device())));
    CHECK_THAT(what, Catch::Contains(error_name));
    CHECK_THAT(what, Catch::Contains("gpu_backend.inl:"));
  }

  // Later calls name the first failure, also those the runtime would still answer
  // (cudaDeviceGetPCIBusId) and those of another backend object for the device.
  const std::string earlier =
      fmt::format("CUDA device {} was lost earlier in this process: cudaStreamSynchronize(",
                  b.device());
  CHECK_THROWS_MATCHES(b.synchronize(s), lris::device_lost,
                       what_contains("cuda_backend::synchronize: " + earlier));
  CHECK_THROWS_MATCHES(b.copy_async(host.data(), dev, host.size(),
                                    lris::copy_kind::device_to_host, s),
                       lris::device_lost, what_contains("cuda_backend::copy_async: " + earlier));
  CHECK_THROWS_MATCHES((void)b.allocate_device(64), lris::device_lost,
                       what_contains("cuda_backend::allocate_device: " + earlier));
  CHECK_THROWS_MATCHES((void)b.make_stream(), lris::device_lost, what_contains(earlier));
  CHECK_THROWS_MATCHES((void)b.pci_bus_id(), lris::device_lost, what_contains(earlier));
  lris::cuda_backend again(b.device());
  CHECK_THROWS_MATCHES(again.synchronize(s), lris::device_lost, what_contains(error_name));

  // The runtime called directly through the try macro: its error is reported as the loss.
  CHECK_THROWS_MATCHES([] { LRIS_CUDA_TRY(cudaDeviceSynchronize()); }(), lris::device_lost,
                       what_contains("cudaDeviceSynchronize() failed on device"));
  CHECK_THROWS_MATCHES([] { LRIS_CUDA_TRY(cudaDeviceSynchronize()); }(), lris::device_lost,
                       what_contains(earlier));

  // Freeing after the loss is quiet, and the process is still here to say so.
  b.deallocate_device(dev, 64);
  SUCCEED("the process outlived the loss of its device");
}
