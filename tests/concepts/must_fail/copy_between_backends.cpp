// Must not compile: device memory of two different backends has no path between them.
#include <lris/lris.hpp>

namespace {
struct other_backend : lris::host_backend {};
}  // namespace

int main() {
  lris::device_span<lris::host_backend> a;
  lris::device_span<other_backend> b;
  (void)lris::copy(b, a);
}
