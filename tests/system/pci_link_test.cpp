// Tests of lris/system/pci_link.hpp: link-speed parsing, PCI
// address spelling, sysfs reading (against a fake directory and against this machine's real
// /sys/bus/pci, which shows the kernel's actual spellings).

#include <lris/system/pci_link.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <system_error>

#include <unistd.h>

#include <catch2/catch.hpp>

namespace {

namespace fs = std::filesystem;
using lris::pcie_generation_from_speed;

/// A directory under the temp dir, removed with everything in it at scope exit.
class temp_dir {
 public:
  temp_dir() {
    static int counter = 0;
    path_ = fs::temp_directory_path() /
            ("lris_pci_sysfs_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(path_);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  ~temp_dir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  [[nodiscard]] const fs::path& path() const noexcept { return path_; }
  void write(const std::string& name, const std::string& text) const {
    std::ofstream(path_ / name) << text;
  }

 private:
  fs::path path_;
};

std::string read_all(const fs::path& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST_CASE("pcie_generation_from_speed maps every spelling the kernel has used") {
  // Since Linux 5.x: "<rate> GT/s PCIe"; before: "<rate> GT/s" with integers unpadded.
  CHECK(pcie_generation_from_speed("2.5 GT/s PCIe") == 1);
  CHECK(pcie_generation_from_speed("5.0 GT/s PCIe") == 2);
  CHECK(pcie_generation_from_speed("8.0 GT/s PCIe") == 3);
  CHECK(pcie_generation_from_speed("16.0 GT/s PCIe") == 4);
  CHECK(pcie_generation_from_speed("32.0 GT/s PCIe") == 5);
  CHECK(pcie_generation_from_speed("64.0 GT/s PCIe") == 6);
  CHECK(pcie_generation_from_speed("128.0 GT/s PCIe") == 7);
  CHECK(pcie_generation_from_speed("2.5 GT/s") == 1);
  CHECK(pcie_generation_from_speed("5 GT/s") == 2);
  CHECK(pcie_generation_from_speed("8 GT/s") == 3);
  CHECK(pcie_generation_from_speed("16 GT/s") == 4);
  CHECK(pcie_generation_from_speed("32 GT/s") == 5);
  CHECK(pcie_generation_from_speed("64 GT/s") == 6);
}

TEST_CASE("pcie_generation_from_speed ignores surrounding whitespace, as read from a file") {
  CHECK(pcie_generation_from_speed("32.0 GT/s PCIe\n") == 5);
  CHECK(pcie_generation_from_speed("  16 GT/s \n") == 4);
  CHECK(pcie_generation_from_speed("8.0GT/s") == 3);
  CHECK(pcie_generation_from_speed("2.50 GT/s") == 1);
}

TEST_CASE("pcie_generation_from_speed returns 0 for what is not a PCIe rate") {
  for (const std::string_view text :
       {"", "\n", "Unknown", "Unknown speed", "Unknown\n", "GT/s", "2.5", "16.0", "7 GT/s",
        "2.55 GT/s", "2. GT/s", ".5 GT/s", "-8 GT/s", "8 GB/s", "8 GT/sPCIe", "0 GT/s",
        "99999999999999999999 GT/s", "16.0 MT/s", "x16"}) {
    INFO("speed text: \"" << text << "\"");
    CHECK(pcie_generation_from_speed(text) == 0);
  }
}

TEST_CASE("normalize_pci_bus_id writes the kernel's spelling") {
  using lris::normalize_pci_bus_id;
  CHECK(normalize_pci_bus_id("0000:1B:00.0") == "0000:1b:00.0");
  CHECK(normalize_pci_bus_id("00000000:1B:00.0") == "0000:1b:00.0");  // nvidia-smi, NVML
  CHECK(normalize_pci_bus_id("0000:c1:1f.7\n") == "0000:c1:1f.7");
  CHECK(normalize_pci_bus_id("0:3:0.0") == "0000:03:00.0");
  CHECK(normalize_pci_bus_id("10000:01:00.0") == "10000:01:00.0");  // Intel VMD domains
  for (const std::string_view bad :
       {"", "garbage", "0000:1b:00", "0000:1b.00.0", "0000:1g:00.0", "0000:100:00.0",
        "0000:1b:20.0", "0000:1b:00.8", "0000::00.0", "100000000:00:00.0", "0000:1b:00.0x"}) {
    INFO("bus id: \"" << bad << "\"");
    CHECK(normalize_pci_bus_id(bad).empty());
  }
}

TEST_CASE("read_pci_sysfs reads link speed, width and NUMA node") {
  const temp_dir dir;
  dir.write("current_link_speed", "16.0 GT/s PCIe\n");
  dir.write("current_link_width", "8\n");
  dir.write("max_link_speed", "32.0 GT/s PCIe\n");
  dir.write("max_link_width", "16\n");
  dir.write("numa_node", "1\n");
  const lris::pci_sysfs_info info = lris::read_pci_sysfs(dir.path());
  CHECK(info.current_link.generation == 4);
  CHECK(info.current_link.width == 8);
  CHECK(info.max_link.generation == 5);
  CHECK(info.max_link.width == 16);
  CHECK(info.numa_node == 1);
}

TEST_CASE("read_pci_sysfs gives unknown values for missing or malformed files") {
  SECTION("no such device") {
    const auto info = lris::read_pci_sysfs("/nonexistent/lris/0000:00:00.0");
    CHECK(info.current_link.generation == 0);
    CHECK(info.current_link.width == 0);
    CHECK(info.max_link.generation == 0);
    CHECK(info.max_link.width == 0);
    CHECK(info.numa_node == -1);
  }
  SECTION("a link that is down and a machine without NUMA") {
    const temp_dir dir;
    dir.write("current_link_speed", "Unknown\n");
    dir.write("current_link_width", "0\n");
    dir.write("max_link_speed", "8.0 GT/s PCIe\n");
    dir.write("max_link_width", "garbage\n");
    dir.write("numa_node", "-1\n");
    const auto info = lris::read_pci_sysfs(dir.path());
    CHECK(info.current_link.generation == 0);
    CHECK(info.current_link.width == 0);
    CHECK(info.max_link.generation == 3);
    CHECK(info.max_link.width == 0);
    CHECK(info.numa_node == -1);
  }
  SECTION("out-of-range values") {
    const temp_dir dir;
    dir.write("max_link_width", "64\n");
    dir.write("numa_node", "-7\n");
    const auto info = lris::read_pci_sysfs(dir.path());
    CHECK(info.max_link.width == 0);
    CHECK(info.numa_node == -1);
  }
}

TEST_CASE("read_pci_sysfs understands this machine's PCIe devices") {
  // Whatever PCIe devices this machine has (GPU or not), their sysfs text is the real thing.
  const fs::path root = "/sys/bus/pci/devices";
  std::error_code ec;
  int checked = 0;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const std::string speed = read_all(entry.path() / "max_link_speed");
    if (speed.find("GT/s") == std::string::npos) continue;  // not PCIe, or "Unknown"
    INFO(entry.path().string() << ": max_link_speed \"" << speed << "\"");
    const auto info = lris::read_pci_sysfs(entry.path());
    CHECK(info.max_link.generation >= 1);
    CHECK(info.max_link.generation <= 7);
    CHECK(info.numa_node >= -1);
    ++checked;
  }
  if (checked == 0) WARN("no PCIe device with a known link speed under " << root.string());
}
