#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <lris/error.hpp>
#include <lris/io/engine.hpp>
#include <lris/system/host_info.hpp>

#include "commands.hpp"
#include "gpu_info.hpp"

namespace lris::tool {

namespace {

// The queue the io engine chooses here with default options, and why.
struct io_choice {
  std::string backend;
  std::string reason;
};

io_choice probe_io_engine() {
  try {
    io::io_engine engine;
    return {engine.backend(), engine.fallback_reason().empty()
                                  ? "the kernel allows io_uring; O_DIRECT for data not in the "
                                    "page cache, buffered reads for data that is"
                                  : engine.fallback_reason()};
  } catch (const std::exception& e) {
    return {"none", e.what()};
  }
}

}  // namespace

command add_info(CLI::App& app) {
  auto json = std::make_shared<bool>(false);
  app.add_flag("--json", *json, "machine-readable output");
  return [json] {
    const host_info info = probe_host();
    const io_choice io = probe_io_engine();
    if (*json) {
      auto j = nlohmann::ordered_json::parse(gpu_json(to_json(info)));
      j["io_engine"] = {{"backend", io.backend}, {"reason", io.reason}};
      fmt::print("{}\n", j.dump(2));
    } else {
      fmt::print("{}", to_text(info));
      fmt::print("{:<14}{}\n{:<14}{}\n", "io engine", io.backend, "  why", io.reason);
      fmt::print("{}", gpu_text());
    }
    return 0;
  };
}

}  // namespace lris::tool
