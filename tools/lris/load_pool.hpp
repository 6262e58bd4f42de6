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
  unsigned tp = 1;      // with tp > 1: only rank `rank`'s slices (tp_plan_of(tp_plan, tp))
  unsigned rank = 0;
  std::string tp_plan;
};

int load_from_pool(const pool_load_cli& c);

}  // namespace lris::tool
