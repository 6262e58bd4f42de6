#pragma once
/// @file
/// @brief buffer: an owning, move-only array of elements from an allocator, typed by the
/// allocator's memory space.

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <limits>
#include <type_traits>
#include <utility>

#include <fmt/format.h>

#include <lris/concepts/memory_property.hpp>
#include <lris/concepts/allocator_policy.hpp>
#include <lris/error.hpp>
#include <lris/memory/detail/allocation.hpp>
#include <lris/memory/memory_span.hpp>

namespace lris {

/// @brief `size()` elements of `T` allocated from `Allocator` with default_alignment (or
/// alignof(T) when stricter), freed on destruction.
///
/// Elements are not initialised: the memory may be device memory the CPU cannot write, and
/// buffers are usually filled by a transfer. T must therefore be an implicit-lifetime type
/// (trivially copyable and destructible: bytes, numbers, PODs).
template <allocator_policy Allocator, class T = std::byte>
class buffer {
  static_assert(std::is_trivially_copyable_v<T> && std::is_trivially_destructible_v<T>,
                "buffer<A, T>: elements are never constructed or destroyed, so T must be "
                "trivially copyable and destructible");

 public:
  using allocator_type = Allocator;
  using space_type = typename Allocator::space;
  using value_type = T;
  /// @brief The alignment every buffer's data() has.
  static constexpr std::size_t alignment = std::max(default_alignment, alignof(T));

  /// @brief An empty buffer.
  buffer() noexcept(std::is_nothrow_default_constructible_v<Allocator>)
    requires std::default_initializable<Allocator>
  = default;

  /// @brief `count` elements from a default-constructed allocator.
  explicit buffer(std::size_t count)
    requires std::default_initializable<Allocator>
      : buffer(count, Allocator{}) {}

  /// @brief `count` elements from `allocator` (a copy is kept to free them).
  /// @throws lris::out_of_memory when count * sizeof(T) overflows or the allocator fails.
  buffer(std::size_t count, Allocator allocator) : allocator_(std::move(allocator)) {
    if (count > std::numeric_limits<std::size_t>::max() / sizeof(T)) {
      throw out_of_memory(fmt::format("buffer: cannot allocate {} elements of {} bytes (the "
                                      "byte count overflows size_t)",
                                      count, sizeof(T)),
                          std::numeric_limits<std::size_t>::max());
    }
    data_ = static_cast<T*>(allocator_.allocate(count * sizeof(T), alignment));
    size_ = count;
  }

  ~buffer() { reset(); }

  buffer(const buffer&) = delete;
  buffer& operator=(const buffer&) = delete;
  buffer(buffer&& other) noexcept(std::is_nothrow_move_constructible_v<Allocator>)
      : allocator_(std::move(other.allocator_)),
        data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)) {}
  buffer& operator=(buffer&& other) noexcept(std::is_nothrow_move_assignable_v<Allocator>) {
    if (this != &other) {
      reset();
      allocator_ = std::move(other.allocator_);
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }

  /// @brief Frees the elements now; the buffer becomes empty.
  void reset() noexcept {
    if (data_ == nullptr) return;
    allocator_.deallocate(data_, size_ * sizeof(T), alignment);
    data_ = nullptr;
    size_ = 0;
  }

  /// @brief The elements, typed by the allocator's memory space (and device, where the
  /// allocator has a backend).
  [[nodiscard]] memory_span<space_type, T> span() noexcept { return {data_, size_, device()}; }
  /// @brief The elements, read-only.
  [[nodiscard]] memory_span<space_type, const T> span() const noexcept {
    return {data_, size_, device()};
  }

  [[nodiscard]] T* data() noexcept { return data_; }
  [[nodiscard]] const T* data() const noexcept { return data_; }
  /// @brief The number of elements.
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  /// @brief size() * sizeof(T).
  [[nodiscard]] std::size_t size_bytes() const noexcept { return size_ * sizeof(T); }
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  /// @brief The allocator that frees the elements.
  [[nodiscard]] const Allocator& get_allocator() const noexcept { return allocator_; }

  /// @brief Element `i`, only where the CPU may read the memory.
  [[nodiscard]] T& operator[](std::size_t i) noexcept
    requires(has_property<Allocator, property::host_accessible>)
  {
    return data_[i];
  }
  [[nodiscard]] const T& operator[](std::size_t i) const noexcept
    requires(has_property<Allocator, property::host_accessible>)
  {
    return data_[i];
  }

 private:
  [[nodiscard]] int device() const noexcept {
    if constexpr (requires(const Allocator& a) {
                    { a.backend().device() } -> std::convertible_to<int>;
                  }) {
      return allocator_.backend().device();
    } else {
      return 0;
    }
  }

  Allocator allocator_{};
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace lris
