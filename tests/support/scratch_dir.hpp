#pragma once
// A directory of a test program's files under the working directory, made on first use and
// removed with everything in it when the program ends.
#include <filesystem>
#include <string>
#include <system_error>

namespace lris::test {

class scratch_dir {
 public:
  explicit scratch_dir(const std::string& name)
      : path_(std::filesystem::current_path() / name) {
    std::filesystem::create_directories(path_);
  }
  ~scratch_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  scratch_dir(const scratch_dir&) = delete;
  scratch_dir& operator=(const scratch_dir&) = delete;
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace lris::test
