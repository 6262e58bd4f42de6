// lris._lris: the extension module behind `import lris`. Checkpoints are loaded into memory
// that a lris.Tensor owns through its lease: NumPy, PyTorch and others take it through DLPack
// without a copy, and it stays valid for as long as any of them holds it.
#include <nanobind/nanobind.h>
#include <nanobind/stl/filesystem.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <dlpack/dlpack.h>

#include <cstdint>
#include <cstring>
#include <exception>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <lris/lris.hpp>
#if LRIS_PYTHON_CUDA
#include <lris/cuda.hpp>
#endif

#include "args.hpp"
#include "cache.hpp"
#include "copy.hpp"
#include "device_name.hpp"
#include "dtype_names.hpp"
#include "errors.hpp"
#include "gil.hpp"
#include "host_pool.hpp"
#include "load.hpp"
#include "load_into.hpp"
#include "py_tensor.hpp"

namespace nb = nanobind;
using namespace nb::literals;
namespace st = lris::safetensors;

namespace {

using lris::python::arg_as;
using lris::python::py_tensor;

// DLPack >= 1.0's versioned managed tensor (Debian 12's dlpack.h is 0.6 and lacks it): the
// layout the DLPack 1.x ABI fixes.
struct dl_version {
  std::uint32_t major;
  std::uint32_t minor;
};
struct dl_managed_versioned {
  dl_version version;
  void* manager_ctx;
  void (*deleter)(dl_managed_versioned*);
  std::uint64_t flags;
  DLTensor dl_tensor;
};
constexpr std::uint64_t dl_flag_read_only = 1ULL << 0;
constexpr std::uint64_t dl_flag_is_copied = 1ULL << 1;

// A capsule for `m` named `name`; its destructor frees `m` unless a consumer took it (and
// renamed the capsule "used_...").
template <class Managed>
nb::object capsule_of(Managed* m, const char* name) {
  PyObject* c = PyCapsule_New(m, name, [](PyObject* self) noexcept {
    const char* n = PyCapsule_GetName(self);
    if (n == nullptr) {
      PyErr_Clear();
      return;
    }
    if (std::string_view(n) != "dltensor" && std::string_view(n) != "dltensor_versioned") return;
    auto* p = static_cast<Managed*>(PyCapsule_GetPointer(self, n));
    if (p != nullptr && p->deleter != nullptr) p->deleter(p);
  });
  if (c == nullptr) {
    m->deleter(m);
    throw nb::python_error();
  }
  return nb::steal(c);
}

#if LRIS_PYTHON_CUDA
// `t`'s bytes in device memory, as the source of a copy.
lris::memory_span<lris::device_space<lris::cuda_backend>, const std::byte> device_bytes(
    const st::loaded_tensor& t) {
  return {t.data, static_cast<std::size_t>(t.bytes), t.location.device_id};
}
#endif

// A copy of `t` in memory of its own on the same device (for __dlpack__(copy=True)).
st::loaded_tensor copy_of(const st::loaded_tensor& t) {
  st::loaded_tensor c = t;
  if (t.location.device) {
#if LRIS_PYTHON_CUDA
    lris::cuda_backend be(t.location.device_id);
    const std::size_t n = t.bytes == 0 ? 1 : t.bytes;
    void* p = be.allocate_device(n);
    c.lease = std::shared_ptr<void>(p, [be, n](void* q) mutable { be.deallocate_device(q, n); });
    if (t.bytes > 0) {
      lris::copy(lris::device_span<lris::cuda_backend>(static_cast<std::byte*>(p), n,
                                                       t.location.device_id),
                 device_bytes(t)).wait();
    }
    c.data = static_cast<std::byte*>(p);
    return c;
#endif
  }
  auto block = std::shared_ptr<std::byte[]>(new std::byte[t.bytes == 0 ? 1 : t.bytes]);
  if (t.bytes > 0) std::memcpy(block.get(), t.data, t.bytes);
  c.data = block.get();
  c.lease = std::move(block);
  return c;
}

// The bytes of `t`, wherever it is.
nb::bytes bytes_of(const st::loaded_tensor& t) {
  if (!t.location.device) return nb::bytes(reinterpret_cast<const char*>(t.data), t.bytes);
#if LRIS_PYTHON_CUDA
  std::string host(t.bytes, '\0');
  {
    lris::python::gil_released nogil;
    if (t.bytes > 0) {
      lris::copy(lris::as_host(reinterpret_cast<std::byte*>(host.data()), host.size()),
                 device_bytes(t)).wait();
    }
  }
  return nb::bytes(host.data(), host.size());
#else
  throw lris::unsupported(fmt::format("lris.Tensor \"{}\": device memory in a build without "
                                      "CUDA", t.name));
#endif
}

// The stream argument of __dlpack__: for device memory any value a consumer may pass (None,
// -1, 1 and 2 for the legacy and per-thread default streams, or a stream's handle) is
// accepted. A load's tensor needs no wait: lris.load returns once every byte has landed on
// the device, and nothing writes the tensor after. A cache lease's tensor makes the
// consumer's stream wait for an event recorded after the unit's copy (no host
// synchronization). For host memory only None and -1 apply (the DLPack rule for kDLCPU).
nb::object dlpack(const py_tensor& self, nb::handle stream, nb::handle max_version,
                  nb::handle dl_device, nb::handle copy) {
  const std::string call = fmt::format("lris.Tensor \"{}\".__dlpack__", self.t.name);
  const long long stream_value =
      stream.is_none() ? 1 : arg_as<long long>(stream, call, "stream", "None or an int");
  if (!self.t.location.device && !stream.is_none() && stream_value != -1) {
    throw nb::buffer_error(fmt::format("lris.Tensor \"{}\": stream {} for host memory (only "
                                       "None or -1 apply)", self.t.name, stream_value).c_str());
  }
  if (self.before_use && self.t.location.device) {
    // DLPack's values: None and 1 the legacy default stream, 2 the per-thread default stream,
    // -1 no ordering asked for, any other value a stream's handle.
    const long long v = stream_value;
    if (v != -1) self.before_use(v == 1 ? nullptr : reinterpret_cast<void*>(static_cast<std::intptr_t>(v)));
  }
  if (!dl_device.is_none()) {
    const auto want = arg_as<std::pair<int, int>>(dl_device, call, "dl_device",
                                                  "(device type, device id)");
    const DLDevice have = st::dlpack_device(self.t.location);
    if (want.first != static_cast<int>(have.device_type) || want.second != have.device_id) {
      throw nb::buffer_error(fmt::format("lris.Tensor \"{}\" is on DLPack device ({}, {}); a "
                                         "copy to DLPack device ({}, {}) is not made here",
                                         self.t.name, static_cast<int>(have.device_type),
                                         have.device_id, want.first, want.second).c_str());
    }
  }
  const bool copied = !copy.is_none() && arg_as<bool>(copy, call, "copy", "None or a bool");
  const st::loaded_tensor source = copied ? copy_of(self.t) : self.t;
  DLManagedTensor* m = st::to_dlpack(source);
  bool versioned = false;
  if (!max_version.is_none()) {
    const auto v = arg_as<std::pair<int, int>>(max_version, call, "max_version",
                                               "(major, minor)");
    versioned = v.first >= 1;
  }
  if (!versioned) return capsule_of(m, "dltensor");
  auto* v = new dl_managed_versioned{{1, 0}, m, [](dl_managed_versioned* self) {
                                       auto* inner = static_cast<DLManagedTensor*>(self->manager_ctx);
                                       inner->deleter(inner);
                                       delete self;
                                     },
                                     copied ? dl_flag_is_copied
                                            : (self.read_only ? dl_flag_read_only : 0),
                                     m->dl_tensor};
  return capsule_of(v, "dltensor_versioned");
}

nb::tuple shape_of(const std::vector<std::uint64_t>& shape) {
  nb::list l;
  for (const auto d : shape) l.append(d);
  return nb::tuple(l);
}

nb::dict inspect(const std::filesystem::path& path) {
  std::optional<st::checkpoint> ck;
  {
    lris::python::gil_released nogil;
    ck.emplace(path);
  }
  nb::dict out, meta, tensors;
  nb::list shards;
  out["path"] = ck->path().string();
  for (const auto& [k, v] : ck->metadata()) meta[nb::str(k.c_str(), k.size())] = v;
  out["metadata"] = meta;
  for (const auto& s : ck->shards()) shards.append(s.file.path().string());
  out["shards"] = shards;
  for (const auto& r : ck->tensors()) {
    nb::dict t;
    t["dtype"] = lris::python::dtype_name(r.info->type);
    t["shape"] = shape_of(r.info->shape);
    t["nbytes"] = r.info->bytes();
    t["shard"] = r.shard;
    t["offset"] = ck->file_offset(r);
    tensors[nb::str(r.info->name.c_str(), r.info->name.size())] = t;
  }
  out["tensors"] = tensors;
  out["data_bytes"] = ck->data_bytes();
  return out;
}

nb::dict info() {
  nb::dict out;
  out["version"] = LRIS_VERSION_STRING;
  nb::list backends, devices;
  backends.append("host");
#if LRIS_PYTHON_CUDA
  backends.append("cuda");
  for (const auto& d : lris::cuda::list_devices()) {
    nb::dict e;
    e["device"] = fmt::format("cuda:{}", d.ordinal);
    e["name"] = d.name;
    e["arch"] = d.arch;
    e["memory_bytes"] = d.total_memory_bytes;
    e["pci_bus_id"] = d.pci_bus_id;
    devices.append(e);
  }
#endif
  out["backends"] = backends;
  out["devices"] = devices;
  return out;
}

// The default context's bandwidth broker, resource by resource: what the scheduler of the
// bandwidth-aware scheduling design asks it.
nb::dict broker_status() {
  std::vector<lris::sched::resource_status> all;
  {
    lris::python::gil_released nogil;
    all = lris::default_context()->broker()->status();
  }
  nb::dict out;
  for (const auto& r : all) {
    nb::dict e, by;
    e["gbps"] = r.gbps;
    e["ceiling_gbps"] = r.ceiling_gbps > 0 ? nb::cast(r.ceiling_gbps) : nb::none();
    e["utilization"] = r.utilization;
    e["external_gbps"] = r.external ? nb::cast(r.external_gbps) : nb::none();
    e["bytes"] = r.bytes;
    e["capacity"] = r.capacity;
    e["in_flight"] = r.in_flight;
    e["shared"] = r.shared;
    e["congested"] = r.congested;
    for (std::size_t p = 0; p < lris::priority_count; ++p) {
      nb::dict g;
      g["granted_bytes"] = r.granted_bytes[p];
      g["grants"] = r.grants[p];
      g["waits"] = r.waits[p];
      const std::string_view name = lris::to_string(static_cast<lris::priority>(p));
      by[nb::str(name.data(), name.size())] = g;
    }
    e["by_priority"] = by;
    out[nb::str(r.name.c_str(), r.name.size())] = e;
  }
  return out;
}

}  // namespace

NB_MODULE(_lris, m) {
  m.doc() = "LRIS: checkpoints, transfers and the weight cache, handed to NumPy, PyTorch and "
            "CuPy through DLPack";
  lris::python::register_errors(m);
  lris::python::register_cache(m);
  lris::python::register_host_pool(m);
  lris::python::register_load(m);

  nb::class_<py_tensor>(m, "Tensor",
                        "A loaded tensor. Its memory stays valid while this object or any "
                        "DLPack consumer of it (numpy.from_dlpack, torch.from_dlpack) holds it.")
      .def_prop_ro("name", [](const py_tensor& t) { return t.t.name; })
      .def_prop_ro("shape", [](const py_tensor& t) { return shape_of(t.t.shape); })
      .def_prop_ro("dtype", [](const py_tensor& t) { return lris::python::dtype_name(t.t.type); })
      .def_prop_ro("device", &py_tensor::device)
      .def_prop_ro("nbytes", [](const py_tensor& t) { return t.t.bytes; })
      .def("tobytes", [](const py_tensor& t) { return bytes_of(t.t); },
           "The raw bytes, as in the file (any dtype), copied to the host from a device.")
      .def("__dlpack__", &dlpack, "stream"_a = nb::none(), nb::kw_only(),
           "max_version"_a = nb::none(), "dl_device"_a = nb::none(), "copy"_a = nb::none(),
           "A DLPack capsule of the tensor (versioned when max_version >= (1, 0)).")
      .def("__dlpack_device__",
           [](const py_tensor& t) {
             const DLDevice d = st::dlpack_device(t.t.location);
             return std::make_pair(static_cast<int>(d.device_type), d.device_id);
           })
      .def("__repr__", [](const py_tensor& t) {
        std::string shape;
        for (std::size_t i = 0; i < t.t.shape.size(); ++i) {
          shape += fmt::format("{}{}", i ? ", " : "", t.t.shape[i]);
        }
        return fmt::format("lris.Tensor(\"{}\", shape=({}{}), dtype={}, device={})", t.t.name,
                           shape, t.t.shape.size() == 1 ? "," : "",
                           lris::python::dtype_name(t.t.type), t.device());
      });

  m.def("load_into", &lris::python::load_into, "tensors"_a, "path"_a, "strict"_a = true,
        "progress"_a = nb::none(),
        "Loads a checkpoint into memory the caller allocated: tensors maps names to objects "
        "with __dlpack__ (NumPy arrays, torch tensors: a state_dict), each checked for dtype, "
        "shape and layout. Returns {loaded, bytes, missing, unexpected}.");
  m.def("copy", &lris::python::copy, "dst"_a, "src"_a,
        "Copies src into dst (objects with __dlpack__: NumPy arrays, torch tensors; same dtype "
        "and shape, contiguous): host to host, host to GPU and back (pageable memory through "
        "the pinned staging ring), or within a GPU. Returns {bytes, seconds, path, policy}.");
  m.def("inspect", &inspect, "path"_a, "The tensors, shards and metadata of a checkpoint.");
  m.def("info", &info, "What this build of LRIS has.");
  m.def("broker_status", &broker_status,
        "The bandwidth broker's resources (host memory, each link direction, each disk): "
        "achieved and ceiling GB/s, utilization, bytes in flight, and grants, granted bytes "
        "and waits per priority.");
}
