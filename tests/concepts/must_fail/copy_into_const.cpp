// Must not compile: the destination of a copy cannot be const.
#include <lris/lris.hpp>

int main() {
  const char src[4] = {};
  char dst[4] = {};
  (void)lris::copy(lris::as_host(src, 4), lris::as_host(dst, 4));
}
