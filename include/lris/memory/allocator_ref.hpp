#pragma once
/// @file
/// @brief allocator_ref: a non-owning, type-erased reference to any allocator, for choices
/// made at run time (a command-line flag, a calibration profile).

#include <cstddef>
#include <string_view>
#include <type_traits>

#include <lris/concepts/allocator_policy.hpp>
#include <lris/concepts/memory_properties.hpp>
#include <lris/memory/detail/allocation.hpp>

namespace lris {

/// @brief Refers to an allocator_policy model without owning it: an object pointer plus a
/// static table of functions (no virtual base class, no allocation).
///
/// The referenced allocator must outlive the reference. allocator_ref offers allocate and
/// deallocate like any allocator, but its properties and space are known only at run time
/// (properties(), space_name()), so it deliberately does not model allocator_policy: code that
/// needs compile-time properties (memory_span typing, transfer selection) must be given the
/// concrete allocator. Copies refer to the same allocator.
class allocator_ref {
 public:
  /// @brief Refers to `allocator`, which must outlive this reference and its copies.
  // has_memory_properties is tested first: it is cheap, and it stops the recursion that
  // allocator_policy's equality_comparable check would start for types (such as iterators
  // over allocator_refs) whose operator== candidates include allocator_ref's own.
  template <class A>
    requires(!std::is_same_v<std::remove_cv_t<A>, allocator_ref>) && has_memory_properties<A> &&
            allocator_policy<A>
  allocator_ref(A& allocator) noexcept  // NOLINT(google-explicit-constructor): a reference
      : object_(&allocator), table_(&table_for<A>) {}
  /// @brief A temporary would dangle at once.
  template <class A>
    requires has_memory_properties<A> && allocator_policy<A>
  allocator_ref(const A&&) = delete;

  /// @brief The referenced allocator's allocate(bytes, alignment).
  [[nodiscard]] void* allocate(std::size_t bytes, std::size_t alignment = default_alignment) const {
    return table_->allocate(object_, bytes, alignment);
  }
  /// @brief The referenced allocator's deallocate(p, bytes, alignment).
  void deallocate(void* p, std::size_t bytes,
                  std::size_t alignment = default_alignment) const noexcept {
    table_->deallocate(object_, p, bytes, alignment);
  }

  /// @brief The referenced allocator's properties.
  [[nodiscard]] memory_properties properties() const noexcept { return table_->properties; }
  /// @brief The name of its memory space: "host", "pinned" or "device".
  [[nodiscard]] std::string_view space_name() const noexcept { return table_->space_name; }
  /// @brief Its name (`A::name`), or "allocator" when it publishes none.
  [[nodiscard]] std::string_view name() const noexcept { return table_->name; }
  /// @brief True when the referenced allocator is an `A`.
  template <allocator_policy A>
  [[nodiscard]] bool holds() const noexcept {
    return table_ == &table_for<A>;
  }
  /// @brief The referenced allocator as an `A`, or null when it is of another type.
  template <allocator_policy A>
  [[nodiscard]] A* target() const noexcept {
    return holds<A>() ? static_cast<A*>(object_) : nullptr;
  }

  /// @brief Equal when both refer to allocators of one type that compare equal, i.e. when
  /// either may free what the other allocated.
  friend bool operator==(const allocator_ref& a, const allocator_ref& b) noexcept {
    return a.table_ == b.table_ &&
           (a.object_ == b.object_ || a.table_->equal(a.object_, b.object_));
  }

 private:
  struct table {
    void* (*allocate)(void*, std::size_t, std::size_t);
    void (*deallocate)(void*, void*, std::size_t, std::size_t) noexcept;
    bool (*equal)(const void*, const void*) noexcept;
    memory_properties properties;
    std::string_view space_name;
    std::string_view name;
  };

  template <class A>
  static constexpr table table_for{
      [](void* self, std::size_t bytes, std::size_t alignment) -> void* {
        return static_cast<A*>(self)->allocate(bytes, alignment);
      },
      [](void* self, void* p, std::size_t bytes, std::size_t alignment) noexcept {
        static_cast<A*>(self)->deallocate(p, bytes, alignment);
      },
      [](const void* a, const void* b) noexcept -> bool {
        return *static_cast<const A*>(a) == *static_cast<const A*>(b);
      },
      A::properties,
      A::space::name,
      detail::allocator_name<A>(),
  };

  void* object_;
  const table* table_;
};

}  // namespace lris
