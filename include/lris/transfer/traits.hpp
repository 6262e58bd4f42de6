#pragma once
/// @file
/// @brief transfer_traits<Dst, Src>: the table of what moving bytes between two memory spaces
/// means — direction, whether pageable memory must be staged, which backend executes it.
///
/// Relations are data, not code: pipelines read this table and never branch on space types.

#include <type_traits>

#include <lris/backends/host_backend.hpp>
#include <lris/concepts/backend_policy.hpp>
#include <lris/concepts/memory_space.hpp>

namespace lris {

namespace detail {
template <class S>
struct space_backend {
  using type = void;  // host memory belongs to no backend
};
template <class B>
struct space_backend<pinned_space<B>> {
  using type = B;
};
template <class B>
struct space_backend<device_space<B>> {
  using type = B;
};
template <class S>
inline constexpr bool is_device_v = false;
template <class B>
inline constexpr bool is_device_v<device_space<B>> = true;
}  // namespace detail

/// @brief How bytes go from memory space `Src` to memory space `Dst`.
///
/// - `possible`: false only between devices of two different backends;
/// - `kind`: the copy direction a runtime sees;
/// - `backend`: the backend that must execute it (host_backend when neither side is a device);
/// - `needs_staging`: pageable host memory on one side and a device on the other, or host
///   memory pinned for a different backend than the device's.
template <memory_space Dst, memory_space Src>
struct transfer_traits {
 private:
  using dst_backend = typename detail::space_backend<Dst>::type;
  using src_backend = typename detail::space_backend<Src>::type;
  static constexpr bool dst_device = detail::is_device_v<Dst>;
  static constexpr bool src_device = detail::is_device_v<Src>;
  // The host side is DMA-able by the device's backend only when pinned for that backend.
  template <class HostSpace, class DeviceBackend>
  static constexpr bool dma_able = std::is_same_v<HostSpace, pinned_space<DeviceBackend>>;

 public:
  static constexpr bool possible =
      !(dst_device && src_device) || std::is_same_v<dst_backend, src_backend>;

  static constexpr copy_kind kind = dst_device
                                        ? (src_device ? copy_kind::device_to_device
                                                      : copy_kind::host_to_device)
                                        : (src_device ? copy_kind::device_to_host
                                                      : copy_kind::host_to_host);

  using backend = std::conditional_t<
      dst_device, dst_backend,
      std::conditional_t<src_device, src_backend, host_backend>>;

  static constexpr bool needs_staging =
      (kind == copy_kind::host_to_device && !dma_able<Src, dst_backend>) ||
      (kind == copy_kind::device_to_host && !dma_able<Dst, src_backend>);
};

}  // namespace lris
