// lris pool create|list|drop: host pools (one copy of a checkpoint in shared memory for every
// process on the machine) managed by hand.
#include <algorithm>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <lris/formats/checkpoint.hpp>
#include <lris/pool/host_pool.hpp>
#include <lris/pool/populate.hpp>
#include <lris/system/format_bytes.hpp>
#include <lris/transfer/copy.hpp>

#include "commands.hpp"
#include "measure.hpp"

namespace lris::tool {

namespace {

struct pool_cli {
  std::string name;
  std::string path;
  std::string bytes;
  int numa = -1;
  bool json = false;
};

nlohmann::json to_json(const pool::pool_info& i) {
  return {{"name", i.name},         {"data_bytes", i.data_bytes}, {"used_bytes", i.used_bytes},
          {"tensors", i.tensors},   {"filling", i.filling},       {"users", i.users},
          {"numa_node", i.numa_node}, {"numa_bound", i.numa_bound}, {"numa_note", i.numa_note},
          {"persistent", i.persistent}, {"generation", i.generation}};
}

std::string numa_text(const pool::pool_info& i) {
  if (i.numa_node < 0) return "any node";
  return i.numa_bound ? fmt::format("node {}", i.numa_node)
                      : fmt::format("node {} asked, not bound: {}", i.numa_node, i.numa_note);
}

// The pool of a checkpoint made (persistent: it outlives this process) and filled.
int run_create(const pool_cli& c) {
  const safetensors::checkpoint ck(c.path);
  // Every tensor 4 KiB aligned in the pool: the data, and a page of slack per tensor.
  const std::uint64_t bytes =
      c.bytes.empty() ? ck.data_bytes() + 4096 * ck.tensors().size() : parse_size(c.bytes);
  pool::pool_options o;
  o.numa_node = c.numa;
  o.persistent = true;
  o.max_tensors = static_cast<std::uint32_t>(std::max<std::size_t>(ck.tensors().size(), 1));
  pool::host_pool p = pool::host_pool::open(c.name, bytes, o);
  const auto r = pool::populate(p, default_pipeline<host_backend>(), ck);
  const auto info = p.info();
  if (c.json) {
    nlohmann::json out = to_json(info);
    out["loaded"] = r.loaded;
    out["present"] = r.present;
    out["busy"] = r.busy;
    out["taken_over"] = r.taken_over;
    out["loaded_bytes"] = r.bytes;
    out["seconds"] = r.seconds;
    fmt::print("{}\n", out.dump(2));
    return 0;
  }
  fmt::print("pool {}: {} tensors ready, {} of {} used, {}\n", c.name, info.tensors,
             format_bytes(info.used_bytes), format_bytes(info.data_bytes), numa_text(info));
  fmt::print("loaded {} tensors ({}) from {} in {:.3f} s{}; {} were there already{}\n", r.loaded,
             format_bytes(r.bytes), ck.path().string(), r.seconds,
             r.bytes > 0 && r.seconds > 0 ? fmt::format(" ({:.2f} GB/s)", static_cast<double>(r.bytes) / r.seconds / 1e9) : "",
             r.present, r.busy ? fmt::format(", {} being filled by another process", r.busy) : "");
  if (r.taken_over) fmt::print("finished {} tensors a process that died had begun\n", r.taken_over);
  if (info.persistent) {
    fmt::print("it stays until `lris pool drop {}`\n", c.name);
  } else {
    fmt::print("it was made by another process, not persistent: it goes with its last user\n");
  }
  return 0;
}

int run_list(const pool_cli& c) {
  const auto pools = pool::host_pool::list();
  if (c.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& i : pools) out.push_back(to_json(i));
    fmt::print("{}\n", out.dump(2));
    return 0;
  }
  if (pools.empty()) {
    fmt::print("no host pools on this machine\n");
    return 0;
  }
  fmt::print("{:<24} {:>10} {:>10} {:>8} {:>8} {:>6}  {}\n", "name", "size", "used", "tensors",
             "filling", "users", "memory");
  for (const auto& i : pools) {
    fmt::print("{:<24} {:>10} {:>10} {:>8} {:>8} {:>6}  {}{}\n", i.name,
               format_bytes(i.data_bytes), format_bytes(i.used_bytes), i.tensors, i.filling,
               i.users, numa_text(i), i.persistent ? ", persistent" : "");
  }
  return 0;
}

int run_drop(const pool_cli& c) {
  if (!pool::host_pool::drop(c.name)) {
    fmt::print(stderr, "lris: pool drop: no pool called \"{}\" (lris pool list)\n", c.name);
    return 1;
  }
  fmt::print("pool {} dropped: its memory goes when the last process using it leaves\n", c.name);
  return 0;
}

}  // namespace

command add_pool(CLI::App& app) {
  auto o = std::make_shared<pool_cli>();
  app.require_subcommand(1);
  CLI::App* create = app.add_subcommand("create", "make a pool and load a checkpoint into it "
                                                  "(it stays until dropped)");
  create->add_option("name", o->name, "the pool's name (letters, digits, '-', '_', '.')")->required();
  create->add_option("path", o->path, "a .safetensors file, or a model directory")->required();
  create->add_option("--bytes", o->bytes, "room for tensors (default: the checkpoint's)");
  create->add_option("--numa", o->numa, "the NUMA node its memory lives on (a CXL expander's "
                                        "node too)");
  create->add_flag("--json", o->json, "print JSON");
  CLI::App* list = app.add_subcommand("list", "the pools on this machine");
  list->add_flag("--json", o->json, "print JSON");
  CLI::App* drop = app.add_subcommand("drop", "remove a pool (processes using it keep it)");
  drop->add_option("name", o->name, "the pool's name")->required();
  return [o, create, list, drop] {
    if (create->parsed()) return run_create(*o);
    if (list->parsed()) return run_list(*o);
    if (drop->parsed()) return run_drop(*o);
    return 1;
  };
}

}  // namespace lris::tool
