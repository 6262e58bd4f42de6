// fan_out: one read of a checkpoint delivered to several devices, each tensor-parallel rank
// getting only its slice of the split tensors. Here on two of the host backend's devices; with
// GPUs, the same code over pipelines of lris::cuda_backend(0), lris::cuda_backend(1).
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <span>
#include <vector>

#include <lris/lris.hpp>

int main() {
  namespace st = lris::safetensors;
  const auto path = std::filesystem::temp_directory_path() / "lris_fan_out_example.safetensors";
  std::vector<std::byte> q(256 * 128 * 2), o(128 * 256 * 2);
  for (std::size_t i = 0; i < q.size(); ++i) q[i] = static_cast<std::byte>(i % 251);
  for (std::size_t i = 0; i < o.size(); ++i) o[i] = static_cast<std::byte>(i % 241);
  const std::vector<st::tensor_view> tensors = {
      {"model.layers.0.self_attn.q_proj.weight", lris::dtype::BF16, {256, 128}, q},
      {"model.layers.0.self_attn.o_proj.weight", lris::dtype::BF16, {128, 256}, o}};
  st::save_file(path, tensors);
  const st::checkpoint ck(path);

  // [fan_out]
  using gpu = lris::host_backend;  // lris::cuda_backend on GPUs
  std::vector<lris::pipeline<lris::auto_select, gpu>> devices;
  for (int d = 0; d < 2; ++d) devices.emplace_back(lris::auto_select{}, gpu(d));
  lris::fanout::fan_out_options options;
  options.tp = 2;                                 // device d is rank d % 2
  options.plan = lris::fanout::sharding::llama(); // q_proj split by rows, o_proj by columns
  // or: options.plan.add("layers.*.self_attn.o_proj", "rowwise");
  const auto loaded = lris::fanout::load(std::span(devices), ck, options);
  std::printf("%llu bytes read from storage once\n",
              static_cast<unsigned long long>(loaded.report.storage_bytes));
  for (const auto& dev : loaded.report.devices) {
    std::printf("%s: rank %u, %llu bytes, %s\n", dev.device.c_str(), dev.rank,
                static_cast<unsigned long long>(dev.bytes), dev.path.c_str());
  }
  // Rank 1's q_proj: the second half of its rows, [128, 128], on device 1.
  const st::loaded_tensor* q1 = loaded.devices[1].find("model.layers.0.self_attn.q_proj.weight");
  // [fan_out]

  // Its o_proj: the second half of each row.
  const st::loaded_tensor* o1 = loaded.devices[1].find("model.layers.0.self_attn.o_proj.weight");
  bool right = q1->bytes == q.size() / 2 &&
               std::memcmp(q1->data, q.data() + q.size() / 2, q.size() / 2) == 0;
  for (std::size_t r = 0; r < 128; ++r) {
    right = right && std::memcmp(o1->data + r * 256, o.data() + r * 512 + 256, 256) == 0;
  }
  std::filesystem::remove(path);
  return right && loaded.report.storage_bytes == q.size() + o.size() ? 0 : 1;
}
