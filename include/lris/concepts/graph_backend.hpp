#pragma once
/// @file
/// @brief graph_backend: a backend that captures the work queued on its streams and launches
/// it again as one graph.

#include <concepts>

#include <lris/concepts/backend_policy.hpp>

namespace lris {

/// @brief A backend whose streams can be captured: after `begin_capture(s)` the work queued
/// on `s`, and on any stream that waits for an event recorded on `s` during the capture (it
/// joins), is recorded instead of run; `end_capture(s)` returns it as a `graph`, and
/// `launch(g, s)` queues all of it on `s` again, as often as called. Inside a capture a
/// stream may wait only for events recorded in the same capture, and every joined stream's
/// work must be waited for by `s` before the end. Addresses and sizes are fixed when captured.
template <class B>
concept graph_backend =
    backend_policy<B> && std::movable<typename B::graph> &&
    requires(B& b, typename B::stream& s, typename B::graph& g) {
      b.begin_capture(s);
      { b.end_capture(s) } -> std::same_as<typename B::graph>;
      b.launch(g, s);
    };

}  // namespace lris
