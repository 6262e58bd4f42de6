// streaming: a model bigger than the device budget, layer by layer. The layers of a checkpoint
// are read once into pinned host memory; each pass acquires them in order, the next one
// coming in while the current one is used, through a budget of three layers. Then one pass is
// captured as graphs and replayed (on a GPU, a CUDA graph of the copies and kernels). With a
// GPU backend (lris::cuda_backend) the same calls stream into GPU memory.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <lris/lris.hpp>

int main() {
  namespace st = lris::safetensors;
  const auto path = std::filesystem::temp_directory_path() / "lris_streaming.safetensors";
  const int layers = 8;
  std::vector<std::vector<std::byte>> weights;
  std::vector<st::tensor_view> tensors;
  for (int i = 0; i < layers; ++i) {
    weights.emplace_back(256 * 256 * 2, static_cast<std::byte>(i + 1));  // BF16, every byte i + 1
  }
  for (int i = 0; i < layers; ++i) {
    tensors.push_back({"model.layers." + std::to_string(i) + ".mlp.up_proj.weight",
                       lris::dtype::BF16, {256, 256}, weights[i]});
  }
  st::save_file(path, tensors);
  const st::checkpoint checkpoint(path);
  lris::pipeline<lris::auto_select, lris::host_backend> pipeline;  // or lris::cuda_backend
  using Backend = lris::host_backend;
  Backend device;
  auto stream = device.make_stream();
  const std::uint64_t budget = 3 * weights[0].size();
  bool intact = true;

  // [streaming]
  lris::cache::residency_manager<Backend> rm(device, {.budget_bytes = budget});
  auto units = lris::cache::add_checkpoint_units(rm, pipeline, checkpoint,
      [](std::string_view t) -> std::string {  // "model.layers.7.mlp.up_proj.weight" -> "model.layers.7"
        return t.starts_with("model.layers.") ? std::string(t.substr(0, t.find('.', 13))) : "";
      });
  rm.declare_order(units, /*cyclic=*/true, /*lookahead_bytes=*/rm.unit_bytes(units[0]));
  for (int pass = 0; pass < 3; ++pass) {
    for (const auto unit : units) {
      auto lease = rm.acquire(unit, stream);  // the stream waits for the unit's copy
      const std::byte* w = lease.tensor(0);   // device memory: kernels on `stream` read it
      device.synchronize(stream);             // (here the CPU reads it, after the stream)
      intact = intact && w[0] == static_cast<std::byte>(unit + 1);
      rm.release(std::move(lease), stream);   // the last use: recorded on the stream
    }
  }
  const lris::cache::residency_stats s = rm.stats();
  std::printf("kept %llu bytes (the oracle: %llu), streamed %llu (%llu of them ahead of use)\n",
              static_cast<unsigned long long>(s.hit_bytes),
              static_cast<unsigned long long>(rm.belady_hit_bytes()),
              static_cast<unsigned long long>(s.miss_bytes + s.prefetched_bytes),
              static_cast<unsigned long long>(s.prefetched_bytes));
  // [streaming]

  // [capture]
  auto* seen = static_cast<std::byte*>(device.allocate_pinned(units.size()));
  auto graphs = rm.capture(stream, [&] {  // one pass, captured: nothing of it runs yet
    for (const auto unit : units) {
      auto lease = rm.acquire(unit, stream);
      device.copy_async(seen + unit, lease.tensor(0), 1, lris::copy_kind::device_to_host,
                        stream);              // stands for the kernels that read the weights
      rm.release(std::move(lease), stream);
    }
  });
  for (int pass = 0; pass < 3; ++pass) rm.replay(graphs, stream);  // copies and kernels
  // [capture]
  device.synchronize(stream);
  for (const auto unit : units) intact = intact && seen[unit] == static_cast<std::byte>(unit + 1);
  device.deallocate_pinned(seen, units.size());
  std::filesystem::remove(path);
  return intact && s.high_water_bytes <= budget ? 0 : 1;
}
