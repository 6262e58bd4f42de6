#pragma once
// The `lris` subcommands. Each registers its options on `app` and returns the function that
// runs it (exit code).

#include <functional>

#include <CLI/CLI.hpp>

namespace lris::tool {

using command = std::function<int()>;

command add_info(CLI::App& app);
command add_bench(CLI::App& app);
command add_calibrate(CLI::App& app);
command add_demo(CLI::App& app);
command add_inspect(CLI::App& app);
command add_load(CLI::App& app);
command add_stream(CLI::App& app);
command add_pool(CLI::App& app);
command add_top(CLI::App& app);

}  // namespace lris::tool
