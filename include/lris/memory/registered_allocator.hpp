#pragma once
/// @file
/// @brief registered_allocator: memory from any host allocator, page-locked for a backend by
/// registration (cudaHostRegister/hipHostRegister, or host_backend's stand-in).

#include <concepts>
#include <cstddef>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include <fmt/format.h>

#include <lris/concepts/memory_property.hpp>
#include <lris/backends/host_backend.hpp>
#include <lris/concepts/allocator_policy.hpp>
#include <lris/concepts/backend_policy.hpp>
#include <lris/concepts/memory_properties.hpp>
#include <lris/memory/detail/allocation.hpp>
#include <lris/memory/page_aligned_allocator.hpp>
#include <lris/memory/pageable_allocator.hpp>
#include <lris/concepts/memory_space.hpp>

namespace lris {

/// @brief Allocates from `Upstream` (any host-accessible, not yet pinned allocator), then
/// registers the block with `Backend` so that its DMA engines reach it at full speed.
///
/// This is how NUMA-local or huge-page memory becomes pinned: registered_allocator<
/// numa_allocator, cuda_backend>. Registration costs about as much as pinned allocation, so
/// put a caching_pool over this allocator (not under it: a pool under it would register every
/// reuse again). A page-aligned upstream keeps two blocks from sharing a page, which some
/// runtimes refuse to register twice.
template <allocator_policy Upstream, backend_policy Backend>
class registered_allocator {
  static_assert(has_property<Upstream, property::host_accessible>,
                "registered_allocator: only host-accessible memory can be registered");
  static_assert(!has_property<Upstream, property::pinned>,
                "registered_allocator: the upstream memory is already pinned; registering it "
                "again is an error in CUDA and HIP");

 public:
  using space = pinned_space<Backend>;
  static constexpr memory_properties properties{
      .host_accessible = true,
      .device_accessible = true,
      .pinned = true,
      .page_aligned = Upstream::properties.page_aligned};
  /// @brief The allocator's name in messages.
  static constexpr std::string_view name = "registered_allocator";

  /// @brief A default upstream registered with a default backend.
  registered_allocator()
    requires std::default_initializable<Upstream> && std::default_initializable<Backend>
  = default;
  /// @brief Memory from `upstream` registered with `backend`.
  registered_allocator(Upstream upstream, Backend backend)
      : upstream_(std::move(upstream)), backend_(std::move(backend)) {}

  /// @brief `bytes` bytes from the upstream, registered with the backend.
  /// @throws lris::invalid_argument when `alignment` is not a power of two.
  /// @throws lris::out_of_memory when the upstream fails (registration errors pass through
  /// as the backend throws them, after the block has been returned upstream).
  [[nodiscard]] void* allocate(std::size_t bytes, std::size_t alignment = default_alignment) {
    detail::check_alignment(label(), alignment);
    const std::size_t n = detail::at_least_one(bytes);
    void* p = nullptr;
    try {
      p = upstream_.allocate(n, alignment);
    } catch (const out_of_memory& e) {
      detail::throw_out_of_memory(label(), bytes, alignment, e.what());
    }
    try {
      backend_.register_host(p, n);
    } catch (...) {
      upstream_.deallocate(p, n, alignment);
      throw;
    }
    return p;
  }

  /// @brief Unregisters, then returns the block upstream.
  void deallocate(void* p, std::size_t bytes, std::size_t alignment = default_alignment) noexcept {
    if (p == nullptr) return;
    try {
      backend_.unregister_host(p);
    } catch (...) {
      // Nothing useful can be done with a refusal here; keeping the block would only leak it.
    }
    upstream_.deallocate(p, detail::at_least_one(bytes), alignment);
  }

  /// @brief The allocator blocks come from.
  [[nodiscard]] const Upstream& upstream() const noexcept { return upstream_; }
  /// @brief The backend blocks are registered with.
  [[nodiscard]] const Backend& backend() const noexcept { return backend_; }

  /// @brief Equal when both the upstreams and the backends are.
  friend bool operator==(const registered_allocator& a, const registered_allocator& b) noexcept {
    return a.upstream_ == b.upstream_ && a.backend_ == b.backend_;
  }

 private:
  static const std::string& label() {
    static const std::string s = fmt::format("registered_allocator<{}, {}>",
                                             detail::allocator_name<Upstream>(), Backend::name);
    return s;
  }

  Upstream upstream_{};
  Backend backend_{};
};

static_assert(allocator_policy<registered_allocator<pageable_allocator, host_backend>>);
static_assert(pinned_allocator_policy<registered_allocator<page_aligned_allocator, host_backend>>);
static_assert(registered_allocator<page_aligned_allocator, host_backend>::properties.page_aligned);

}  // namespace lris
