#include <lris/exec/file_io.hpp>

#include <algorithm>

#include <fmt/format.h>

#include <lris/exec/sizing.hpp>

namespace lris::exec {

file_io_choice file_io_for(const io::io_engine& engine, std::span<const file_range> ranges,
                           const io::io_overrides& call, bool reading, std::string_view what,
                           std::size_t chunk_bytes, unsigned workers, bool sized,
                           const disk_profile* disk) {
  file_io_choice c{.mode = call.direct.value_or(engine.options().direct),
                   .chunk_bytes = chunk_bytes, .workers = workers};
  bool cold = false;  // decided here that the data is not in the page cache
  if (c.mode == io::direct_mode::automatic && reading) {
    double resident = 0, weight = 0;
    for (const file_range& r : ranges) {
      if (r.bytes == 0) continue;
      resident += std::max(0.0, io::io_engine::resident_fraction(*r.file, r.offset, r.bytes)) *
                  static_cast<double>(r.bytes);
      weight += static_cast<double>(r.bytes);
    }
    auto choice = io::io_engine::choose_by_residency(weight > 0 ? resident / weight : 1.0, what);
    c.mode = choice.cold ? io::direct_mode::always : io::direct_mode::never;
    c.reason = std::move(choice.reason);
    cold = choice.cold;
  }
  c.cold = cold;
  const bool buffered_cold = cold && disk != nullptr && disk->method == cold_read_method::buffered;
  if (buffered_cold) c.mode = io::direct_mode::never;
  c.direct = c.mode != io::direct_mode::never &&
             std::all_of(ranges.begin(), ranges.end(),
                         [](const file_range& r) { return r.file->direct(); });
  if ((c.direct || buffered_cold) && !sized) {
    const auto d =
        direct_io_chunks(engine.queue_depth(call), engine.options().block_bytes, workers);
    c.chunk_bytes = d.chunk_bytes;
    c.workers = cold && disk != nullptr && disk->workers > 0 ? disk->workers : d.workers;
  }
  if (cold && disk != nullptr) {
    if (c.direct && disk->method == cold_read_method::both) {
      c.buffered_every = std::max(2u, disk->buffered_every);
    }
    const unsigned n = c.buffered_every;
    const std::string how =
        buffered_cold ? std::string("buffered")
        : n > 0       ? fmt::format("direct, every {}{} chunk buffered,", n,
                                    n == 2 ? "nd" : n == 3 ? "rd" : "th")
                      : std::string("direct");
    c.reason += disk->source == "defaults"
                    ? fmt::format("; {} reads on {} workers (defaults: no calibrated profile for "
                                  "the disk, `lris calibrate --disk DIR` makes one)", how, c.workers)
                    : fmt::format("; {} reads on {} workers (disk profile: {})", how, c.workers,
                                  disk->source);
  }
  return c;
}

}  // namespace lris::exec
