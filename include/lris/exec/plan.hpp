#pragma once
/// @file
/// @brief exec::plan: what a transfer will do, as data that can be built and inspected without
/// running it. A copy, a batch, a file read or write and a checkpoint load are each a plan;
/// one executor (exec/executor.hpp) runs every plan.
///
/// A plan is a list of chunks; a chunk is a list of steps run in order; a step moves `bytes`
/// from one place to another, optionally converting element types and hashing what it reads.
/// Where a plan has staging slots (slot_bytes > 0), each chunk has one pinned slot of the ring
/// to itself while it runs: typically a source -> the slot, then the slot -> one or more sinks
/// (several devices for a fan-out). Which resources a step takes tokens from follows from its
/// places: file io takes the file's disk, CPU copies take host memory, DMA takes the link.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <lris/concepts/backend_policy.hpp>
#include <lris/concepts/copy_item.hpp>
#include <lris/element/dtype.hpp>
#include <lris/exec/stats.hpp>
#include <lris/io/file.hpp>
#include <lris/io/options.hpp>
#include <lris/priority.hpp>

namespace lris::exec {

/// @brief Where bytes are or go.
enum class place_kind : std::uint8_t {
  host,    ///< host memory the CPU reads and writes (pageable)
  pinned,  ///< host memory that a device can reach by DMA (pinned or registered)
  device,  ///< memory of one device of the executor's backend
  file,    ///< a byte range of one of the plan's files
  slot,    ///< the chunk's pinned staging slot
};

/// @brief "host", "pinned", "device", "file" or "slot".
[[nodiscard]] constexpr std::string_view to_string(place_kind k) noexcept {
  switch (k) {
    case place_kind::host: return "host";
    case place_kind::pinned: return "pinned";
    case place_kind::device: return "device";
    case place_kind::file: return "file";
    case place_kind::slot: return "slot";
  }
  return "?";
}

/// @brief One end of a step: 16 bytes, since a batch of many buffers has two per buffer.
struct place {
  union {
    std::byte* ptr = nullptr;  ///< host, pinned, device: the address
    std::uint64_t offset;      ///< file: the offset in the file; slot: the offset in the slot
  };
  union {
    std::int32_t device = 0;   ///< device: which device of the backend
    std::uint32_t file;        ///< file: which of plan::files
  };
  place_kind kind = place_kind::host;

  [[nodiscard]] static place host(const void* p) noexcept {
    return memory(place_kind::host, p, 0);
  }
  [[nodiscard]] static place pinned(const void* p) noexcept {
    return memory(place_kind::pinned, p, 0);
  }
  [[nodiscard]] static place on_device(const void* p, int device) noexcept {
    return memory(place_kind::device, p, device);
  }
  [[nodiscard]] static place in_file(std::uint32_t file, std::uint64_t offset) noexcept {
    place at;
    at.offset = offset;
    at.file = file;
    at.kind = place_kind::file;
    return at;
  }
  [[nodiscard]] static place in_slot(std::size_t offset) noexcept {
    place at;
    at.offset = offset;
    at.kind = place_kind::slot;
    return at;
  }
  /// @brief This place (its kind and device) at address `p`.
  [[nodiscard]] place at_address(const void* p) const noexcept {
    place at = *this;
    at.ptr = static_cast<std::byte*>(const_cast<void*>(p));
    return at;
  }
  /// @brief It is memory at an address (host, pinned or device), not a file or the slot.
  [[nodiscard]] bool memory() const noexcept {
    return kind == place_kind::host || kind == place_kind::pinned || kind == place_kind::device;
  }
  /// @brief The CPU can read or write it (host memory or the slot).
  [[nodiscard]] bool cpu() const noexcept {
    return kind == place_kind::host || kind == place_kind::pinned || kind == place_kind::slot;
  }

 private:
  static place memory(place_kind k, const void* p, int device) noexcept {
    place at;
    at.ptr = static_cast<std::byte*>(const_cast<void*>(p));
    at.device = device;
    at.kind = k;
    return at;
  }
};
static_assert(sizeof(place) == 16);

/// @brief Moves `bytes` from `from` to `to`. With `convert`, `bytes` counts source elements of
/// `from_type`, written as `to_type` (to.ptr is where the first converted element goes). With
/// `check`, each default_checksum_block of the bytes read is hashed (block_hash) into
/// check[0], check[1], ... before they move (a read from a file: where they land); the array is
/// the plan maker's and must outlive the run.
struct step {
  place from;
  place to;
  std::size_t bytes = 0;
  bool convert = false;
  dtype from_type = dtype::U8;
  dtype to_type = dtype::U8;
  std::uint64_t* check = nullptr;

  /// @brief The kind of copy it is, by its places: DMA to or from a device, or a CPU copy.
  [[nodiscard]] copy_kind kind() const noexcept {
    const bool src_dev = from.kind == place_kind::device, dst_dev = to.kind == place_kind::device;
    if (src_dev && dst_dev) return copy_kind::device_to_device;
    if (dst_dev) return copy_kind::host_to_device;
    if (src_dev) return copy_kind::device_to_host;
    return copy_kind::host_to_host;
  }
  /// @brief It is DMA between host memory (or the slot) and a device, or between devices.
  [[nodiscard]] bool dma() const noexcept {
    return from.kind == place_kind::device || to.kind == place_kind::device;
  }
  /// @brief It is file io.
  [[nodiscard]] bool io() const noexcept {
    return from.kind == place_kind::file || to.kind == place_kind::file;
  }
  /// @brief It ends the bytes' way (its destination is not the slot): its bytes count as done.
  [[nodiscard]] bool delivers() const noexcept { return to.kind != place_kind::slot; }
};

/// @brief Many copies between host and device memory kept as 24 bytes a copy rather than a
/// step of 56: a batch of many buffers. `from` and `to` give the kind and device of every
/// copy's ends (their addresses are unused); each copy is at most a MiB or so.
///
/// Without `ends`, it is one operation on the device (a kernel that reads and writes both
/// ends), between pinned and device memory. With `ends`, it goes through the plan's staging
/// slots, between host memory (pageable or pinned) and a device: chunk c is copies
/// [ends[c - 1], ends[c]) (from 0 for the first), laid out in its slot one after another
/// (exec/detail/packing.hpp, slot_layout) with their item array behind them; the host copies
/// them into the slot (or out of it), and one DMA between the slot and device scratch plus one
/// batched operation on the device moves them all.
struct batch {
  place from;
  place to;
  std::vector<copy_item> items;
  std::vector<std::size_t> ends;

  [[nodiscard]] bool empty() const noexcept { return items.empty(); }
  /// @brief It goes through staging slots, in chunks (ends is not empty).
  [[nodiscard]] bool packed() const noexcept { return !ends.empty(); }
  /// @brief The copies of chunk `c` of a packed batch.
  [[nodiscard]] std::span<const copy_item> chunk(std::size_t c) const noexcept {
    const std::size_t b = c == 0 ? 0 : ends[c - 1];
    return {items.data() + b, ends[c] - b};
  }
};

/// @brief A transfer as data. Build it with add(), cut() and the fields; run it with an
/// executor (or a pipeline's run()).
struct plan {
  /// How the transfer is reported (transfer_stats::path).
  transfer_path shape = transfer_path::direct;
  std::vector<step> steps;
  /// Chunk c is steps [ends[c - 1], ends[c]) (from 0 for the first).
  std::vector<std::size_t> ends;
  /// Bytes of the whole transfer, as progress counts them (the steps that deliver).
  std::uint64_t bytes = 0;

  /// Pinned staging slot of each chunk; 0: the plan uses no slot.
  std::size_t slot_bytes = 0;
  /// Threads that run chunks at once (at most one per chunk and per slot).
  unsigned workers = 1;
  /// Device streams that chunks go on, round robin.
  unsigned streams = 1;
  /// Slots the ring lends the plan (chunk c uses slot c mod ring_depth).
  unsigned ring_depth = 0;
  /// Run every chunk on the calling thread (a host copy too small to hand to another).
  bool here = false;
  /// A plan of a batch has no steps: its copies are here (add_copy()). It is one chunk, or
  /// (packed) one per slot it fills.
  batch copies;

  /// The files that places of kind `file` name, open until the run is over.
  std::vector<const io::file*> files;
  /// io settings for the plan's file steps; `direct` decided by the plan maker.
  io::io_overrides io;
  /// Why `io.direct` was chosen, for the stats (empty when it was not chosen here).
  std::string io_reason;
  /// Every n-th chunk's file reads go buffered though `io.direct` says otherwise (0: none):
  /// direct and buffered reads at once on disjoint chunks (exec::file_io_choice).
  unsigned buffered_every = 0;

  /// Device-to-device steps (and a batch of one operation) may read the memory of other
  /// devices than the executor's: their peers, whose access the plan maker has enabled
  /// (peer_backend::enable_peer_access). What they write is on the executor's device.
  bool peer_sources = false;

  /// Priority of its chunks at the broker, and the bytes it may keep in flight on each
  /// resource (0: no cap of its own).
  priority prio = priority::normal;
  std::uint64_t budget_bytes = 0;
  progress_fn on_progress;

  /// @brief Adds a step to the current (last) chunk; its bytes count when it delivers.
  void add(const step& s) {
    steps.push_back(s);
    if (s.delivers()) bytes += s.bytes;
  }
  /// @brief Ends the current chunk (steps added later form the next one). A chunk with no
  /// step is not made.
  void cut() {
    if (steps.size() > (ends.empty() ? 0 : ends.back())) ends.push_back(steps.size());
  }
  /// @brief Adds a copy to the plan's batch (copies).
  void add_copy(const copy_item& c) {
    copies.items.push_back(c);
    bytes += c.bytes;
  }
  [[nodiscard]] std::size_t chunks() const noexcept {
    if (copies.empty()) return ends.size();
    return copies.packed() ? copies.ends.size() : 1;
  }
  [[nodiscard]] std::span<const step> chunk(std::size_t c) const noexcept {
    const std::size_t b = c == 0 ? 0 : ends[c - 1];
    return {steps.data() + b, ends[c] - b};
  }
  /// @brief Some step moves bytes to or from a device.
  [[nodiscard]] bool uses_device() const noexcept;
  /// @brief The direction of its DMA: host_to_device when any step writes a device, else
  /// device_to_host when any reads one, else host_to_host.
  [[nodiscard]] copy_kind direction() const noexcept;
};

/// @brief The vectors of plans that have run, kept for the next (their capacity; contents are
/// dropped), so that a batch of many buffers writes no fresh pages: see
/// transfer_request::spare and executor::recycle.
struct plan_storage {
  std::vector<step> steps;
  std::vector<copy_item> items;
};

/// @brief Checks that `p` can run: every chunk cut, slots used only with slot_bytes and within
/// them, files named exist, a batch not beside steps, as one operation between pinned and
/// device memory, packed between host memory and a device in groups that fit the slot,
/// conversions only between a CPU-readable source or the slot and
/// a device or host sink, hashes only of CPU-readable bytes, no step of zero bytes; and, with
/// `device` >= 0, device memory only on that device (what one executor drives), but for the
/// sources of device-to-device copies of a plan with peer_sources.
/// @throws lris::invalid_argument naming the chunk, the step and what is wrong;
/// lris::unsupported for a step on another device than `device`.
void validate(const plan& p, int device = -1);

/// @brief One line per chunk and step, e.g. "chunk 0: file 0 [4096, +1048576) -> slot
/// [0, +1048576); slot [0, +1048576) -> device 0", for tests and logs.
[[nodiscard]] std::string describe(const plan& p);

}  // namespace lris::exec
