// A plugin that links LRIS statically and hides its symbols, as a Python extension does: it
// reports the default context it sees.
#include <lris/exec/context.hpp>

extern "C" __attribute__((visibility("default"))) void* lris_test_default_context() {
  return lris::default_context().get();
}
