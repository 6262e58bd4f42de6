#pragma once
// Python arguments taken as C++ values, with an error that names the call, the argument and
// what it was given (a bare cast would raise "std::bad_cast").

#include <nanobind/nanobind.h>

#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

namespace lris::python {

/// @brief `value` as a T, or TypeError "`call`: `arg` is <repr>, not `want`".
template <class T>
T arg_as(nanobind::handle value, std::string_view call, std::string_view arg,
         std::string_view want) {
  T out{};
  if (!nanobind::try_cast(value, out)) {
    throw nanobind::type_error(fmt::format("{}: {} is {}, not {}", call, arg,
                                           nanobind::repr(value).c_str(), want).c_str());
  }
  return out;
}

/// @brief The names of an iterable of str (a select list), each checked.
inline std::vector<std::string> names_of(nanobind::handle list, std::string_view call,
                                         std::string_view arg) {
  std::vector<std::string> out;
  for (nanobind::handle n : list) {
    out.push_back(arg_as<std::string>(n, call, fmt::format("an item of {}", arg), "a str"));
  }
  return out;
}

}  // namespace lris::python
