// A downstream program: checks that LRIS's headers, compiled core and CMake package work.
#include <cstdio>
#include <vector>

#include <lris/lris.hpp>

int main() {
  std::vector<int> a(1 << 20, 42), b(a.size());
  const auto& st = lris::copy(lris::as_host(b), lris::as_host(a)).wait();
  const auto info = lris::probe_host();
  std::printf("lris %s: copied %llu bytes (%s path) on %u threads\n", LRIS_VERSION_STRING,
              static_cast<unsigned long long>(st.bytes), lris::to_string(st.path).data(),
              info.cpu.allowed_threads);
  return a == b ? 0 : 1;
}
