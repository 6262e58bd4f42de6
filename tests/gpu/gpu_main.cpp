// Catch2 main for tests that need a CUDA device: exits 77 (CTest: skipped) without one, saying
// why, so that CI machines without a GPU skip instead of fail.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>

#include <lris/cuda/device_info.hpp>

int main(int argc, char** argv) {
  const auto status = lris::cuda::runtime_status();
  if (!status.usable()) {
    std::printf("skipped: %s\n", status.reason.c_str());
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
