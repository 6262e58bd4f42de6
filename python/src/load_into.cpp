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

#include "args.hpp"
#include "dlpack_import.hpp"
#include "dtype_names.hpp"
#include "gil.hpp"
#include "interruptible.hpp"
#include "progress.hpp"

namespace nb = nanobind;
namespace st = lris::safetensors;

namespace lris::python {
nb::dict load_into(nb::handle tensors, const std::filesystem::path& path, bool strict,
                   nb::object progress) {
  std::optional<st::checkpoint> ck;
  {
    gil_released nogil;
    ck.emplace(path);
  }
  taken dst;
  consumer_stream consumer;
  for (nb::handle key : nb::iter(tensors.attr("keys")())) {
    const auto name = arg_as<std::string>(key, fmt::format("lris.load_into {}", path.string()),
                                          "a destination's name", "a str");
    dst.by_name.emplace(name, take("lris.load_into", name, tensors[key], consumer));
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
  // Host memory this process may not write: refused before anything is read (one read of the
  // process's mappings, about 0.2 ms, for every destination and every byte of each).
  if (where && where->device_type != kDLCUDA) {
    const auto maps = process_mappings::read();
    const std::string call = fmt::format("lris.load_into {}", path.string());
    for (const auto& [name, d] : dst.by_name) {
      if (ck->find(name) == nullptr) continue;
      const std::size_t n = d.bytes;
      refuse_unreachable(call.c_str(), name, d, n, maps.first_unwritable(d.data, n), true);
    }
  }
  // Each destination against its tensor, before anything is read (called by load_into for
  // every selected tensor, in checkpoint order, with the GIL released).
  const auto check = [&](const st::tensor_request& r) -> const destination& {
    const destination& d = dst.by_name.at(std::string(r.name));
    const DLDataType want = st::dlpack_dtype(r.type);
    if (d.type.code != want.code || d.type.bits != want.bits || d.type.lanes != want.lanes) {
      throw invalid_argument(fmt::format("lris.load_into {}: tensor \"{}\" is {}; its destination "
                                         "holds DLPack type {}", path.string(), r.name,
                                         dtype_name(r.type), dl_type_text(d.type)));
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
  progress_bridge bridge(std::move(progress), fmt::format("lris.load_into({})", path.string()));
  o.on_progress = bridge.callback();
  st::loaded_checkpoint loaded;
  if (!o.names.empty()) {
    if (where->device_type == kDLCUDA) {
      gil_released nogil;
      consumer.wait();  // the producer's work on the destinations, done
    }
    loaded = run_interruptibly([&] {
      st::loaded_checkpoint l;
      if (where->device_type == kDLCUDA) {
#if LRIS_PYTHON_CUDA
        l = st::load_into(default_pipeline<cuda_backend>(where->device_id), *ck,
                          [&](const st::tensor_request& r) {
                            const destination& d = check(r);
                            return device_span<cuda_backend>(d.data, r.bytes, where->device_id);
                          }, o);
#endif
      } else {
        l = st::load_into(default_pipeline<host_backend>(), *ck,
                          [&](const st::tensor_request& r) {
                            return as_host(check(r).data, r.bytes);
                          }, o);
      }
      return l;
    }, bridge);
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
