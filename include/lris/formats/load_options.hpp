#pragma once
/// @file
/// @brief What a safetensors load does: which tensors, cut how, converted to what, checked
/// how; and what it reports.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <lris/formats/checkpoint.hpp>
#include <lris/element/dtype.hpp>
#include <lris/sched/throttle.hpp>
#include <lris/transfer/plan.hpp>

namespace lris::safetensors {

struct loaded_tensor;

/// @brief Part `rank` of `ranks` equal parts along dimension `dim`: the tensor-parallel slice
/// of one rank. Only its bytes are read.
struct tensor_slice {
  unsigned dim = 0;
  unsigned rank = 0;
  unsigned ranks = 1;
};

/// @brief A tensor as it will be in memory: sliced and converted.
struct tensor_request {
  const tensor_ref* source = nullptr;  ///< the tensor in the checkpoint
  std::string_view name;
  dtype type = dtype::U8;              ///< in memory (after conversion)
  std::vector<std::uint64_t> shape;    ///< in memory (after slicing)
  std::uint64_t bytes = 0;             ///< in memory
  std::optional<tensor_slice> slice;
};

struct load_options {
  /// Tensors by exact name. With `select` empty too: every tensor.
  std::vector<std::string> names;
  /// Tensors whose name this ECMAScript regular expression finds (std::regex_search), e.g.
  /// `layers\.(0|1)\.`; taken together with `names`.
  std::string select;
  /// The slice of each tensor to load (std::nullopt: all of it). Slicing along a dimension the
  /// parts do not divide evenly is an error naming the tensor.
  std::function<std::optional<tensor_slice>(const tensor_info&)> slice;
  /// Floating-point tensors that can be converted to this dtype (lris::can_convert) are, on
  /// the device (or by the CPU for host memory) as they load; the others load as they are.
  std::optional<dtype> convert_to;
  /// Checks each listed tensor's file bytes against its LRIS block checksum (XXH64 for tensors
  /// up to 1 MiB; lris/element/checksum.hpp) as it loads; a mismatch is an error naming the
  /// tensor, the file and both values. Whole tensors only.
  std::map<std::string, std::uint64_t, std::less<>> expected_checksums;
  /// Checks whole files against their SHA-256 (64 hex digits), keyed by file name (the
  /// shard's file name, without directory). Costs a second, sequential read of each file.
  std::map<std::string, std::string, std::less<>> expected_sha256;
  /// Called with (bytes loaded, bytes to load); returning false cancels the load: chunks not
  /// yet started are skipped and, once nothing is in flight, the load throws lris::cancelled
  /// (a cancel that comes after the last chunk has started lets the load finish).
  progress_fn on_progress;
  /// Called once every tensor has its place in memory and before anything is read, on the
  /// calling thread, with the tensors as the load will return them (load()'s with their
  /// lease). Their bytes are not there yet: nothing may read them, or hand them to anyone who
  /// could, before the load returns. A consumer makes its views of the memory here, while the
  /// reads run (lris.torch.load does). An exception from it ends the load before any read and
  /// propagates; the memory is freed.
  std::function<void(const std::vector<loaded_tensor>&)> on_placed;
  /// Threads that fault in the destinations' pages ahead of reads from the disk into host
  /// memory (page_populator): std::nullopt, one per 8 usable CPUs (1 to 4); 0, none (the reads
  /// fault the pages in themselves); N, N (at most the usable CPUs).
  std::optional<unsigned> populate_threads;
  /// Chunks, workers and io settings (transfer_options::io: direct or buffered, depth).
  transfer_options transfer;
};

/// @brief What a load did.
struct load_report {
  std::size_t tensors = 0;
  std::uint64_t file_bytes = 0;    ///< read from the files
  std::uint64_t memory_bytes = 0;  ///< written to memory (after conversion)
  double seconds = 0;
  std::string path;  ///< "file -> pinned slots -> device (DMA)", ...
  std::string io;    ///< what the io engine did and why
  std::uint64_t io_direct_bytes = 0;
  std::uint64_t io_buffered_bytes = 0;
  std::size_t chunks = 0;
  std::size_t chunk_bytes = 0;
  unsigned workers = 0;
  /// Pinned staging memory the load held: at most the pipeline's max_staging_bytes.
  std::size_t staging_bytes = 0;
  /// Threads started to fault in the destinations' pages ahead of the reads (a load into host
  /// memory, LRIS's block or the caller's, read from the disk: cold, or O_DIRECT as asked;
  /// page_populator), and the bytes of whole pages they had done when the load ended (0 where
  /// the kernel refused: before Linux 5.14).
  unsigned populate_threads = 0;
  std::uint64_t populated_bytes = 0;
  std::size_t converted = 0;  ///< tensors converted
  std::size_t verified = 0;   ///< tensors whose checksum matched
  std::size_t files_verified = 0;  ///< files whose SHA-256 matched
  /// Pieces that waited for tokens at the pipeline's broker (transfer.priority applies).
  std::uint64_t token_waits = 0;
  sched::throttle_counts throttle;  ///< the throttle's decisions for the load's pieces

  [[nodiscard]] double gbps() const noexcept { return seconds > 0 ? file_bytes / seconds / 1e9 : 0; }
};

}  // namespace lris::safetensors
