// safetensors: write a checkpoint, list it, load a selection of it into device memory
// (converted to F32 on the way), and hand a tensor to another framework through DLPack. With
// a GPU backend (lris::cuda_backend) the same calls load into GPU memory.
#include <cstdio>
#include <filesystem>
#include <vector>

#include <lris/lris.hpp>

int main() {
  namespace st = lris::safetensors;
  const auto path = std::filesystem::temp_directory_path() / "lris_example.safetensors";
  std::vector<std::byte> q(4096 * 2), norm(64 * 2);  // two BF16 tensors
  const std::vector<st::tensor_view> tensors = {
      {"layers.0.q.weight", lris::dtype::BF16, {64, 64}, q},
      {"layers.0.norm.weight", lris::dtype::BF16, {64}, norm}};
  st::save_file(path, tensors, {{"format", "pt"}});

  // [safetensors]
  st::checkpoint ck(path);  // a file, or a model directory with its shards
  for (const auto& t : ck.tensors()) {
    std::printf("%s %s, %llu bytes\n", t.info->name.c_str(), lris::to_string(t.info->type).data(),
                static_cast<unsigned long long>(t.info->bytes()));
  }
  lris::pipeline<lris::auto_select, lris::host_backend> p;  // or lris::cuda_backend
  st::load_options o;
  o.select = "\\.q\\.";               // a regular expression on the names
  o.convert_to = lris::dtype::F32;   // converted as it loads
  st::loaded_checkpoint loaded = st::load(p, ck, o);
  std::printf("%.3f s, %s\n", loaded.report.seconds, loaded.report.io.c_str());

  // The tensor leases its memory; so does its DLPack export, until the consumer frees it.
  DLManagedTensor* exported = st::to_dlpack(loaded.tensors.at(0));
  exported->deleter(exported);
  // [safetensors]

  std::filesystem::remove(path);
  return loaded.tensors.size() == 1 && loaded.tensors[0].type == lris::dtype::F32 ? 0 : 1;
}
