// lris inspect FILE|DIR: the tensors of a safetensors checkpoint (name, dtype, shape, bytes,
// file offset) and its metadata, after validating every header.
#include <algorithm>
#include <string>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <lris/formats/checkpoint.hpp>
#include <lris/system/format_bytes.hpp>

#include "commands.hpp"

namespace lris::tool {

namespace {

struct inspect_options {
  std::string path;
  bool json = false;
};

int run_inspect(const inspect_options& o) {
  const safetensors::checkpoint ck(o.path);
  if (o.json) {
    nlohmann::json out;
    out["path"] = ck.path().string();
    out["metadata"] = ck.metadata();
    out["data_bytes"] = ck.data_bytes();
    for (const auto& s : ck.shards()) {
      out["files"].push_back({{"file", s.file.path().string()},
                              {"bytes", s.header.file_bytes},
                              {"header_bytes", s.header.header_bytes}});
    }
    for (const auto& t : ck.tensors()) {
      out["tensors"].push_back({{"name", t.info->name},
                                {"dtype", std::string(to_string(t.info->type))},
                                {"shape", t.info->shape},
                                {"bytes", t.info->bytes()},
                                {"file", ck.shards()[t.shard].file.path().filename().string()},
                                {"offset", ck.file_offset(t)}});
    }
    fmt::print("{}\n", out.dump(2));
    return 0;
  }
  fmt::print("{}: {} tensors, {} in {} file{}\n", ck.path().string(), ck.tensors().size(),
             format_bytes(ck.data_bytes()), ck.shards().size(), ck.shards().size() == 1 ? "" : "s");
  std::size_t width = 4;
  for (const auto& t : ck.tensors()) width = std::max(width, t.info->name.size());
  width = std::min<std::size_t>(width, 60);
  const bool sharded = ck.shards().size() > 1;
  fmt::print("\n{:<{}}  {:<11} {:<20} {:>12} {:>14}{}\n", "name", width, "dtype", "shape", "bytes",
             "offset", sharded ? "  file" : "");
  for (const auto& t : ck.tensors()) {
    fmt::print("{:<{}}  {:<11} {:<20} {:>12} {:>14}{}\n", t.info->name, width,
               to_string(t.info->type), fmt::format("[{}]", fmt::join(t.info->shape, ", ")),
               t.info->bytes(), ck.file_offset(t),
               sharded ? "  " + ck.shards()[t.shard].file.path().filename().string() : "");
  }
  if (!ck.metadata().empty()) {
    fmt::print("\nmetadata:\n");
    for (const auto& [k, v] : ck.metadata()) fmt::print("  {}: {}\n", k, v);
  }
  return 0;
}

}  // namespace

command add_inspect(CLI::App& app) {
  auto o = std::make_shared<inspect_options>();
  app.add_option("path", o->path, "a .safetensors file, or a model directory (sharded or not)")
      ->required();
  app.add_flag("--json", o->json, "print JSON");
  return [o] { return run_inspect(*o); };
}

}  // namespace lris::tool
