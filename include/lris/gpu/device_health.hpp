#pragma once
/// @file
/// @brief The record of the GPUs this process lost to sticky runtime errors: the first failure
/// of each (runtime, device), which every later call on that device reports as
/// lris::device_lost.
///
/// A sticky error (an illegal address, a kernel fault, an uncorrectable ECC error) corrupts
/// the device's context, and the runtime keeps one context per device for the whole process:
/// from then on every call on that device fails, in every thread, until the process exits. So
/// the record is per process too, like the runtime's own state. It lives in lris_core, which
/// needs no GPU runtime: one record however many GPU libraries are loaded, and testable
/// without a device. C++17, like the rest of what the kernels include.

#include <string>
#include <string_view>

#include <lris/config.hpp>

namespace lris::detail {

/// @brief The first sticky failure of a device.
struct device_loss {
  std::string runtime;  ///< "CUDA", "HIP"
  int device = -1;      ///< -1: the runtime could not say which device (it counts for all)
  int code = 0;         ///< the runtime's error code
  std::string what;     ///< the failed call, the error, the device and file:line
};

/// @brief The loss on record for `device` of `runtime`, or nullptr while it is healthy. A loss
/// recorded for device -1 counts for every device of the runtime, and a query for device -1
/// finds the runtime's first loss. Lock-free: one atomic load while no device of the process
/// was lost, so every call of the GPU backends can ask.
[[nodiscard]] const device_loss* find_device_loss(std::string_view runtime, int device) noexcept;

/// @brief Records that `runtime` lost `device` to the sticky failure `what` (with the
/// runtime's `code`), unless a loss of that device is on record already: the first one wins.
/// Returns the loss on record, this one or the earlier. Thread-safe; the record lives until
/// the process exits.
const device_loss& record_device_loss(std::string_view runtime, int device, int code,
                                      std::string what);

/// @brief Throws lris::device_lost for `loss`. `now` is what failed or was asked for this time
/// (a call and its error, or a backend function): when it is not the first failure itself,
/// the message names both.
[[noreturn]] void throw_device_lost(const device_loss& loss, std::string_view now);

/// @brief Throws lris::device_lost naming the first failure when `device` of `runtime` is lost;
/// `operation` (e.g. "cuda_backend::copy_async") is named as what was asked for.
inline void throw_if_device_lost(std::string_view runtime, int device,
                                 std::string_view operation) {
  const device_loss* loss = find_device_loss(runtime, device);
  if (LRIS_UNLIKELY(loss != nullptr)) throw_device_lost(*loss, operation);
}

/// @brief For tests only: forgets every loss, as if the process had started again. Call it
/// while no other thread uses the record (the entries it frees may be in use otherwise).
void forget_device_losses_for_testing() noexcept;

}  // namespace lris::detail
