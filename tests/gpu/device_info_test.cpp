// Tests of runtime_status and list_devices on real GPUs, against what the CUDA runtime and sysfs
// say when the test asks them itself. Exits 77 (skipped) without a driver or a device.

#include <lris/cuda/device_info.hpp>

#include <cctype>
#include <cstddef>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <string>

#include <cuda_runtime.h>

#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

namespace {

namespace fs = std::filesystem;
namespace cuda = lris::cuda;

std::string read_all(const fs::path& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string lower(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

}  // namespace

TEST_CASE("runtime_status agrees with the CUDA runtime") {
  const cuda::runtime_info status = cuda::runtime_status();
  REQUIRE(status.usable());
  int count = 0;
  REQUIRE(cudaGetDeviceCount(&count) == cudaSuccess);
  CHECK(status.device_count == count);
  int driver = 0;
  int runtime = 0;
  REQUIRE(cudaDriverGetVersion(&driver) == cudaSuccess);
  REQUIRE(cudaRuntimeGetVersion(&runtime) == cudaSuccess);
  CHECK(status.driver_version == driver);
  CHECK(status.runtime_version == runtime);
  CHECK(status.error_code == 0);
  CHECK(status.error_name.empty());
  CHECK(status.reason.empty());
}

TEST_CASE("list_devices describes every device") {
  const auto devices = cuda::list_devices();
  int count = 0;
  REQUIRE(cudaGetDeviceCount(&count) == cudaSuccess);
  REQUIRE(devices.size() == static_cast<std::size_t>(count));

  const std::regex bus_id_format("[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\\.[0-7]");
  for (std::size_t i = 0; i < devices.size(); ++i) {
    const cuda::device_info& device = devices[i];
    INFO("device " << i << ": " << device.name << " at " << device.pci_bus_id);
    std::printf(
        "device %d: %s, cc %d.%d, %d SMs, %llu/%llu bytes free, %s, Gen%d x%d (max Gen%d "
        "x%d), numa %d, driver %s, runtime %s\n",
        device.ordinal, device.name.c_str(), device.compute_capability_major,
        device.compute_capability_minor, device.multiprocessor_count,
        static_cast<unsigned long long>(device.free_memory_bytes),
        static_cast<unsigned long long>(device.total_memory_bytes), device.pci_bus_id.c_str(),
        device.current_link.generation, device.current_link.width, device.max_link.generation,
        device.max_link.width, device.numa_node,
        cuda::format_runtime_version(device.driver_version).c_str(),
        cuda::format_runtime_version(device.runtime_version).c_str());

    CHECK(device.ordinal == static_cast<int>(i));
    cudaDeviceProp properties{};
    REQUIRE(cudaGetDeviceProperties(&properties, device.ordinal) == cudaSuccess);
    CHECK_FALSE(device.name.empty());
    CHECK(device.name == properties.name);
    CHECK(device.compute_capability_major >= 1);
    CHECK(device.compute_capability_major == properties.major);
    CHECK(device.arch == "sm_" + std::to_string(properties.major) + std::to_string(properties.minor));
    CHECK(device.compute_capability_minor == properties.minor);
    CHECK(device.multiprocessor_count > 0);
    CHECK(device.multiprocessor_count == properties.multiProcessorCount);

    CHECK(device.total_memory_bytes > 0);
    CHECK(device.free_memory_bytes > 0);
    CHECK(device.free_memory_bytes <= device.total_memory_bytes);
    CHECK(device.total_memory_bytes <= properties.totalGlobalMem);

    CHECK(std::regex_match(device.pci_bus_id, bus_id_format));
    char bus_id[64] = {};
    REQUIRE(cudaDeviceGetPCIBusId(bus_id, sizeof bus_id, device.ordinal) == cudaSuccess);
    CHECK(device.pci_bus_id == lris::normalize_pci_bus_id(bus_id));
    const std::string bus_and_slot = device.pci_bus_id.substr(device.pci_bus_id.find(':') + 1, 5);
    char expected[16] = {};
    std::snprintf(expected, sizeof expected, "%02x:%02x", properties.pciBusID,
                  properties.pciDeviceID);
    CHECK(bus_and_slot == lower(expected));

    const fs::path sysfs = fs::path("/sys/bus/pci/devices") / device.pci_bus_id;
    if (fs::exists(sysfs / "max_link_speed")) {
      // A PCIe GPU: the link must be known, and the current one no faster than the maximum.
      CHECK(device.max_link.generation >= 1);
      CHECK(device.max_link.generation <= 6);
      CHECK(device.max_link.width > 0);
      CHECK(device.current_link.generation >= 1);
      CHECK(device.current_link.generation <= device.max_link.generation);
      CHECK(device.current_link.width > 0);
      CHECK(device.current_link.width <= device.max_link.width);
    } else {
      WARN("no " << sysfs.string() << "/max_link_speed: PCIe link checks skipped");
    }
    const std::string numa_text = read_all(sysfs / "numa_node");
    const int expected_numa = numa_text.empty() ? -1 : std::stoi(numa_text);
    CHECK(device.numa_node == (expected_numa < 0 ? -1 : expected_numa));

    const cuda::runtime_info status = cuda::runtime_status();
    CHECK(device.driver_version == status.driver_version);
    CHECK(device.runtime_version == status.runtime_version);

    // The runtime's own reading, taken right after: the totals must agree exactly.
    REQUIRE(cudaSetDevice(device.ordinal) == cudaSuccess);
    std::size_t free_bytes = 0;
    std::size_t total_bytes = 0;
    REQUIRE(cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess);
    CHECK(device.total_memory_bytes == total_bytes);
  }
}

TEST_CASE("list_devices leaves the calling thread's current device as it was") {
  int count = 0;
  REQUIRE(cudaGetDeviceCount(&count) == cudaSuccess);
  const int last = count - 1;
  REQUIRE(cudaSetDevice(last) == cudaSuccess);
  (void)cuda::list_devices();
  int current = -1;
  REQUIRE(cudaGetDevice(&current) == cudaSuccess);
  CHECK(current == last);
  CHECK(cudaGetLastError() == cudaSuccess);
}

int main(int argc, char** argv) {
  const cuda::runtime_info status = cuda::runtime_status();
  if (!status.usable()) {
    std::printf("cuda runtime %s, driver %s: %s (%s) [%s]\n",
                cuda::format_runtime_version(status.runtime_version).c_str(),
                cuda::format_runtime_version(status.driver_version).c_str(),
                std::string(cuda::to_string(status.state)).c_str(), status.reason.c_str(),
                status.error_name.c_str());
    // A missing driver or device is the machine, not the code; a runtime that fails on a
    // machine that has both is a real failure.
    if (status.state == cuda::runtime_state::error) return 1;
    std::printf("skipped: these tests need a CUDA driver and a device\n");
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
