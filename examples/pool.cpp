// pool: one copy of a checkpoint in host memory for every process on the machine. The first
// process to ask fills it; later ones (here a child process) find every tensor without reading
// the file, and the memory goes when the last of them leaves.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <lris/lris.hpp>

int main() {
  namespace st = lris::safetensors;
  const auto path = std::filesystem::temp_directory_path() / "lris_pool_example.safetensors";
  std::vector<std::byte> w(1024 * 1024 * 2, std::byte{1});
  const std::vector<st::tensor_view> tensors = {
      {"layers.0.mlp.weight", lris::dtype::BF16, {1024, 1024}, w}};
  st::save_file(path, tensors);
  const std::string name = "example-" + std::to_string(::getpid());

  // [pool]
  // Made by the first process that opens it, attached by the others.
  lris::pool::host_pool pool = lris::pool::host_pool::open(name, 64 << 20);
  const st::checkpoint ck(path);
  // Loads what no process has loaded yet (or left half-done when it died), then publishes
  // each tensor with its checksum: readers never see a partial tensor.
  const auto report = lris::pool::populate(pool, lris::default_pipeline<lris::host_backend>(), ck);
  std::printf("%zu tensors loaded, %zu there already\n", report.loaded, report.present);
  if (auto t = pool.find("layers.0.mlp.weight")) {
    std::printf("%llu bytes in shared memory, checksum %016llx\n",
                static_cast<unsigned long long>(t->bytes),
                static_cast<unsigned long long>(t->checksum));
  }
  // [pool]

  const pid_t child = ::fork();  // another process: it finds the tensor in the pool
  if (child == 0) {
    lris::pool::host_pool mine = lris::pool::host_pool::attach(name);
    const auto t = mine.find("layers.0.mlp.weight");
    ::_exit(t && t->data[0] == std::byte{1} ? 0 : 1);
  }
  int status = 1;
  ::waitpid(child, &status, 0);
  std::filesystem::remove(path);
  return report.loaded == 1 && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
