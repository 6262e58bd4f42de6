// Must not compile: a pipeline's staging ring must be pinned memory.
#include <lris/lris.hpp>

int main() {
  lris::pipeline<lris::staged, lris::host_backend, lris::pageable_allocator> p;
  (void)p;
}
