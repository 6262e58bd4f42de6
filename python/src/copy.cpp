// lris.copy: both objects taken through DLPack (GPU work on them ordered before LRIS's stream
// and waited for), checked, then one transfer on the default context's pipeline.
#include "copy.hpp"

#include <nanobind/stl/string.h>

#include <dlpack/dlpack.h>

#include <cstdint>
#include <string>

#include <fmt/format.h>

#include <lris/lris.hpp>

#include "dlpack_import.hpp"
#include "gil.hpp"

namespace nb = nanobind;

namespace lris::python {
namespace {

bool on_host(const DLDevice& d) { return d.device_type == kDLCPU || d.device_type == kDLCUDAHost; }

std::string device_text(const DLDevice& d) {
  return fmt::format("({}, {})", static_cast<int>(d.device_type), d.device_id);
}

}  // namespace

nb::dict copy(nb::handle dst, nb::handle src) {
  consumer_stream consumer;
  taken both;
  const destination& d = both.by_name.emplace("dst", take("lris.copy", "dst", dst, consumer)).first->second;
  const destination& s = both.by_name.emplace("src", take("lris.copy", "src", src, consumer)).first->second;
  if (d.type.code != s.type.code || d.type.bits != s.type.bits || d.type.lanes != s.type.lanes) {
    throw invalid_argument(fmt::format("lris.copy: dst holds DLPack type {}, src {}",
                                       dl_type_text(d.type), dl_type_text(s.type)));
  }
  if (d.shape != s.shape) {
    throw invalid_argument(fmt::format("lris.copy: dst has shape {}, src {}", shape_text(d.shape),
                                       shape_text(s.shape)));
  }
  if (!d.compact || !s.compact) {
    throw invalid_argument(fmt::format("lris.copy: {} is not contiguous (row-major without gaps)",
                                       d.compact ? "src" : "dst"));
  }
  const std::size_t bytes = d.bytes;
  const bool gpu_dst = !on_host(d.device), gpu_src = !on_host(s.device);
  for (const destination* x : {&d, &s}) {
    if (!on_host(x->device) && !(LRIS_PYTHON_CUDA && x->device.device_type == kDLCUDA)) {
      throw unsupported(fmt::format("lris.copy: {} is on DLPack device {}, which this build "
                                    "cannot copy", x == &d ? "dst" : "src", device_text(x->device)));
    }
  }
  if (gpu_dst && gpu_src && d.device.device_id != s.device.device_id) {
    throw unsupported(fmt::format("lris.copy: dst is on DLPack device {}, src on {}: between two "
                                  "GPUs, copy through host memory", device_text(d.device),
                                  device_text(s.device)));
  }
  // Host memory a CPU copy could fault on, refused here (the two ends of each: one object's
  // memory has the same permissions throughout; reading the mappings would cost 0.2 ms).
  if (!gpu_dst) refuse_unreachable("lris.copy", "dst", d, bytes, probe_ends(d.data, bytes, true), true);
  if (!gpu_src) refuse_unreachable("lris.copy", "src", s, bytes, probe_ends(s.data, bytes, false), false);
  transfer_stats st;
  {
    gil_released nogil;
    consumer.wait();  // the producers' work on both, done
    if (!gpu_dst && !gpu_src) {
      st = lris::copy(as_host(d.data, bytes), as_host(static_cast<const std::byte*>(s.data), bytes)).wait();
    } else {
#if LRIS_PYTHON_CUDA
      using gpu_span = device_span<cuda_backend>;
      using gpu_const_span = memory_span<device_space<cuda_backend>, const std::byte>;
      if (gpu_dst && gpu_src) {
        st = lris::copy(gpu_span(d.data, bytes, d.device.device_id),
                        gpu_const_span(s.data, bytes, s.device.device_id)).wait();
      } else if (gpu_dst) {
        st = lris::copy(gpu_span(d.data, bytes, d.device.device_id),
                        as_host(static_cast<const std::byte*>(s.data), bytes)).wait();
      } else {
        st = lris::copy(as_host(d.data, bytes), gpu_const_span(s.data, bytes, s.device.device_id)).wait();
      }
#endif
    }
  }
  nb::dict out;
  out["bytes"] = st.bytes;
  out["seconds"] = st.seconds;
  out["path"] = std::string(to_string(st.path));
  out["policy"] = std::string(st.policy);
  return out;
}

}  // namespace lris::python
