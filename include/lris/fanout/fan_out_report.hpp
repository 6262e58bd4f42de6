#pragma once
/// @file
/// @brief What a fan-out (fanout::load) did, per device and in all, and each device's
/// tensors.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <lris/fanout/route.hpp>
#include <lris/formats/loaded_tensor.hpp>

namespace lris::fanout {

/// @brief What one device received.
struct device_report {
  std::string device;  ///< "cuda:1", "host:0"
  unsigned rank = 0;   ///< its tensor-parallel rank
  std::uint64_t bytes = 0;
  std::size_t tensors = 0;
  std::size_t split = 0;  ///< tensors of which it holds a slice
  std::string path;       ///< how the bytes went, e.g. "file -> pinned slots -> cuda:1 (DMA)"
  std::size_t verified = 0;  ///< tensors compared with the file (verify)
  std::uint64_t digest = 0;  ///< its tensors' checksums combined, in order (verify; else 0)
};

/// @brief What a fan-out did.
struct fan_out_report {
  std::uint64_t storage_bytes = 0;  ///< read from the files (each chunk once)
  std::uint64_t file_bytes = 0;     ///< the selected tensors' bytes in the files
  std::size_t tensors = 0;
  std::size_t chunks = 0;
  std::size_t chunk_bytes = 0;
  std::size_t staging_bytes = 0;  ///< pinned slots held: at most 2 per device
  std::size_t scratch_bytes = 0;  ///< device memory per device for the chunks (peer, nccl)
  fan_path path = fan_path::dma;  ///< the route taken
  std::string route_reason;       ///< why (links, NCCL), in words
  std::string nccl;               ///< the nccl route's library, "NCCL 2.28.9 (libnccl.so.2)"
  double nccl_init_seconds = 0;   ///< its communicators' set-up, overlapped with the first reads
  unsigned tp = 1;
  double seconds = 0;  ///< the load's, without verify
  std::string io;  ///< what the io engine did and why
  std::vector<device_report> devices;

  [[nodiscard]] double gbps() const noexcept {
    return seconds > 0 ? static_cast<double>(storage_bytes) / seconds / 1e9 : 0;
  }
};

/// @brief Each device's tensors (devices[d]: the d-th pipeline's), and the report.
struct fan_out_result {
  std::vector<safetensors::loaded_checkpoint> devices;
  fan_out_report report;
};

}  // namespace lris::fanout
