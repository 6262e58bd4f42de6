#include "load_pool.hpp"

#include <chrono>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <lris/lris.hpp>
#include <lris/system/format_bytes.hpp>
#if LRIS_HAS_CUDA()
#include <lris/cuda.hpp>
#endif
#if LRIS_HAS_HIP()
#include <lris/hip.hpp>
#endif

#include "measure.hpp"

namespace lris::tool {

namespace {

constexpr std::uint64_t alignment = 256;

// Copies every ready tensor of `hp` into one block of `Backend`'s memory (device memory, or
// host memory for the host backend) as one batch, and reports.
template <class Backend>
int run(const pool_load_cli& c, pool::host_pool& hp, Backend be, bool device) {
  const auto tensors = hp.tensors();
  if (tensors.empty()) {
    throw invalid_argument(fmt::format("load --pool {}: the pool holds no ready tensor (lris pool "
                                       "create {} FILE fills it)", c.pool, c.pool));
  }
  std::uint64_t total = 0, bytes = 0;
  std::vector<std::uint64_t> offsets;
  for (const auto& t : tensors) {
    offsets.push_back(total);
    total += (t.bytes + alignment - 1) / alignment * alignment;
    bytes += t.bytes;
  }
  // Pinned for DMA in this process before the clock starts, as a device starts before it.
  std::optional<pool::pool_registration<Backend>> reg;
  if (device) reg.emplace(hp, be);
  using space = std::conditional_t<std::is_same_v<Backend, host_backend>, host_space,
                                   device_space<Backend>>;
  device_allocator<Backend> alloc(be);
  auto* block = static_cast<std::byte*>(device ? alloc.allocate(total, alignment)
                                               : ::operator new(total, std::align_val_t{alignment}));
  const struct free_block {
    std::byte* p;
    std::uint64_t n;
    bool device;
    device_allocator<Backend>& a;
    ~free_block() {
      if (device) a.deallocate(p, n, alignment);
      else ::operator delete(p, std::align_val_t{alignment});
    }
  } release{block, total, device, alloc};
  std::vector<memory_span<space, std::byte>> dst;
  std::vector<memory_span<host_space, const std::byte>> src;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    if (tensors[i].bytes == 0) continue;
    if constexpr (std::is_same_v<space, host_space>) {
      dst.push_back(as_host(block + offsets[i], tensors[i].bytes));
    } else {
      dst.emplace_back(block + offsets[i], tensors[i].bytes, be.device());
    }
    src.push_back(as_host(tensors[i].data, tensors[i].bytes));
  }
  const auto start = std::chrono::steady_clock::now();
  const transfer_stats st = copy_batch(dst, src).wait();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::size_t verified = 0;
  if (c.verify) {  // every tensor's bytes where they landed against its published checksum
    std::vector<std::byte> host;
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      const std::byte* landed = block + offsets[i];
      if (device) {
        host.resize(tensors[i].bytes);
        if (!host.empty()) {
          copy(as_host(host.data(), host.size()),
               memory_span<space, const std::byte>(landed, tensors[i].bytes, be.device())).wait();
        }
        landed = host.data();
      }
      if (block_checksum(landed, tensors[i].bytes) != tensors[i].checksum) {
        throw integrity_error(fmt::format("load --pool {}: tensor \"{}\" landed with another "
                                          "checksum than the pool published", c.pool,
                                          tensors[i].name));
      }
      ++verified;
    }
  }
  const double gbps = static_cast<double>(bytes) / seconds / 1e9;
  const pool::pin_report pin = reg ? reg->report() : pool::pin_report{};
  if (c.json) {
    nlohmann::json out{{"pool", c.pool},         {"device", c.device},
                       {"tensors", tensors.size()}, {"bytes", bytes},
                       {"seconds", seconds},     {"gbps", gbps},
                       {"path", std::string(to_string(st.path))},
                       {"pinned", pin.pinned},   {"pin_segments", pin.segments},
                       {"pin_seconds", pin.seconds}, {"pin_why", pin.why},
                       {"verified", verified}};
    fmt::print("{}\n", out.dump(2));
    return 0;
  }
  fmt::print("loaded {} tensors ({}) from pool {} into {} in {:.3f} s: {:.2f} GB/s, no file "
             "read\n", tensors.size(), format_bytes(bytes), c.pool, c.device, seconds, gbps);
  if (device) {
    fmt::print("{}", pin.pinned ? fmt::format("the pool's memory pinned in this process first: {} in "
                                        "{} segment{}, {:.3f} s\n", format_bytes(pin.bytes),
                                        pin.segments, pin.segments == 1 ? "" : "s", pin.seconds)
                          : fmt::format("not pinned ({}): staged through pinned buffers\n",
                                        pin.why));
  }
  if (c.verify) fmt::print("verified: every byte of {} tensors against the pool's checksums\n", verified);
  return 0;
}

}  // namespace

int load_from_pool(const pool_load_cli& c) {
  pool::host_pool hp = pool::host_pool::attach(c.pool);
  const auto [kind, index] = parse_device(c.device);
  if (kind == "host") return run(c, hp, host_backend{}, false);
#if LRIS_HAS_CUDA()
  if (kind == "cuda") return run(c, hp, cuda_backend(index), true);
#endif
#if LRIS_HAS_HIP()
  if (kind == "hip") return run(c, hp, hip_backend(index), true);
#endif
  throw invalid_argument(fmt::format(
      "--device \"{}\": not a device of this build (host{}{})", c.device,
      LRIS_HAS_CUDA() ? ", cuda:N" : "", LRIS_HAS_HIP() ? ", hip:N" : ""));
}

}  // namespace lris::tool
