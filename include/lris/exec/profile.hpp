#pragma once
/// @file
/// @brief Transfer profiles: the thresholds auto_select uses, measured by `lris calibrate`.

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>

namespace lris {

/// @brief Where auto_select switches paths, and the parameters of the chunked paths, for one
/// backend on one machine. The defaults are safe everywhere; a calibrated profile is better.
struct transfer_profile {
  /// Host <-> host copies of at least this many bytes are split over worker threads.
  std::size_t parallel_min_bytes = std::size_t{1} << 20;
  /// Pageable <-> device copies of at least this many bytes go through the pinned ring.
  std::size_t staged_min_bytes = std::size_t{1} << 20;
  /// Batches of DMA-able buffers (pinned, device) whose mean buffer is smaller than this are
  /// one batched kernel; larger ones go one DMA per pair.
  std::size_t batch_max_item_bytes = std::size_t{1} << 20;
  std::size_t chunk_bytes = std::size_t{4} << 20;
  unsigned workers = 0;     ///< 0: min(hardware threads, 16)
  unsigned streams = 2;
  unsigned ring_depth = 0;  ///< 0: twice the workers
  /// Measured ceilings in GB/s (0: not measured), the bandwidth brokers budget with: a
  /// multithreaded memcpy (host entry); DMA from and to pinned memory (device entries).
  double host_copy_gbps = 0;
  double h2d_gbps = 0;
  double d2h_gbps = 0;
  /// Where these values came from: "defaults" or the profile file's path.
  std::string source = "defaults";

  friend bool operator==(const transfer_profile&, const transfer_profile&) = default;
};

/// @brief How reads of data not in the page cache go on one storage device.
enum class cold_read_method : unsigned char {
  direct,    ///< O_DIRECT: the io engine's queues, `workers` chunks in flight
  buffered,  ///< through the page cache, the kernel reading ahead, on `workers` threads
  both,      ///< both at once on disjoint chunks: every `buffered_every`-th chunk buffered
};

/// @brief "direct", "buffered" or "both".
[[nodiscard]] std::string_view to_string(cold_read_method m) noexcept;

/// @brief The cold-read method of one storage device ("disk <major>:<minor>", as the
/// bandwidth broker names it), measured by `lris calibrate --disk DIR`. The defaults (O_DIRECT,
/// workers sized from the io engine's queue depth) are safe on NVMe and virtual disks alike.
struct disk_profile {
  cold_read_method method = cold_read_method::direct;
  /// Chunks read at once (0: sized from the io engine's queue depth, as without a profile).
  unsigned workers = 0;
  /// For cold_read_method::both: every n-th chunk is read buffered (at least 2).
  unsigned buffered_every = 2;
  /// What the calibration measured with this method, GB/s (0: not measured).
  double read_gbps = 0;
  /// Where these values came from: "defaults" or the profile file's path.
  std::string source = "defaults";

  friend bool operator==(const disk_profile&, const disk_profile&) = default;
};

/// @brief The profile file: $LRIS_PROFILE, else $XDG_CONFIG_HOME/lris/profile.json, else
/// $HOME/.config/lris/profile.json.
[[nodiscard]] std::filesystem::path default_profile_path();

/// @brief The profile of `backend` (e.g. "host", "cuda:0") in the file at `path`; the defaults
/// when the file does not exist or has no entry for it. Throws lris::format_error naming the
/// file and key when the file is malformed.
[[nodiscard]] transfer_profile load_profile(const std::filesystem::path& path,
                                            std::string_view backend);

/// @brief Writes `profile` as the entry for `backend` into the file at `path`, keeping the
/// other backends' entries; creates directories as needed. Throws lris::io_error on failure.
void save_profile(const std::filesystem::path& path, std::string_view backend,
                  const transfer_profile& profile);

/// @brief The profile of the storage device `disk` ("disk 259:1") in the file at `path`; the
/// defaults when the file or the entry does not exist. Throws lris::format_error naming the
/// file and key when the entry is malformed.
[[nodiscard]] disk_profile load_disk_profile(const std::filesystem::path& path,
                                             std::string_view disk);

/// @brief Writes `profile` as the entry for `disk` into the file at `path`, keeping the other
/// entries. Throws lris::io_error on failure.
void save_disk_profile(const std::filesystem::path& path, std::string_view disk,
                       const disk_profile& profile);

}  // namespace lris
