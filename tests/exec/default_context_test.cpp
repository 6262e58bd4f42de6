// Two shared objects, each with its own static copy of LRIS and hidden symbols, loaded with
// RTLD_LOCAL (as Python loads extension modules), see one default context.
#include <catch2/catch.hpp>

#include <dlfcn.h>

#include <string>

namespace {
void* default_of(const std::string& module) {
  void* handle = ::dlopen(module.c_str(), RTLD_NOW | RTLD_LOCAL);
  INFO(module << ": " << (handle ? "" : ::dlerror()));
  REQUIRE(handle != nullptr);
  auto* fn = reinterpret_cast<void* (*)()>(::dlsym(handle, "lris_test_default_context"));
  REQUIRE(fn != nullptr);
  return fn();  // the handle stays open: the context it made lives in that module's code
}
}  // namespace

TEST_CASE("one default context for every module that links LRIS statically", "[exec][context]") {
  void* a = default_of(LRIS_TEST_MODULE_A);
  void* b = default_of(LRIS_TEST_MODULE_B);
  CHECK(a != nullptr);
  CHECK(a == b);
}
