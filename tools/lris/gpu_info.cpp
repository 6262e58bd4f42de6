#include "gpu_info.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <lris/config.hpp>

namespace lris::tool {

std::string gpu_text() {
  return "gpus          none listed: this lris was built without a GPU backend\n"
         "  reason      configure with -DLRIS_ENABLE_CUDA=ON where the CUDA toolkit is installed\n";
}

std::string gpu_json(const std::string& host_json) {
  auto j = nlohmann::ordered_json::parse(host_json);
  j["gpu_backends"] = nlohmann::ordered_json::array();
  j["gpus"] = nlohmann::ordered_json::array();
  return j.dump(2);
}

}  // namespace lris::tool
