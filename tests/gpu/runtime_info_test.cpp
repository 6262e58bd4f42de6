// What needs no device: version formatting and state names of the runtime under test (CUDA, or
// HIP when LRIS_TEST_HIP is defined).
#include <catch2/catch.hpp>

#if defined(LRIS_TEST_HIP)
#include <lris/hip/device_info.hpp>
namespace rt = lris::hip;
#else
#include <lris/cuda/device_info.hpp>
namespace rt = lris::cuda;
#endif

TEST_CASE("format_runtime_version and to_string") {
#if defined(LRIS_TEST_HIP)
  CHECK(rt::format_runtime_version(50221153) == "5.2.21153");
  CHECK(rt::format_runtime_version(60032830) == "6.0.32830");
#else
  CHECK(rt::format_runtime_version(13000) == "13.0");
  CHECK(rt::format_runtime_version(12040) == "12.4");
  CHECK(rt::format_runtime_version(11080) == "11.8");
#endif
  CHECK(rt::format_runtime_version(0) == "none");

  using rt::runtime_state;
  CHECK(lris::gpu::to_string(runtime_state::ready) == "ready");
  CHECK(lris::gpu::to_string(runtime_state::no_driver) == "no_driver");
  CHECK(lris::gpu::to_string(runtime_state::driver_too_old) == "driver_too_old");
  CHECK(lris::gpu::to_string(runtime_state::no_device) == "no_device");
  CHECK(lris::gpu::to_string(runtime_state::error) == "error");
  CHECK_FALSE(rt::runtime_info{}.usable());
}

TEST_CASE("runtime_status never throws, and says why a runtime is unusable") {
  const auto status = rt::runtime_status();
  if (status.usable()) {
    CHECK(status.device_count > 0);
    CHECK(status.reason.empty());
  } else {
    CHECK(status.device_count == 0);
    CHECK_FALSE(status.reason.empty());
    CHECK(rt::list_devices().empty());
  }
}
