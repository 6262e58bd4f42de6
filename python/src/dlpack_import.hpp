#pragma once
// Memory of other libraries' objects taken through DLPack as a consumer: where the bytes are,
// their type, shape and layout, and the stream the producer must order its work before.

#include <nanobind/nanobind.h>

#include <dlpack/dlpack.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <lris/error.hpp>
#include <lris/memory/process_mappings.hpp>
#if LRIS_PYTHON_CUDA
#include <lris/cuda.hpp>
#endif

namespace lris::python {

namespace nb = nanobind;

// The stream LRIS consumes GPU objects on: made on the first GPU asked for; wait() blocks until
// the work producers ordered before it is done.
class consumer_stream {
 public:
  std::intptr_t on([[maybe_unused]] int device) {
#if LRIS_PYTHON_CUDA
    if (!gpu_) {
      gpu_.emplace(device);
      stream_.emplace(gpu_->make_stream());
    }
    return reinterpret_cast<std::intptr_t>(stream_->native());
#else
    throw unsupported("GPU memory through DLPack, in a build without CUDA");
#endif
  }
  void wait() {
#if LRIS_PYTHON_CUDA
    if (gpu_) gpu_->synchronize(*stream_);
#endif
  }

 private:
#if LRIS_PYTHON_CUDA
  std::optional<cuda_backend> gpu_;
  std::optional<cuda_backend::stream> stream_;
#endif
};

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

inline std::string shape_text(const std::vector<std::int64_t>& s) {
  std::string t = "(";
  for (std::size_t i = 0; i < s.size(); ++i) t += fmt::format("{}{}", i ? ", " : "", s[i]);
  return t + (s.size() == 1 ? ",)" : ")");
}

// `obj`'s memory through its __dlpack__ (`what` and `name` for messages). For GPU memory the
// consumer's stream is `consumer`'s: the producer makes it wait for the work that writes the
// object, and the caller waits for that stream before it touches the memory.
inline destination take(const char* what, const std::string& name, nb::handle obj,
                        consumer_stream& consumer) {
  if (!nb::hasattr(obj, "__dlpack__") || !nb::hasattr(obj, "__dlpack_device__")) {
    throw invalid_argument(fmt::format("{}: the object for \"{}\" ({}) has no __dlpack__", what,
                                       name, nb::type_name(obj.type()).c_str()));
  }
  const auto dev = nb::cast<nb::tuple>(obj.attr("__dlpack_device__")());
  const int kind = nb::cast<int>(dev[0]);
  nb::object cap = kind == kDLCUDA
                       ? obj.attr("__dlpack__")(nb::arg("stream") = consumer.on(nb::cast<int>(dev[1])))
                       : obj.attr("__dlpack__")();
  auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(cap.ptr(), "dltensor"));
  if (m == nullptr) {
    PyErr_Clear();
    throw invalid_argument(fmt::format("{}: the object for \"{}\" gave no \"dltensor\" capsule",
                                       what, name));
  }
  PyCapsule_SetName(cap.ptr(), "used_dltensor");  // ours now: released by `taken`
  destination d;
  d.managed = m;
  const DLTensor& t = m->dl_tensor;
  d.data = static_cast<std::byte*>(t.data) + t.byte_offset;
  d.device = t.device;
  d.type = t.dtype;
  d.shape.assign(t.shape, t.shape + t.ndim);
  bool empty = false;
  for (int i = 0; i < t.ndim; ++i) empty = empty || t.shape[i] == 0;
  if (t.strides != nullptr && !empty) {  // an empty tensor's strides say nothing
    std::int64_t expect = 1;
    for (int i = t.ndim - 1; i >= 0; --i) {
      if (t.shape[i] != 1 && t.strides[i] != expect) d.compact = false;
      expect *= t.shape[i];
    }
  }
  return d;
}

// The bytes `d` spans, row-major without gaps.
inline std::size_t bytes_of(const destination& d) {
  std::uint64_t elements = 1;
  for (const auto n : d.shape) elements *= static_cast<std::uint64_t>(n);
  return static_cast<std::size_t>((elements * d.type.bits * d.type.lanes + 7) / 8);
}

// Refuses host memory of `d` (`bytes` from its start) in which `bad` is a byte this process
// may not write (or, with `write` false, read): memory in a read-only mapping, or in none, as
// process_mappings or probe_ends found it. A CPU copy into it would kill the process; `what`
// and `name` name the call and the object.
inline void refuse_unreachable(const char* what, const std::string& name, const destination& d,
                               std::size_t bytes, const std::byte* bad, bool write) {
  if (bad == nullptr) return;
  throw invalid_argument(fmt::format(
      "{}: the memory of \"{}\" ({} bytes at {}) is not memory this process may {}, from {} on "
      "({}): refused before any byte moved", what, name, bytes, static_cast<const void*>(d.data),
      write ? "write" : "read", static_cast<const void*>(bad),
      write ? "read-only or unmapped" : "unmapped"));
}

}  // namespace lris::python
