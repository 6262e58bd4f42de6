#pragma once
// GPUs for `lris info`: what the GPU backends built into this program see.

#include <string>

namespace lris::tool {

/// Lines describing each GPU (name, memory, PCIe link, NUMA node), or why none is listed.
std::string gpu_text();
/// `host_json` (an object) with a "gpus" array and "gpu_backends" added.
std::string gpu_json(const std::string& host_json);

}  // namespace lris::tool
