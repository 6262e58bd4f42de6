#include <fmt/format.h>

#include <lris/system/host_info.hpp>

#include "commands.hpp"
#include "gpu_info.hpp"

namespace lris::tool {

command add_info(CLI::App& app) {
  auto json = std::make_shared<bool>(false);
  app.add_flag("--json", *json, "machine-readable output");
  return [json] {
    const host_info info = probe_host();
    if (*json) {
      fmt::print("{}\n", gpu_json(to_json(info)));
    } else {
      fmt::print("{}", to_text(info));
      fmt::print("{}", gpu_text());
    }
    return 0;
  };
}

}  // namespace lris::tool
