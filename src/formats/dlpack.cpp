#include <lris/formats/dlpack.hpp>

#include <limits>
#include <memory>
#include <vector>

#include <fmt/format.h>

#include <lris/error.hpp>

namespace lris::safetensors {

namespace {

// What an export owns: the shape and strides DLPack points to, and the lease on the memory.
struct export_context {
  std::vector<std::int64_t> shape;
  std::vector<std::int64_t> strides;
  std::shared_ptr<void> lease;
  DLManagedTensor managed{};
};

void delete_export(DLManagedTensor* self) {
  delete static_cast<export_context*>(self->manager_ctx);
}

}  // namespace

DLDataType dlpack_dtype(dtype t) {
  const auto bits = static_cast<std::uint8_t>(bits_of(t));
  auto of = [&](std::uint8_t code) { return DLDataType{code, bits, 1}; };
  switch (t) {
    case dtype::BOOL: return of(dlpack_code::bool_);
    case dtype::F4: return of(dlpack_code::float4_e2m1fn);
    case dtype::F6_E2M3: return of(dlpack_code::float6_e2m3fn);
    case dtype::F6_E3M2: return of(dlpack_code::float6_e3m2fn);
    case dtype::U8: case dtype::U16: case dtype::U32: case dtype::U64: return of(kDLUInt);
    case dtype::I8: case dtype::I16: case dtype::I32: case dtype::I64: return of(kDLInt);
    case dtype::F8_E5M2: return of(dlpack_code::float8_e5m2);
    case dtype::F8_E4M3: return of(dlpack_code::float8_e4m3fn);
    case dtype::F8_E8M0: return of(dlpack_code::float8_e8m0fnu);
    case dtype::F8_E4M3FNUZ: return of(dlpack_code::float8_e4m3fnuz);
    case dtype::F8_E5M2FNUZ: return of(dlpack_code::float8_e5m2fnuz);
    case dtype::F16: case dtype::F32: case dtype::F64: return of(kDLFloat);
    case dtype::BF16: return of(kDLBfloat);
    case dtype::C64: return of(kDLComplex);
  }
  throw invalid_argument(fmt::format("dlpack: {} is not a dtype", static_cast<int>(t)));
}

DLDevice dlpack_device(const tensor_location& where) {
  if (!where.device || where.backend == "host") return {kDLCPU, 0};
  if (where.backend == "cuda") return {kDLCUDA, where.device_id};
  if (where.backend == "hip") return {kDLROCM, where.device_id};
  throw unsupported(fmt::format("dlpack: no DLPack device type for memory of backend \"{}\"",
                                where.backend));
}

DLManagedTensor* to_dlpack(const loaded_tensor& t) {
  auto ctx = std::make_unique<export_context>();
  for (const std::uint64_t d : t.shape) {
    LRIS_EXPECTS(d <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()),
                 "dlpack: tensor \"{}\": dimension {} does not fit DLPack's int64", t.name, d);
    ctx->shape.push_back(static_cast<std::int64_t>(d));
  }
  ctx->strides.resize(ctx->shape.size());
  std::int64_t stride = 1;
  for (std::size_t i = ctx->shape.size(); i-- > 0;) {
    ctx->strides[i] = stride;
    stride *= std::max<std::int64_t>(ctx->shape[i], 1);
  }
  ctx->lease = t.lease;
  DLTensor& d = ctx->managed.dl_tensor;
  d.data = t.data;
  d.device = dlpack_device(t.location);
  d.ndim = static_cast<std::int32_t>(ctx->shape.size());
  d.dtype = dlpack_dtype(t.type);
  d.shape = ctx->shape.data();
  d.strides = ctx->strides.data();
  d.byte_offset = 0;
  ctx->managed.manager_ctx = ctx.get();
  ctx->managed.deleter = delete_export;
  return &ctx.release()->managed;
}

}  // namespace lris::safetensors
