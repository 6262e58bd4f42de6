// Catch2 main for tests that need a GPU of the runtime under test (CUDA, or HIP when
// LRIS_TEST_HIP is defined): exits 77 (CTest: skipped) without one, saying why, so that CI
// machines without a GPU skip instead of fail.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>

#if defined(LRIS_TEST_HIP)
#include <lris/hip/device_info.hpp>
namespace rt = lris::hip;
#else
#include <lris/cuda/device_info.hpp>
namespace rt = lris::cuda;
#endif

int main(int argc, char** argv) {
  const auto status = rt::runtime_status();
  if (!status.usable()) {
    std::printf("skipped: %s\n", status.reason.c_str());
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
