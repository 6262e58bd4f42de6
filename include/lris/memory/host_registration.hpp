#pragma once
/// @file
/// @brief host_registration: caller-owned host memory page-locked for a backend for as long as
/// the object lives.

#include <concepts>
#include <cstddef>
#include <span>
#include <type_traits>
#include <utility>

#include <lris/concepts/backend_policy.hpp>
#include <lris/memory/memory_span.hpp>

namespace lris {

/// @brief Registers [data, data + bytes) with a backend on construction and unregisters it on
/// destruction. Move-only; the memory itself stays the caller's and must outlive this object.
///
/// Use it to transfer from buffers LRIS did not allocate (a std::vector, an mmap of a file)
/// at pinned speed, without copying them into a staging buffer.
template <backend_policy Backend>
class host_registration {
 public:
  /// @brief Registers nothing.
  host_registration() noexcept(std::is_nothrow_default_constructible_v<Backend>)
    requires std::default_initializable<Backend>
  = default;

  /// @brief Registers `bytes` bytes at `data` with `backend`. Zero bytes register nothing.
  /// @throws whatever `backend.register_host` throws (overlap with an existing registration,
  /// runtime errors); nothing is registered then.
  host_registration(Backend backend, void* data, std::size_t bytes)
      : backend_(std::move(backend)) {
    if (bytes == 0) return;
    backend_.register_host(data, bytes);
    data_ = data;
    size_ = bytes;
  }

  /// @brief Registers the bytes of a host range (std::span, host_span, ...).
  template <class T>
    requires(!std::is_const_v<T>)
  host_registration(Backend backend, std::span<T> range)
      : host_registration(std::move(backend), range.data(), range.size_bytes()) {}

  /// @brief Registers the bytes of a pageable host span.
  template <class T>
    requires(!std::is_const_v<T>)
  host_registration(Backend backend, host_span<T> range)
      : host_registration(std::move(backend), range.data(), range.size_bytes()) {}

  ~host_registration() { reset(); }

  host_registration(const host_registration&) = delete;
  host_registration& operator=(const host_registration&) = delete;
  host_registration(host_registration&& other) noexcept(
      std::is_nothrow_move_constructible_v<Backend>)
      : backend_(std::move(other.backend_)),
        data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)) {}
  host_registration& operator=(host_registration&& other) noexcept(
      std::is_nothrow_move_assignable_v<Backend>) {
    if (this != &other) {
      reset();
      backend_ = std::move(other.backend_);
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }

  /// @brief Ends the registration now (if any). Never throws: a runtime's refusal to
  /// unregister is dropped, since the caller could not act on it either.
  void reset() noexcept {
    if (data_ == nullptr) return;
    try {
      backend_.unregister_host(data_);
    } catch (...) {
    }
    data_ = nullptr;
    size_ = 0;
  }

  /// @brief The registered bytes as pinned memory of `Backend` (empty when nothing is).
  [[nodiscard]] pinned_span<Backend> span() const noexcept {
    return {static_cast<std::byte*>(data_), size_, backend_.device()};
  }
  /// @brief The start of the registered range (null when nothing is registered).
  [[nodiscard]] void* data() const noexcept { return data_; }
  /// @brief The number of registered bytes.
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  /// @brief True while a range is registered.
  [[nodiscard]] bool registered() const noexcept { return data_ != nullptr; }
  /// @brief registered().
  [[nodiscard]] explicit operator bool() const noexcept { return registered(); }
  /// @brief The backend the range is registered with.
  [[nodiscard]] const Backend& backend() const noexcept { return backend_; }

 private:
  Backend backend_{};
  void* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace lris
