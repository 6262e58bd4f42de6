#pragma once
// lris load FILE|DIR --devices cuda:0,cuda:1 [--tp N]: the checkpoint read once and delivered to
// every device, each tensor-parallel rank getting only its slices; the bytes read from storage,
// the bytes and the path per device, timed.

#include <string>

#include <lris/fanout/sharding.hpp>
#include <lris/transfer/plan.hpp>

namespace lris::tool {

/// The plan of --tp-plan: a JSON file ({"pattern": "style"} or a config.json with
/// base_model_tp_plan), "llama", or with none given llama's for tp > 1 (else no split).
fanout::sharding tp_plan_of(const std::string& tp_plan, unsigned tp);

struct fan_out_cli {
  std::string path;
  std::string devices;   // "cuda:0,cuda:1", "host:0,host:1"
  unsigned tp = 1;
  std::string tp_plan;   // a JSON file, or "llama" (the default with tp > 1)
  std::string select;
  std::string route = "automatic";  // automatic | dma | peer | nccl
  std::string nccl;      // the NCCL library for the nccl route: a file name or path
  bool verify = false;
  bool cold = false;
  bool json = false;
  std::string pool;      // instead of path: a host pool's tensors, no file read
  transfer_options transfer = {};  // chunk, workers and queue depth asked for
};

int load_fan_out(const fan_out_cli& c);

}  // namespace lris::tool
