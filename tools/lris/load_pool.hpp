#pragma once
// lris load --pool NAME: the tensors of a host pool copied into host or GPU memory, timed; the
// pool's data pinned in this process first (timed apart), or staged where pinning is refused.

#include <string>

namespace lris::tool {

struct pool_load_cli {
  std::string pool;
  std::string device = "host";
  bool verify = false;
  bool json = false;
};

int load_from_pool(const pool_load_cli& c);

}  // namespace lris::tool
