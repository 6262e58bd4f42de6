#include <lris/io/file.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>
#include <tuple>
#include <utility>

#include <fmt/format.h>

#include <lris/error.hpp>

namespace lris::io {

namespace {

int flags_of(open_mode m) {
  switch (m) {
    case open_mode::read: return O_RDONLY;
    case open_mode::write: return O_WRONLY | O_CREAT | O_TRUNC;
    case open_mode::read_write: return O_RDWR;
    case open_mode::create: return O_RDWR | O_CREAT | O_TRUNC;
  }
  return O_RDONLY;
}

// The direct-IO alignments statx reports (Linux 6.1+ with STATX_DIOALIGN) of offsets and of
// memory, else the usual 4096 for both.
std::pair<std::size_t, std::size_t> direct_alignments_of(int fd) {
#ifdef STATX_DIOALIGN
  struct statx sx {};
  if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 && (sx.stx_mask & STATX_DIOALIGN) &&
      sx.stx_dio_offset_align > 0) {
    const std::size_t offsets = std::max<std::size_t>(sx.stx_dio_offset_align, 512);
    const std::size_t memory = sx.stx_dio_mem_align > 0 ? sx.stx_dio_mem_align : offsets;
    return {offsets, memory};
  }
#endif
  (void)fd;
  return {4096, 4096};
}

}  // namespace

file::file(const std::filesystem::path& path, open_mode mode) : path_(path) {
  const int flags = flags_of(mode) | O_CLOEXEC;
  fd_ = ::open(path.c_str(), flags, 0644);
  if (fd_ < 0) {
    throw io_error(errno, fmt::format("cannot open {}", path.string()));
  }
  // The direct descriptor must not truncate what the first one just created.
  direct_fd_ = ::open(path.c_str(), (flags & ~(O_CREAT | O_TRUNC)) | O_DIRECT, 0644);
  if (direct_fd_ < 0) {
    const int e = errno;
    direct_refusal_ = e == EINVAL
                          ? std::string("O_DIRECT refused by the file system (EINVAL)")
                          : fmt::format("O_DIRECT open failed: {}", std::system_category().message(e));
  } else {
    std::tie(alignment_, memory_alignment_) = direct_alignments_of(direct_fd_);
  }
}

file::file(file&& o) noexcept
    : path_(std::move(o.path_)),
      fd_(std::exchange(o.fd_, -1)),
      direct_fd_(std::exchange(o.direct_fd_, -1)),
      alignment_(o.alignment_),
      memory_alignment_(o.memory_alignment_),
      direct_refusal_(std::move(o.direct_refusal_)) {}

file& file::operator=(file&& o) noexcept {
  if (this != &o) {
    close();
    path_ = std::move(o.path_);
    fd_ = std::exchange(o.fd_, -1);
    direct_fd_ = std::exchange(o.direct_fd_, -1);
    alignment_ = o.alignment_;
    memory_alignment_ = o.memory_alignment_;
    direct_refusal_ = std::move(o.direct_refusal_);
  }
  return *this;
}

file::~file() { close(); }

void file::close() noexcept {
  if (fd_ >= 0) ::close(fd_);
  if (direct_fd_ >= 0) ::close(direct_fd_);
  fd_ = direct_fd_ = -1;
}

std::uint64_t file::size() const {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) throw io_error(errno, fmt::format("cannot stat {}", path_.string()));
  return static_cast<std::uint64_t>(st.st_size);
}

void file::resize(std::uint64_t bytes) {
  if (::ftruncate(fd_, static_cast<off_t>(bytes)) != 0) {
    throw io_error(errno, fmt::format("cannot resize {} to {} bytes", path_.string(), bytes));
  }
}

void file::sync() {
  for (int fd : {fd_, direct_fd_}) {
    if (fd >= 0 && ::fdatasync(fd) != 0) {
      throw io_error(errno, fmt::format("cannot flush {}", path_.string()));
    }
  }
}

}  // namespace lris::io
