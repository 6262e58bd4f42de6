#pragma once
/// @file
/// @brief backend_policy: a device runtime (streams, events, memory, asynchronous copies).

#include <concepts>
#include <cstddef>
#include <string_view>


namespace lris {

/// @brief Which way an asynchronous copy goes, as a device runtime sees it.
enum class copy_kind { host_to_host, host_to_device, device_to_host, device_to_device };

/// @brief The name of a copy kind: "h2h", "h2d", "d2h", "d2d".
[[nodiscard]] constexpr std::string_view to_string(copy_kind k) noexcept {
  switch (k) {
    case copy_kind::host_to_host: return "h2h";
    case copy_kind::host_to_device: return "h2d";
    case copy_kind::device_to_host: return "d2h";
    case copy_kind::device_to_device: return "d2d";
  }
  return "?";
}

/// @brief A host function a stream runs once all work before it has finished.
using host_callback_fn = void (*)(void* user) noexcept;

/// @brief A copyable handle to one device of a runtime.
///
/// Streams and events are move-only RAII objects made by the backend; all work goes through
/// the backend so that a stream type carries no behaviour of its own. Required:
/// - `B::name`; `B::device_count()`; `b.device()`;
/// - device and pinned memory: `allocate_device/deallocate_device`,
///   `allocate_pinned/deallocate_pinned`, `register_host/unregister_host`;
/// - `make_stream()`, `make_event()`, `copy_async(dst, src, bytes, kind, stream)`,
///   `record(event, stream)`, `wait(stream, event)` (a stream waits for another's event with no
///   host synchronization), `synchronize(stream)`, `synchronize(event)`, `query(event) -> bool`.
/// What only some backends can do is a refinement of its own: batch_backend,
/// convert_backend, peer_backend, pci_backend.
template <class B>
concept backend_policy =
    std::copyable<B> && std::equality_comparable<B> &&
    requires {
      typename B::stream;
      typename B::event;
      { B::name } -> std::convertible_to<std::string_view>;
      { B::device_count() } -> std::same_as<int>;
    } && std::movable<typename B::stream> && std::movable<typename B::event> &&
    requires(B& b, const B& cb, typename B::stream& s, typename B::event& e, void* p,
             const void* cp, std::size_t n, copy_kind k) {
      { cb.device() } -> std::same_as<int>;
      { b.allocate_device(n) } -> std::same_as<void*>;
      { b.deallocate_device(p, n) } noexcept;
      { b.allocate_pinned(n) } -> std::same_as<void*>;
      { b.deallocate_pinned(p, n) } noexcept;
      b.register_host(p, n);
      b.unregister_host(p);
      { b.make_stream() } -> std::same_as<typename B::stream>;
      { b.make_event() } -> std::same_as<typename B::event>;
      b.copy_async(p, cp, n, k, s);
      b.record(e, s);
      b.wait(s, e);
      b.synchronize(s);
      b.synchronize(e);
      { b.query(e) } -> std::same_as<bool>;
    };

}  // namespace lris
