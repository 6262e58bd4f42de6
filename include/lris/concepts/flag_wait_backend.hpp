#pragma once
/// @file
/// @brief flag_wait_backend: a backend whose streams can wait for a flag that the host sets.

#include <cstdint>

#include <lris/concepts/backend_policy.hpp>

namespace lris {

/// @brief A backend whose streams can wait for the host: `wait_flag(s, flag)` makes the work
/// queued on `s` after the call wait until the 32-bit word at `flag` is nonzero, with no host
/// thread waiting. `flag` is in pinned memory of the backend (the device reads it there);
/// the host sets it with an atomic store, and it must stay allocated until the stream has
/// passed the wait (record an event after it). A transfer whose device work is still being
/// queued (one in chunks) makes a caller's stream wait for it this way (transfer::then_on).
/// @throws lris::unsupported where the device or its driver cannot wait on memory.
template <class B>
concept flag_wait_backend =
    backend_policy<B> && requires(B& b, typename B::stream& s, const std::uint32_t* flag) {
      b.wait_flag(s, flag);
    };

}  // namespace lris
