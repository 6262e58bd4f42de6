// lris.load_into: destinations taken from the caller's objects through DLPack (the object
// stays the owner; the capsule's tensor is released once the load is done), checked for
// dtype, shape, layout and device before anything is read.
#include "load_into.hpp"

#include <nanobind/stl/filesystem.h>
#include <nanobind/stl/string.h>

#include <dlpack/dlpack.h>

#include <cstdint>
#include <utility>
#include <exception>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <lris/lris.hpp>
#if LRIS_PYTHON_CUDA
#include <lris/cuda.hpp>
#endif

#include "dtype_names.hpp"
#include "progress.hpp"

namespace nb = nanobind;
namespace st = lris::safetensors;

namespace lris::python {
namespace {

// A destination: where the object's bytes are, and what it holds.
struct destination {
  std::byte* data = nullptr;
  DLDevice device{};
  DLDataType type{};
  std::vector<std::int64_t> shape;
  bool compact = true;  // row-major without gaps
  DLManagedTensor* managed = nullptr;
};

// The DLManagedTensors taken from the objects' capsules, released (their deleters called) when
// the load is over.
struct taken {
  std::map<std::string, destination> by_name;
  ~taken() {
    for (auto& [n, d] : by_name) {
      if (d.managed != nullptr && d.managed->deleter != nullptr) d.managed->deleter(d.managed);
    }
  }
};

std::string shape_text(const std::vector<std::int64_t>& s) {
  std::string t = "(";
  for (std::size_t i = 0; i < s.size(); ++i) t += fmt::format("{}{}", i ? ", " : "", s[i]);
  return t + (s.size() == 1 ? ",)" : ")");
}

// `obj`'s memory through its __dlpack__. For GPU memory the consumer's stream is
// `stream_of(device)`: the producer makes it wait for the work that writes the object, and the
// load waits for that stream before it starts.
template <class StreamOf>
destination take(const std::string& name, nb::handle obj, StreamOf&& stream_of) {
  if (!nb::hasattr(obj, "__dlpack__") || !nb::hasattr(obj, "__dlpack_device__")) {
    throw invalid_argument(fmt::format("lris.load_into: the destination of \"{}\" ({}) has no "
                                       "__dlpack__", name, nb::type_name(obj.type()).c_str()));
  }
  const auto dev = nb::cast<nb::tuple>(obj.attr("__dlpack_device__")());
  const int kind = nb::cast<int>(dev[0]);
  nb::object cap = kind == kDLCUDA
                       ? obj.attr("__dlpack__")(nb::arg("stream") = stream_of(nb::cast<int>(dev[1])))
                       : obj.attr("__dlpack__")();
  auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(cap.ptr(), "dltensor"));
  if (m == nullptr) {
    PyErr_Clear();
    throw invalid_argument(fmt::format("lris.load_into: the destination of \"{}\" gave no "
                                       "\"dltensor\" capsule", name));
  }
  PyCapsule_SetName(cap.ptr(), "used_dltensor");  // ours now: released by `taken`
  destination d;
  d.managed = m;
  const DLTensor& t = m->dl_tensor;
  d.data = static_cast<std::byte*>(t.data) + t.byte_offset;
  d.device = t.device;
  d.type = t.dtype;
  d.shape.assign(t.shape, t.shape + t.ndim);
  if (t.strides != nullptr) {
    std::int64_t expect = 1;
    for (int i = t.ndim - 1; i >= 0; --i) {
      if (t.shape[i] != 1 && t.strides[i] != expect) d.compact = false;
      expect *= t.shape[i];
    }
  }
  return d;
}

}  // namespace

nb::dict load_into(nb::handle tensors, const std::filesystem::path& path, bool strict,
                   nb::object progress) {
  std::optional<st::checkpoint> ck;
  {
    nb::gil_scoped_release nogil;
    ck.emplace(path);
  }
  taken dst;
#if LRIS_PYTHON_CUDA
  // The stream the load waits for, on the first GPU a destination is on (a second GPU is an
  // error below).
  std::optional<cuda_backend> gpu;
  std::optional<cuda_backend::stream> consumer;
  const auto stream_of = [&](int device) -> std::intptr_t {
    if (!gpu) {
      gpu.emplace(device);
      consumer.emplace(gpu->make_stream());
    }
    return reinterpret_cast<std::intptr_t>(consumer->native());
  };
#else
  const auto stream_of = [](int) -> std::intptr_t {
    throw unsupported("lris.load_into: a destination in GPU memory, in a build without CUDA");
  };
#endif
  for (nb::handle key : nb::iter(tensors.attr("keys")())) {
    const std::string name = nb::cast<std::string>(key);
    dst.by_name.emplace(name, take(name, tensors[key], stream_of));
  }
  std::vector<std::string> missing, unexpected;
  for (const auto& [name, d] : dst.by_name) {
    if (ck->find(name) == nullptr) missing.push_back(name);
  }
  st::load_options o;
  for (const auto& r : ck->tensors()) {
    if (dst.by_name.count(r.info->name) == 0) {
      unexpected.push_back(r.info->name);
    } else {
      o.names.push_back(r.info->name);
    }
  }
  if (strict && (!missing.empty() || !unexpected.empty())) {
    const auto list = [](const std::vector<std::string>& v) {
      std::string s;
      for (std::size_t i = 0; i < v.size() && i < 8; ++i) s += fmt::format("{}\"{}\"", i ? ", " : "", v[i]);
      return v.size() > 8 ? s + fmt::format(" and {} more", v.size() - 8) : s;
    };
    throw invalid_argument(fmt::format(
        "lris.load_into {} (strict): {} destination{} the checkpoint lacks{}{}; {} checkpoint "
        "tensor{} without a destination{}{}", path.string(), missing.size(),
        missing.size() == 1 ? "" : "s", missing.empty() ? "" : ": ", list(missing),
        unexpected.size(), unexpected.size() == 1 ? "" : "s", unexpected.empty() ? "" : ": ",
        list(unexpected)));
  }
  // One device for all of them.
  std::optional<DLDevice> where;
  for (const auto& [name, d] : dst.by_name) {
    if (ck->find(name) == nullptr) continue;
    if (!where) where = d.device;
    if (d.device.device_type != where->device_type || d.device.device_id != where->device_id) {
      throw invalid_argument(fmt::format("lris.load_into: \"{}\" is on DLPack device ({}, {}), "
                                         "another than the others' ({}, {}): one device per call",
                                         name, static_cast<int>(d.device.device_type),
                                         d.device.device_id,
                                         static_cast<int>(where->device_type), where->device_id));
    }
    if (d.device.device_type != kDLCPU && d.device.device_type != kDLCUDAHost &&
        !(LRIS_PYTHON_CUDA && d.device.device_type == kDLCUDA)) {
      throw unsupported(fmt::format("lris.load_into: \"{}\" is on DLPack device ({}, {}), which "
                                    "this build cannot load into", name,
                                    static_cast<int>(d.device.device_type), d.device.device_id));
    }
  }
  // Each destination against its tensor, before anything is read (called by load_into for
  // every selected tensor, in checkpoint order, with the GIL released).
  const auto check = [&](const st::tensor_request& r) -> const destination& {
    const destination& d = dst.by_name.at(std::string(r.name));
    const DLDataType want = st::dlpack_dtype(r.type);
    if (d.type.code != want.code || d.type.bits != want.bits || d.type.lanes != want.lanes) {
      throw invalid_argument(fmt::format("lris.load_into {}: tensor \"{}\" is {}; its destination "
                                         "holds DLPack type (code {}, {} bits)", path.string(),
                                         r.name, dtype_name(r.type), d.type.code, d.type.bits));
    }
    std::vector<std::int64_t> shape(r.shape.begin(), r.shape.end());
    if (shape != d.shape) {
      throw invalid_argument(fmt::format("lris.load_into {}: tensor \"{}\" has shape {}; its "
                                         "destination {}", path.string(), r.name,
                                         shape_text(shape), shape_text(d.shape)));
    }
    if (!d.compact) {
      throw invalid_argument(fmt::format("lris.load_into {}: the destination of \"{}\" is not "
                                         "contiguous (row-major without gaps)", path.string(),
                                         r.name));
    }
    return d;
  };
  progress_bridge bridge(std::move(progress));
  o.on_progress = bridge.callback();
  st::loaded_checkpoint loaded;
  if (!o.names.empty()) {
    try {
      nb::gil_scoped_release nogil;
      if (where->device_type == kDLCUDA) {
#if LRIS_PYTHON_CUDA
        gpu->synchronize(*consumer);  // the producer's work on the destinations, done
        loaded = st::load_into(default_pipeline<cuda_backend>(where->device_id), *ck,
                               [&](const st::tensor_request& r) {
                                 const destination& d = check(r);
                                 return device_span<cuda_backend>(d.data, r.bytes, where->device_id);
                               }, o);
#endif
      } else {
        loaded = st::load_into(default_pipeline<host_backend>(), *ck,
                               [&](const st::tensor_request& r) {
                                 return as_host(check(r).data, r.bytes);
                               }, o);
      }
    } catch (...) {
      bridge.rethrow();
      throw;
    }
  }
  nb::dict out;
  out["loaded"] = loaded.tensors.size();
  out["bytes"] = loaded.report.memory_bytes;
  nb::list m, u;
  for (const auto& n : missing) m.append(n);
  for (const auto& n : unexpected) u.append(n);
  out["missing"] = m;
  out["unexpected"] = u;
  return out;
}

}  // namespace lris::python
