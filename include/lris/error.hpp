#pragma once
/// @file
/// @brief The exceptions LRIS throws, and the LRIS_EXPECTS precondition check.
///
/// Every message names what is at fault: sizes, addresses, files, offsets. Destructors never
/// throw. `io_error` derives from std::system_error (it carries an errno); everything else
/// derives from lris::error.

#include <cstddef>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>

#include <fmt/format.h>

#include <lris/config.hpp>

namespace lris {

/// @brief Base of every LRIS exception except io_error.
class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// @brief A caller broke a precondition: null pointer, size mismatch, overlap, misalignment.
class invalid_argument : public error {
 public:
  using error::error;
};

/// @brief An allocation could not be satisfied. `requested()` is the size that failed.
class out_of_memory : public error {
 public:
  out_of_memory(const std::string& what, std::size_t requested)
      : error(what), requested_(requested) {}
  /// @brief The number of bytes that were asked for.
  [[nodiscard]] std::size_t requested() const noexcept { return requested_; }

 private:
  std::size_t requested_;
};

/// @brief A feature the caller asked for is not available on this machine (and no fallback was
/// allowed), e.g. 1 GiB huge pages with none reserved.
class unsupported : public error {
 public:
  using error::error;
};

/// @brief A transfer was cancelled before it finished.
class cancelled : public error {
 public:
  using error::error;
};

/// @brief A file's contents violate its format (safetensors, profiles).
class format_error : public error {
 public:
  using error::error;
};

/// @brief Data did not match the checksum or digest it was checked against.
class integrity_error : public error {
 public:
  using error::error;
};

/// @brief A device runtime (CUDA, HIP) reported an error. `code()` is the runtime's code.
class device_error : public error {
 public:
  device_error(const std::string& what, int code) : error(what), code_(code) {}
  /// @brief The runtime's numeric error code.
  [[nodiscard]] int code() const noexcept { return code_; }

 private:
  int code_;
};

/// @brief The CUDA runtime reported an error.
class cuda_error : public device_error {
 public:
  using device_error::device_error;
};

/// @brief The HIP runtime reported an error.
class hip_error : public device_error {
 public:
  using device_error::device_error;
};

/// @brief A device is lost to a sticky runtime error (an illegal address, a kernel fault, an
/// uncorrectable ECC error): its context cannot recover, and every later call on the device
/// in this process throws device_lost again. The message names the first failure (call,
/// error, device, file:line); code() is the runtime's code of that failure. A new process is
/// needed to use the device again.
class device_lost : public device_error {
 public:
  device_lost(const std::string& what, int code, int device)
      : device_error(what, code), device_(device) {}
  /// @brief The device that was lost; -1 when the runtime could not say which.
  [[nodiscard]] int device() const noexcept { return device_; }

 private:
  int device_;
};

/// @brief One rank of a transfer to several devices (a fan-out) failed: rank() and device()
/// name it, and the message says what went wrong there.
class rank_error : public error {
 public:
  rank_error(const std::string& what, int rank, std::string device)
      : error(what), rank_(rank), device_(std::move(device)) {}
  /// @brief The rank (its index among the transfer's devices).
  [[nodiscard]] int rank() const noexcept { return rank_; }
  /// @brief Its device, e.g. "cuda:1".
  [[nodiscard]] const std::string& device() const noexcept { return device_; }

 private:
  int rank_;
  std::string device_;
};

/// @brief A rank of a fan-out did not finish its part in the time allowed.
class rank_timeout : public rank_error {
 public:
  using rank_error::rank_error;
};

/// @brief An operating-system call on a file or device failed; code() holds the errno.
class io_error : public std::system_error {
 public:
  io_error(int errno_value, const std::string& what)
      : std::system_error(errno_value, std::generic_category(), what) {}
};

namespace detail {
[[noreturn]] inline void throw_expects(const char* condition, const std::string& message,
                                       const char* file, int line) {
  throw invalid_argument(fmt::format("{} (precondition `{}` failed at {}:{})", message, condition,
                                     file, line));
}
}  // namespace detail

}  // namespace lris

/// @brief Throws lris::invalid_argument with the formatted message when `cond` is false.
/// Usage: `LRIS_EXPECTS(p != nullptr, "copy: source is null ({} bytes)", n);`
#define LRIS_EXPECTS(cond, ...)                                                         \
  do {                                                                                  \
    if (LRIS_UNLIKELY(!(cond)))                                                         \
      ::lris::detail::throw_expects(#cond, ::fmt::format(__VA_ARGS__), __FILE__, __LINE__); \
  } while (false)
