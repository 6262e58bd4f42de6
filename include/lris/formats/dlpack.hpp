#pragma once
/// @file
/// @brief DLPack export of loaded tensors, so that PyTorch, JAX, CuPy and others take them
/// without a copy (Debian's libdlpack-dev, `#include <dlpack/dlpack.h>`).
///
/// Type codes follow DLPack 1.1, which names every safetensors dtype: FP8 (codes 10-14), FP6
/// (15, 16), FP4 (17) and bool (6) are newer than the DLPack 0.6 header Debian 12 ships, so
/// they are given here as numbers. Shapes and strides are in elements, row-major.

#include <cstdint>

#include <dlpack/dlpack.h>

#include <lris/element/dtype.hpp>
#include <lris/formats/loaded_tensor.hpp>

namespace lris::safetensors {

/// @brief DLPack type codes that DLPack 0.6's header does not name (values of DLPack 1.1).
namespace dlpack_code {
inline constexpr std::uint8_t bool_ = 6;
inline constexpr std::uint8_t float8_e4m3fn = 10;
inline constexpr std::uint8_t float8_e4m3fnuz = 11;
inline constexpr std::uint8_t float8_e5m2 = 12;
inline constexpr std::uint8_t float8_e5m2fnuz = 13;
inline constexpr std::uint8_t float8_e8m0fnu = 14;
inline constexpr std::uint8_t float6_e2m3fn = 15;
inline constexpr std::uint8_t float6_e3m2fn = 16;
inline constexpr std::uint8_t float4_e2m1fn = 17;
}  // namespace dlpack_code

/// @brief The DLPack data type of `t` (one lane).
/// @throws lris::invalid_argument for a value that is not a dtype.
[[nodiscard]] DLDataType dlpack_dtype(dtype t);

/// @brief The DLPack device of memory at `where`: kDLCPU for host memory (and the host
/// backend's "device" memory), kDLCUDA or kDLROCM with the device number for GPU memory.
/// @throws lris::unsupported for a backend DLPack has no device type for.
[[nodiscard]] DLDevice dlpack_device(const tensor_location& where);

/// @brief A DLManagedTensor for `t`, for a consumer that takes ownership: calling its deleter
/// frees the export. The export holds a copy of `t.lease`, so a tensor from load() stays valid
/// while the consumer holds it, whatever happens to `t`; memory of load_into() is the
/// caller's, who must keep it alive until the deleter runs.
/// @throws lris::invalid_argument for a shape a DLPack int64 cannot hold;
/// lris::unsupported for a location DLPack cannot name.
[[nodiscard]] DLManagedTensor* to_dlpack(const loaded_tensor& t);

}  // namespace lris::safetensors
