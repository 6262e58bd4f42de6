#pragma once
// lris bench --disk: the disk tables.

#include <cstdint>
#include <string>
#include <vector>

#include "bench_table.hpp"

namespace lris::tool {

struct disk_bench_options {
  std::string directory;               // where the test file goes; "" is the current directory
  std::string file;                    // read this existing file instead of a new test file
  std::uint64_t bytes = std::uint64_t{4} << 30;
  int repeats = 3;
};

/// Reads and writes a file of o.bytes in o.directory: to host memory, and to device 0 of the
/// GPU backend when there is one (else the host backend's device memory).
std::vector<bench_table> disk_bench(const disk_bench_options& o, bool tty);

}  // namespace lris::tool
