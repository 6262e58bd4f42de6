// lris.HostPool over pool::host_pool: one copy of a checkpoint in shared memory for every
// process on the machine, its tensors handed out as lris.Tensors over that memory (no copy),
// or copied to a GPU as one batch.
#include "host_pool.hpp"

#include <nanobind/stl/filesystem.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <lris/lris.hpp>
#if LRIS_PYTHON_CUDA
#include <lris/cuda.hpp>
#endif

#include "args.hpp"
#include "device_name.hpp"
#include "gil.hpp"
#include "interruptible.hpp"
#include "progress.hpp"
#include "py_tensor.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace lris::python {
namespace {

namespace st = lris::safetensors;

nb::dict info_dict(const pool::pool_info& i) {
  nb::dict d;
  d["name"] = i.name;
  d["data_bytes"] = i.data_bytes;
  d["used_bytes"] = i.used_bytes;
  d["tensors"] = i.tensors;
  d["filling"] = i.filling;
  d["users"] = i.users;
  d["numa_node"] = i.numa_node;
  d["numa_bound"] = i.numa_bound;
  d["numa_note"] = i.numa_note;
  d["persistent"] = i.persistent;
  d["generation"] = i.generation;
  return d;
}

// A ready tensor of the pool as an lris.Tensor over the shared memory (it keeps the pool
// mapped in this process while it or a DLPack consumer lives), exported read-only.
nb::object tensor_of(const std::shared_ptr<pool::host_pool>& p, const pool::pool_tensor& t) {
  st::loaded_tensor l;
  l.name = std::string(t.name);
  l.type = t.type;
  l.shape = t.shape;
  l.data = const_cast<std::byte*>(t.data);
  l.bytes = t.bytes;
  l.lease = p;
  py_tensor out{std::move(l)};
  out.read_only = true;  // every process's copy
  return nb::cast(std::move(out));
}

nb::dict populate(py_pool& self, const std::filesystem::path& path, nb::object select,
                  nb::object progress) {
  const auto held = self.hold();
  pool::host_pool& p = *held;
  st::load_options o;
  if (nb::isinstance<nb::str>(select)) {
    o.select = nb::cast<std::string>(select);
  } else if (!select.is_none()) {
    o.names = names_of(select, fmt::format("lris.HostPool(\"{}\").populate", p.name()), "select");
  }
  progress_bridge bridge(std::move(progress),
                         fmt::format("lris.HostPool(\"{}\").populate(\"{}\")", p.name(),
                                     path.string()));
  o.on_progress = bridge.callback();
  const pool::populate_report r = run_interruptibly([&] {
    const st::checkpoint ck(path);
    return pool::populate(p, default_pipeline<host_backend>(), ck, o);
  }, bridge);
  nb::dict d;
  d["loaded"] = r.loaded;
  d["present"] = r.present;
  d["busy"] = r.busy;
  d["taken_over"] = r.taken_over;
  d["bytes"] = r.bytes;
  d["seconds"] = r.seconds;
  return d;
}

nb::dict load(py_pool& self, const std::string& device, std::optional<std::vector<std::string>> names) {
  const auto held_pool = self.hold();
  pool::host_pool& p = *held_pool;
  const auto [kind, index] = parse_device(device);
  const std::vector<std::string> which = names.value_or(std::vector<std::string>{});
  st::loaded_checkpoint loaded;
  {
    gil_released nogil;
    if (kind == "cpu") {
      loaded = pool::load(p, default_pipeline<host_backend>(), st::load_target_memory::host, which);
    } else if (LRIS_PYTHON_CUDA && kind == "cuda") {
#if LRIS_PYTHON_CUDA
      loaded = pool::load(p, default_pipeline<cuda_backend>(index), st::load_target_memory::device,
                          which);
#endif
    } else {
      throw unsupported(fmt::format("lris.HostPool.load(device=\"{}\"): not a device of this "
                                    "build (cpu{})", device, LRIS_PYTHON_CUDA ? ", cuda:N" : ""));
    }
  }
  return tensors_dict(loaded);
}

nb::dict pin(py_pool& self, const std::string& device) {
  const auto held_pool = self.hold();
  pool::host_pool& p = *held_pool;
  const auto [kind, index] = parse_device(device);
  if (!(LRIS_PYTHON_CUDA && kind == "cuda")) {
    throw unsupported(fmt::format("lris.HostPool.pin(\"{}\"): pinning is for a GPU of this build "
                                  "({})", device, LRIS_PYTHON_CUDA ? "cuda:N" : "none"));
  }
  pool::pin_report r;
#if LRIS_PYTHON_CUDA
  using reg_t = pool::pool_registration<cuda_backend>;
  std::shared_ptr<reg_t> reg;
  {
    gil_released nogil;
    reg = std::shared_ptr<reg_t>(new reg_t(p, cuda_backend(index), reg_t::default_segment_bytes,
                                           probe_host().memlock.pinnable_bytes),
                                 [held_pool](reg_t* q) { delete q; });  // before the pool goes
    r = reg->report();
  }
  if (r.pinned) self.registration = std::move(reg);  // under the GIL again
#endif
  nb::dict d;
  d["pinned"] = r.pinned;
  d["bytes"] = r.bytes;
  d["segments"] = r.segments;
  d["seconds"] = r.seconds;
  d["why"] = r.why;
  return d;
}

}  // namespace

void register_host_pool(nb::module_& m) {
  nb::class_<py_pool>(m, "_HostPool")
      .def("__init__",
           [](py_pool* self, const std::string& name, std::optional<std::uint64_t> bytes,
              int numa_node, bool persistent, std::uint32_t max_tensors) {
             std::shared_ptr<pool::host_pool> p;
             {
               gil_released nogil;
               if (bytes) {
                 p = std::make_shared<pool::host_pool>(pool::host_pool::open(
                     name, *bytes, {numa_node, max_tensors, persistent}));
               } else {
                 p = std::make_shared<pool::host_pool>(pool::host_pool::attach(name));
               }
             }
             new (self) py_pool{std::move(p), nullptr};
           },
           "name"_a, "bytes"_a = nb::none(), "numa_node"_a = -1, "persistent"_a = false,
           "max_tensors"_a = 16384)
      .def_prop_ro("name", [](const py_pool& p) { return p.live().name(); })
      .def("info", [](py_pool& p) { return info_dict(p.live().info()); })
      .def("populate", &populate, "path"_a, "select"_a = nb::none(), "progress"_a = nb::none())
      .def("find",
           [](py_pool& p, const std::string& name) -> nb::object {
             auto t = p.live().find(name);
             return t ? tensor_of(p.pool, *t) : nb::none();
           },
           "name"_a)
      .def("tensors",
           [](py_pool& p) {
             nb::dict out;
             for (const auto& t : p.live().tensors()) {
               out[nb::str(t.name.data(), t.name.size())] = tensor_of(p.pool, t);
             }
             return out;
           })
      .def("load", &load, "device"_a = "cpu", "names"_a = nb::none())
      .def("pin", &pin, "device"_a = "cuda:0")
      .def("verify",
           [](py_pool& p, const std::string& name) {
             const auto held = p.hold();
             gil_released nogil;
             held->verify(name);
           },
           "name"_a)
      .def("close",
           [](py_pool& p) {
             p.registration.reset();
             p.pool.reset();
           })
      .def_static("list",
                  [] {
                    nb::list out;
                    for (const auto& i : pool::host_pool::list()) out.append(info_dict(i));
                    return out;
                  })
      .def_static("drop", &pool::host_pool::drop, "name"_a);
}

}  // namespace lris::python
