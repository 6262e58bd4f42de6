#pragma once
// lris calibrate --disk DIR: which cold-read method the storage device holding DIR reads
// fastest with, measured through LRIS's own loads, saved in the profile under the device's
// name ("disk <major>:<minor>").

#include <cstddef>
#include <filesystem>
#include <string>

namespace lris::tool {

struct disk_calibration_options {
  std::filesystem::path dir;          ///< where the test file is written (and removed)
  std::size_t bytes = std::size_t{2} << 30;
  int rounds = 3;
  std::filesystem::path profile;      ///< the profile file to save into
  bool json = false;
  bool dry_run = false;
};

/// Runs the calibration and prints its table (or JSON); returns the exit code.
int calibrate_disk(const disk_calibration_options& o);

}  // namespace lris::tool
