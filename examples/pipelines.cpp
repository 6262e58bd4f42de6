// Composing policies into a pipeline, with options, progress and cancellation.
#include <cstdio>
#include <vector>

#include <lris/lris.hpp>

int main() {
  std::vector<std::byte> src(std::size_t{64} << 20, std::byte{7});
  lris::buffer<lris::device_allocator<lris::host_backend>> dev(src.size());

  // [pipeline]
  // Always stage through pinned memory: 4 MiB chunks, 8 copy workers, 2 DMA streams,
  // at most 64 MiB of pinned staging memory shared by all transfers of this pipeline.
  lris::pipeline<lris::staged, lris::host_backend> pipe(
      lris::staged{.chunk_bytes = 4 << 20, .workers = 8, .streams = 2}, lris::host_backend{0},
      lris::pinned_allocator<lris::host_backend>{}, lris::pipeline_config{64 << 20});

  lris::transfer_options options;
  options.on_progress = [](std::uint64_t done, std::uint64_t total) {
    std::printf("\r%3.0f%%", 100.0 * done / total);
    return true;  // false cancels the transfer
  };
  lris::transfer t = pipe.copy(dev.span(), lris::as_host(src), options);
  while (!t.poll()) {
    // ... other work; t.progress() is the fraction done
  }
  std::printf("\n%s path, %u ring slots\n", lris::to_string(t.wait().path).data(),
              t.wait().ring_slots);
  // [pipeline]

  {
  // [priorities]
  lris::pipeline<lris::direct, lris::host_backend> p;
  lris::buffer<lris::pinned_allocator<lris::host_backend>> pinned(16 << 20), pinned2(64 << 20);
  lris::buffer<lris::device_allocator<lris::host_backend>> d1(16 << 20), d2(64 << 20);
  auto dev = d1.span();
  auto dev2 = d2.span();
  auto next = p.copy(dev, pinned.span(), {.priority = lris::priority::critical});
  auto bulk = p.copy(dev2, pinned2.span(), {.priority = lris::priority::background,
                                   .budget_bytes = 32 << 20});  // its own cap in flight
  std::printf("critical: %llu pieces waited for tokens\n",
              static_cast<unsigned long long>(next.wait().token_waits));
  (void)bulk.wait();
  // [priorities]
  }

  {
  // [plan]
  // Plans are data: chunks of steps between places. This one gathers the first and the last
  // MiB of `src` into one pinned slot, then moves both to the device in one DMA, hashing each
  // MiB on its way (a policy answers with plans like it, made by lris::plans).
  using lris::exec::place;
  lris::exec::plan plan;
  plan.slot_bytes = 2 << 20;
  std::uint64_t hashes[2];
  plan.add({place::host(src.data()), place::in_slot(0), 1 << 20});
  plan.add({place::host(src.data() + src.size() - (1 << 20)), place::in_slot(1 << 20), 1 << 20});
  lris::exec::step up{place::in_slot(0), place::on_device(dev.data(), 0), 2 << 20};
  up.check = hashes;  // block_hash of each MiB
  plan.add(up);
  plan.cut();
  std::printf("%s", lris::exec::describe(plan).c_str());
  const lris::transfer_stats done = pipe.run(std::move(plan)).wait();
  // [plan]
  std::printf("%llu bytes, hashes %016llx %016llx\n", static_cast<unsigned long long>(done.bytes),
              static_cast<unsigned long long>(hashes[0]), static_cast<unsigned long long>(hashes[1]));
  }

  // [cancel]
  lris::transfer_options stop_halfway;
  stop_halfway.on_progress = [](std::uint64_t done, std::uint64_t total) {
    return done * 2 < total;
  };
  try {
    pipe.copy(dev.span(), lris::as_host(src), stop_halfway).wait();
  } catch (const lris::cancelled& e) {
    std::printf("%s\n", e.what());  // "transfer cancelled after N of M bytes"
  }
  // [cancel]
  return 0;
}
