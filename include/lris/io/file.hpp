#pragma once
/// @file
/// @brief io::file: an open file for the io engine, with a second descriptor opened O_DIRECT
/// where the file system allows it (not tmpfs, for one), and the alignment direct IO needs.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

namespace lris::io {

/// @brief How to open a file.
enum class open_mode {
  read,        ///< existing file, read only
  write,       ///< create or truncate, write only
  read_write,  ///< existing file, read and write
  create,      ///< create or truncate, read and write
};

/// @brief An open file: a buffered descriptor, and an O_DIRECT one where possible. Move-only;
/// closes both on destruction.
class file {
 public:
  /// @brief Opens `path`. Throws lris::io_error naming the path and the errno when the file
  /// cannot be opened; a refused O_DIRECT is not an error (direct() is then false and
  /// direct_refusal() says why).
  explicit file(const std::filesystem::path& path, open_mode mode = open_mode::read);
  file(file&& o) noexcept;
  file& operator=(file&& o) noexcept;
  file(const file&) = delete;
  file& operator=(const file&) = delete;
  ~file();

  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }
  [[nodiscard]] int fd() const noexcept { return fd_; }
  /// @brief The O_DIRECT descriptor; -1 when direct() is false.
  [[nodiscard]] int direct_fd() const noexcept { return direct_fd_; }
  [[nodiscard]] bool direct() const noexcept { return direct_fd_ >= 0; }
  /// @brief Why there is no O_DIRECT descriptor, e.g. "O_DIRECT refused by the file system
  /// (EINVAL)"; empty when direct() is true.
  [[nodiscard]] const std::string& direct_refusal() const noexcept { return direct_refusal_; }
  /// @brief The alignment of file offsets and lengths for O_DIRECT (the device's logical
  /// block size where statx reports it, at least 512; else 4096).
  [[nodiscard]] std::size_t direct_alignment() const noexcept { return alignment_; }
  /// @brief The alignment of memory for O_DIRECT: what statx reports (often 4 bytes on NVMe,
  /// 512 on virtual disks), else direct_alignment(). Memory aligned to this much (at the first
  /// aligned file offset) takes O_DIRECT reads straight, with no bounce buffer.
  [[nodiscard]] std::size_t direct_memory_alignment() const noexcept { return memory_alignment_; }
  /// @brief The size in bytes now (fstat).
  [[nodiscard]] std::uint64_t size() const;
  /// @brief Sets the size (ftruncate); for writers that preallocate.
  void resize(std::uint64_t bytes);
  /// @brief Flushes written data to the device (fdatasync on both descriptors).
  void sync();

 private:
  void close() noexcept;
  std::filesystem::path path_;
  int fd_ = -1;
  int direct_fd_ = -1;
  std::size_t alignment_ = 4096;
  std::size_t memory_alignment_ = 4096;
  std::string direct_refusal_;
};

}  // namespace lris::io
