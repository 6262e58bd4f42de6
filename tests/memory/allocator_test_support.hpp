#pragma once
// Helpers shared by the allocator tests: byte access that works for device memory too (through
// the backend's copies), deterministic patterns, and small test allocators.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string_view>
#include <vector>

#include <lris/backends/host_backend.hpp>
#include <lris/concepts/allocator_policy.hpp>
#include <lris/error.hpp>
#include <lris/memory/detail/allocation.hpp>
#include <lris/concepts/memory_space.hpp>

namespace lris_test {

// Host-accessible memory is read and written by the CPU; anything else only through the host
// backend's copy engine, as a real device would require.
template <class A>
struct access {
  static void write(void* dst, const void* src, std::size_t n) {
    if constexpr (A::properties.host_accessible) {
      std::memcpy(dst, src, n);
    } else {
      copy(dst, src, n, lris::copy_kind::host_to_device);
    }
  }
  static void read(void* dst, const void* src, std::size_t n) {
    if constexpr (A::properties.host_accessible) {
      std::memcpy(dst, src, n);
    } else {
      copy(dst, src, n, lris::copy_kind::device_to_host);
    }
  }

 private:
  static void copy(void* dst, const void* src, std::size_t n, lris::copy_kind kind) {
    thread_local lris::host_backend backend;
    thread_local lris::host_backend::stream stream = backend.make_stream();
    backend.copy_async(dst, src, n, kind, stream);
    backend.synchronize(stream);
  }
};

// A pattern that differs per stamp and per position, so that overlapping or stale blocks show.
inline std::vector<unsigned char> pattern(std::uint64_t stamp, std::size_t n) {
  std::vector<unsigned char> v(n);
  std::uint64_t x = stamp * 0x9E3779B97F4A7C15ull + 1;
  for (std::size_t i = 0; i < n; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(v.data() + i, &x, n - i < 8 ? n - i : 8);
  }
  return v;
}

template <class A>
void fill(void* p, std::uint64_t stamp, std::size_t n) {
  const auto v = pattern(stamp, n);
  access<A>::write(p, v.data(), n);
}

template <class A>
bool intact(const void* p, std::uint64_t stamp, std::size_t n) {
  const auto want = pattern(stamp, n);
  std::vector<unsigned char> got(n);
  access<A>::read(got.data(), p, n);
  return got == want;
}

// Counts what passes through it to pageable memory, and fails on demand once a byte budget is
// exhausted: the upstream of the caching_pool failure-path tests.
struct counting_allocator {
  struct counters {
    std::mutex mutex;
    std::size_t budget = static_cast<std::size_t>(-1);
    std::size_t live_bytes = 0;
    std::size_t live_blocks = 0;
    std::size_t allocations = 0;
    std::size_t deallocations = 0;
    std::size_t failures = 0;
  };

  using space = lris::host_space;
  static constexpr lris::memory_properties properties = lris::host_space::properties;
  static constexpr std::string_view name = "counting_allocator";

  counting_allocator() : state(std::make_shared<counters>()) {}

  [[nodiscard]] void* allocate(std::size_t bytes, std::size_t alignment) {
    {
      std::lock_guard lock(state->mutex);
      if (bytes > state->budget - state->live_bytes) {
        ++state->failures;
        lris::detail::throw_out_of_memory(name, bytes, alignment, "test budget exhausted");
      }
      state->live_bytes += bytes;
      ++state->live_blocks;
      ++state->allocations;
    }
    return ::operator new(bytes == 0 ? 1 : bytes, std::align_val_t{alignment});
  }
  void deallocate(void* p, std::size_t bytes, std::size_t alignment) noexcept {
    ::operator delete(p, std::align_val_t{alignment});
    std::lock_guard lock(state->mutex);
    state->live_bytes -= bytes;
    --state->live_blocks;
    ++state->deallocations;
  }
  friend bool operator==(const counting_allocator& a, const counting_allocator& b) noexcept {
    return a.state == b.state;
  }

  std::shared_ptr<counters> state;
};

static_assert(lris::allocator_policy<counting_allocator>);

}  // namespace lris_test
