#pragma once
/// @file
/// @brief process_mappings: which addresses of this process may be written, as the kernel's
/// /proc/self/maps lists them, to refuse a destination before a copy into it would fault.
///
/// Memory a caller hands over (a tensor of another library's, taken through DLPack) may lie in
/// a read-only mapping: a file mapped for reading, a constant buffer. A read from a file into
/// it fails with EFAULT, but a CPU copy into it kills the process. One read of the maps (a few
/// thousand lines in a process with a GPU runtime: about a millisecond) answers for every
/// destination of a load. madvise or process_vm_writev cannot: they refuse memory the GPU
/// driver mapped (pinned host memory), which may be written.
#include <cstddef>
#include <cstdint>
#include <vector>

namespace lris {

class process_mappings {
 public:
  /// @brief The mappings of this process now. Where /proc is not mounted, an empty set that
  /// says every address may be written (known() is false): the caller cannot check, only trust.
  [[nodiscard]] static process_mappings read();

  /// @brief Whether the mappings could be read.
  [[nodiscard]] bool known() const noexcept { return known_; }
  /// @brief The first byte of [p, p + n) that lies in no mapping or in one without write
  /// permission; nullptr when this process may write all of it (or n is 0, or !known()).
  [[nodiscard]] const std::byte* first_unwritable(const void* p, std::size_t n) const noexcept;
  /// @brief The same for reading: the first byte in no mapping or in one without read
  /// permission.
  [[nodiscard]] const std::byte* first_unreadable(const void* p, std::size_t n) const noexcept;

 private:
  struct mapping {
    std::uintptr_t begin = 0, end = 0;
    bool readable = false;
    bool writable = false;
  };
  [[nodiscard]] const std::byte* first_without(const void* p, std::size_t n,
                                               bool mapping::*allowed) const noexcept;
  std::vector<mapping> maps_;  // by address, as the kernel lists them
  bool known_ = false;
};

/// @brief The cheap check for one or two ranges: whether this process may read (and, with
/// `write`, write) the first and the last byte of [p, p + n). Each is copied into a pipe and,
/// for writing, back to where it was, unchanged: a fault there is an error (EFAULT) returned
/// by the kernel, not a signal, and it works for any mapping, the GPU driver's included. The
/// byte at fault, or nullptr (also when n is 0, or no pipe could be made: it cannot tell). Blind
/// to the bytes between the two ends: for memory of one allocation, where the permissions are
/// the same throughout; a few microseconds, against reading the mappings' hundreds.
[[nodiscard]] const std::byte* probe_ends(const void* p, std::size_t n, bool write) noexcept;

}  // namespace lris
