#pragma once
// LRIS's errors as Python exceptions: every one a subclass of lris.Error carrying the C++
// message, and of the builtin exception a Python user would catch for it (ValueError for bad
// arguments and files, OSError with errno for io, MemoryError, NotImplementedError).

#include <nanobind/nanobind.h>

#include <exception>
#include <system_error>

#include <lris/error.hpp>
#include <lris/formats/safetensors.hpp>

namespace lris::python {

namespace detail {
// The exception types, made once when the module is imported; owned by the module (its
// attributes), and referred to here for the translator.
struct error_types {
  PyObject* error = nullptr;
  PyObject* invalid_argument = nullptr;
  PyObject* format_error = nullptr;
  PyObject* integrity_error = nullptr;
  PyObject* out_of_memory = nullptr;
  PyObject* unsupported = nullptr;
  PyObject* cancelled = nullptr;
  PyObject* device_error = nullptr;
  PyObject* device_lost = nullptr;
  PyObject* io_error = nullptr;
};
inline error_types& types() {
  static error_types t;
  return t;
}

// A new exception type lris.<name> deriving from `bases` (a tuple), set on module `m`.
inline PyObject* make_type(nanobind::module_& m, const char* name, const char* doc,
                           nanobind::tuple bases) {
  const std::string full = std::string("lris.") + name;
  PyObject* t = PyErr_NewExceptionWithDoc(full.c_str(), doc, bases.ptr(), nullptr);
  if (t == nullptr) throw nanobind::python_error();
  m.attr(name) = nanobind::handle(t);
  return t;
}
}  // namespace detail

/// @brief Makes lris.Error and its subclasses on `m` and translates C++ exceptions to them.
inline void register_errors(nanobind::module_& m) {
  namespace nb = nanobind;
  auto& t = detail::types();
  const auto exc = [](PyObject* p) { return nb::handle(p); };
  t.error = detail::make_type(m, "Error", "Every error LRIS raises; str() is its message.",
                              nb::make_tuple(exc(PyExc_Exception)));
  t.invalid_argument = detail::make_type(m, "InvalidArgument", "A bad argument.",
                                         nb::make_tuple(exc(t.error), exc(PyExc_ValueError)));
  t.format_error = detail::make_type(m, "FormatError", "A malformed file (it names the rule, "
                                     "the file, the tensor and the offset).",
                                     nb::make_tuple(exc(t.error), exc(PyExc_ValueError)));
  t.integrity_error = detail::make_type(m, "IntegrityError", "Bytes that do not match their "
                                        "checksum.", nb::make_tuple(exc(t.error)));
  t.out_of_memory = detail::make_type(m, "OutOfMemory", "Memory could not be had.",
                                      nb::make_tuple(exc(t.error), exc(PyExc_MemoryError)));
  t.unsupported = detail::make_type(m, "Unsupported", "Not possible in this build or on this "
                                    "device.",
                                    nb::make_tuple(exc(t.error), exc(PyExc_NotImplementedError)));
  t.cancelled = detail::make_type(m, "Cancelled", "Stopped on request (a progress callback "
                                  "returned False).", nb::make_tuple(exc(t.error)));
  t.device_error = detail::make_type(m, "DeviceError", "A GPU runtime call failed.",
                                     nb::make_tuple(exc(t.error)));
  t.device_lost = detail::make_type(m, "DeviceLost", "The GPU was lost to a sticky error.",
                                    nb::make_tuple(exc(t.device_error)));
  t.io_error = detail::make_type(m, "IoError", "A file could not be read or written; errno is "
                                 "the system's.", nb::make_tuple(exc(t.error), exc(PyExc_OSError)));
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    auto& t = detail::types();
    try {
      std::rethrow_exception(p);
    } catch (const lris::io_error& e) {
      nb::object args = nb::make_tuple(e.code().value(), e.what());
      PyErr_SetObject(t.io_error, args.ptr());
    } catch (const lris::invalid_argument& e) {
      PyErr_SetString(t.invalid_argument, e.what());
    } catch (const lris::format_error& e) {
      PyErr_SetString(t.format_error, e.what());
    } catch (const lris::integrity_error& e) {
      PyErr_SetString(t.integrity_error, e.what());
    } catch (const lris::out_of_memory& e) {
      PyErr_SetString(t.out_of_memory, e.what());
    } catch (const lris::unsupported& e) {
      PyErr_SetString(t.unsupported, e.what());
    } catch (const lris::cancelled& e) {
      PyErr_SetString(t.cancelled, e.what());
    } catch (const lris::device_lost& e) {
      PyErr_SetString(t.device_lost, e.what());
    } catch (const lris::device_error& e) {
      PyErr_SetString(t.device_error, e.what());
    } catch (const lris::error& e) {
      PyErr_SetString(t.error, e.what());
    }
  });
}

}  // namespace lris::python
