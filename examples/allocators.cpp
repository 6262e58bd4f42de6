// Choosing where memory comes from.
#include <cstdio>

#include <lris/lris.hpp>

int main() {
  // [allocators]
  // Huge pages where the machine has them (1 GiB, then 2 MiB, then THP), and which it got.
  lris::huge_page_allocator huge;
  lris::huge_allocation a = huge.allocate_reporting(std::size_t{64} << 20);
  std::printf("backed by %s pages\n", lris::to_string(a.kind).data());
  huge.deallocate(a.ptr, std::size_t{64} << 20);

  // Memory on NUMA node 0, cached in a pool so repeated buffers cost nothing.
  lris::caching_pool pool{lris::numa_allocator{0}};
  {
    lris::buffer<decltype(pool)> scratch(std::size_t{16} << 20, pool);
  }  // returned to the pool, not the OS
  lris::buffer<decltype(pool)> again(std::size_t{16} << 20, pool);  // a cache hit

  // Any allocator behind one run-time type, e.g. chosen from a config file.
  lris::page_aligned_allocator aligned;
  lris::allocator_ref any(aligned);
  void* p = any.allocate(4096, 4096);
  any.deallocate(p, 4096, 4096);
  // [allocators]
  return 0;
}
