#pragma once
// Memory of other libraries' objects taken through DLPack as a consumer: where the bytes are,
// their type, shape and layout, and the stream the producer must order its work before.

#include <nanobind/nanobind.h>

#include <dlpack/dlpack.h>

#include <cstdint>
#include <map>
#include <memory>
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

// A destination: where the object's bytes are, and what it holds. It owns the DLManagedTensor
// taken from the object's capsule: released (its deleter called) when the last copy of it goes.
struct destination {
  std::byte* data = nullptr;
  DLDevice device{};
  DLDataType type{};
  std::vector<std::int64_t> shape;
  std::size_t bytes = 0;  // row-major without gaps
  bool compact = true;    // row-major without gaps
  std::shared_ptr<DLManagedTensor> managed;
};

inline std::string shape_text(const std::vector<std::int64_t>& s) {
  std::string t = "(";
  for (std::size_t i = 0; i < s.size(); ++i) t += fmt::format("{}{}", i ? ", " : "", s[i]);
  return t + (s.size() == 1 ? ",)" : ")");
}

// A DLPack type as messages name it: "(code 2, 32 bits)", with its lanes where there are
// several.
inline std::string dl_type_text(const DLDataType& t) {
  return t.lanes == 1 ? fmt::format("(code {}, {} bits)", t.code, t.bits)
                      : fmt::format("(code {}, {} bits, {} lanes)", t.code, t.bits, t.lanes);
}

// The destinations of one call, by name, released when the call is over.
struct taken {
  std::map<std::string, destination> by_name;
};

// `obj`'s memory through its __dlpack__ (`what` and `name` for messages). For GPU memory the
// consumer's stream is `consumer`'s: the producer makes it wait for the work that writes the
// object, and the caller waits for that stream before it touches the memory.
inline destination take(const char* what, const std::string& name, nb::handle obj,
                        consumer_stream& consumer) {
  if (!nb::hasattr(obj, "__dlpack__") || !nb::hasattr(obj, "__dlpack_device__")) {
    throw invalid_argument(fmt::format("{}: the object for \"{}\" ({}) has no __dlpack__", what,
                                       name, nb::type_name(obj.type()).c_str()));
  }
  const auto bad = [&](const std::string& why) {
    return invalid_argument(fmt::format("{}: the object for \"{}\" ({}): {}", what, name,
                                        nb::type_name(obj.type()).c_str(), why));
  };
  const nb::object dev = obj.attr("__dlpack_device__")();
  int kind = 0, id = 0;
  if (!(nb::isinstance<nb::tuple>(dev) || nb::isinstance<nb::list>(dev)) || nb::len(dev) != 2 ||
      !nb::try_cast(dev[0], kind) ||
      !nb::try_cast(dev[1], id)) {
    throw bad(fmt::format("__dlpack_device__() gave {}, not a pair of ints (device type, id)",
                          nb::cast<std::string>(nb::repr(dev))));
  }
  nb::object cap = kind == kDLCUDA
                       ? obj.attr("__dlpack__")(nb::arg("stream") = consumer.on(id))
                       : obj.attr("__dlpack__")();
  auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(cap.ptr(), "dltensor"));
  if (m == nullptr) {
    PyErr_Clear();
    throw invalid_argument(fmt::format("{}: the object for \"{}\" gave no \"dltensor\" capsule",
                                       what, name));
  }
  PyCapsule_SetName(cap.ptr(), "used_dltensor");  // ours now: released with the destination
  destination d;
  d.managed = std::shared_ptr<DLManagedTensor>(m, [](DLManagedTensor* q) {
    if (q->deleter != nullptr) q->deleter(q);
  });
  const DLTensor& t = m->dl_tensor;
  if (t.ndim < 0 || t.ndim > 64 || (t.ndim > 0 && t.shape == nullptr)) {
    throw bad(fmt::format("its DLPack tensor has {} dimensions{}", t.ndim,
                          t.ndim > 0 && t.shape == nullptr ? " and no shape" : ""));
  }
  d.data = static_cast<std::byte*>(t.data) + t.byte_offset;
  d.device = t.device;
  d.type = t.dtype;
  d.shape.assign(t.shape, t.shape + t.ndim);
  // Its size in bytes, every product checked: a shape that overflows is refused, not wrapped.
  std::uint64_t bits = static_cast<std::uint64_t>(t.dtype.bits) * t.dtype.lanes;
  bool empty = false;
  for (const std::int64_t n : d.shape) {
    if (n < 0) throw bad(fmt::format("its DLPack shape {} has a negative size", shape_text(d.shape)));
    empty = empty || n == 0;
  }
  for (const std::int64_t n : d.shape) {
    if (!empty && __builtin_mul_overflow(bits, static_cast<std::uint64_t>(n), &bits)) {
      throw bad(fmt::format("its DLPack shape {} of {}-bit elements is more bytes than memory has",
                            shape_text(d.shape), t.dtype.bits * t.dtype.lanes));
    }
  }
  d.bytes = empty ? 0 : static_cast<std::size_t>(bits / 8 + (bits % 8 != 0));
  if (t.strides != nullptr && !empty) {  // an empty tensor's strides say nothing
    std::int64_t expect = 1;
    for (int i = t.ndim - 1; i >= 0; --i) {
      if (t.shape[i] != 1 && t.strides[i] != expect) d.compact = false;
      expect *= t.shape[i];
    }
  }
  return d;
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
