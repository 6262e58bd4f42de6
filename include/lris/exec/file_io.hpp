#pragma once
/// @file
/// @brief How a plan reads or writes files: direct or buffered, decided once for every chunk,
/// and the chunk size and workers that follow from it. The one place that decides it, for
/// file transfers and checkpoint loads alike.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include <lris/exec/profile.hpp>
#include <lris/io/engine.hpp>
#include <lris/io/file.hpp>
#include <lris/io/options.hpp>

namespace lris::exec {

/// @brief A byte range of a file.
struct file_range {
  const io::file* file = nullptr;
  std::uint64_t offset = 0;
  std::uint64_t bytes = 0;
};

/// @brief What file_io_for() decided.
struct file_io_choice {
  /// The io mode; for reads never automatic (decided here, once for every chunk).
  io::direct_mode mode = io::direct_mode::never;
  std::string reason = {};      ///< why, when it was decided by the page cache (else empty)
  std::size_t chunk_bytes = 0;  ///< chunk size to use
  unsigned workers = 0;         ///< workers to use
  bool direct = false;          ///< chunks may go O_DIRECT (every file allows it, mode not never)
  /// The data was found mostly not in the page cache (an automatic mode decided here): the
  /// reads are paced by the disk.
  bool cold = false;
  /// Every n-th chunk's reads go buffered though `mode` is direct (0: none): a disk that reads
  /// fastest both ways at once (disk_profile, cold_read_method::both).
  unsigned buffered_every = 0;
};

/// @brief Decides how to do the io of `ranges`: the call's mode, else the engine's (writes
/// leave an automatic mode to the engine, which writes the aligned middle direct); an
/// automatic mode for reads becomes direct when the ranges are mostly not in the page cache
/// (io_engine::choose_by_residency, over all their bytes; `what` names them in the reason)
/// and buffered otherwise: asking the page cache once per chunk would map and unmap each
/// range, which costs every thread of the process a TLB flush. Direct io is paced by the disk,
/// so it gets exec::direct_io_chunks unless `sized` (the caller gave sizes); buffered io is
/// a copy by the kernel and keeps `chunk_bytes` and `workers`.
///
/// Cold data decided so goes as `disk` says (the storage device's calibrated profile, or the
/// call's; null: O_DIRECT): O_DIRECT with its workers, buffered reads on its workers (the
/// kernel reading ahead), or both at once on alternate chunks.
[[nodiscard]] file_io_choice file_io_for(const io::io_engine& engine,
                                         std::span<const file_range> ranges,
                                         const io::io_overrides& call, bool reading,
                                         std::string_view what, std::size_t chunk_bytes,
                                         unsigned workers, bool sized,
                                         const disk_profile* disk = nullptr);

}  // namespace lris::exec
