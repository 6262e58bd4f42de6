// lris: see what LRIS does on this machine, measure it, tune it.
#include <cstdio>
#include <exception>
#include <map>
#include <system_error>

#include <fmt/format.h>

#include <lris/error.hpp>
#include <lris/version.hpp>

#include "commands.hpp"

int main(int argc, char** argv) {
  CLI::App app{"lris " LRIS_VERSION_STRING
               " - moves data between NVMe files, host memory and GPUs at hardware speed"};
  app.set_version_flag("--version", "lris " LRIS_VERSION_STRING);
  app.require_subcommand(1);
  std::map<CLI::App*, lris::tool::command> commands;
  auto add = [&](const char* name, const char* help, auto adder) {
    CLI::App* sub = app.add_subcommand(name, help);
    commands[sub] = adder(*sub);
  };
  add("info", "show CPU, memory, NUMA, huge pages, io_uring and GPUs", lris::tool::add_info);
  add("bench", "measure every transfer path against the ceiling measured in the same run",
      lris::tool::add_bench);
  add("calibrate", "measure this machine's thresholds and save them for auto_select",
      lris::tool::add_calibrate);
  add("demo", "show in under a minute what LRIS does on this machine", lris::tool::add_demo);
  add("inspect", "list the tensors and metadata of a safetensors file or model directory",
      lris::tool::add_inspect);
  add("load", "load a safetensors checkpoint into host or GPU memory, timed",
      lris::tool::add_load);
  add("stream", "stream a model bigger than the device budget through the weight cache, timed "
      "against its bound", lris::tool::add_stream);
  add("pool", "host pools: one copy of a checkpoint in shared memory for every process "
      "(create, list, drop)", lris::tool::add_pool);
  add("top", "live: every shared bandwidth broker resource (GB/s, in flight, waiters per process "
      "and priority) and every host pool on the machine", lris::tool::add_top);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (auto& [sub, run] : commands) {
      if (sub->parsed()) return run();
    }
  } catch (const lris::error& e) {
    fmt::print(stderr, "lris: {}\n", e.what());
  } catch (const std::system_error& e) {
    fmt::print(stderr, "lris: {}\n", e.what());
  } catch (const std::exception& e) {
    fmt::print(stderr, "lris: unexpected error: {}\n", e.what());
  }
  return 1;
}
