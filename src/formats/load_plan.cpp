#include <lris/formats/detail/load_plan.hpp>

#include <algorithm>
#include <cstdint>
#include <numeric>

#include <lris/error.hpp>

namespace lris::safetensors::detail {

namespace {

// The indices of `items` in file order: by shard, then by offset in it.
template <class Item>
std::vector<std::size_t> file_order(std::span<const Item> items) {
  std::vector<std::size_t> order(items.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    const auto& x = items[a];
    const auto& y = items[b];
    return x.shard != y.shard ? x.shard < y.shard : x.file_offset < y.file_offset;
  });
  return order;
}

// Contiguous file bytes [begin, end) of one shard and the targets that tile them.
struct run {
  std::size_t shard = 0;
  std::uint64_t begin = 0, end = 0;
  std::vector<std::size_t> targets;
  bool own = false;  // a converted or verified tensor: chunks cut from its first byte
};

// The chunk's moves are host memory laid out as the file is (each where the one before ends,
// together the whole read), unconverted, and aligned for O_DIRECT where the read's first
// aligned offset lands: straight into the destination, no slot involved. Elsewhere O_DIRECT
// would need bounce buffers, and the slot is the better one.
bool straight(const load_chunk& c, std::span<const load_target> targets, std::uint64_t bytes,
              std::size_t align, std::size_t memory_align) {
  const std::byte* next = nullptr;
  std::uint64_t covered = 0;
  for (const load_move& m : c.moves) {
    const load_target& tg = targets[m.target];
    const std::byte* at = tg.dst + m.target_offset;
    if (tg.device || tg.converts() || (next != nullptr && at != next)) return false;
    next = at + m.bytes;
    covered += m.bytes;
  }
  const std::uint64_t from = c.reads.front().file_offset;
  const auto first = reinterpret_cast<std::uintptr_t>(targets[c.moves.front().target].dst +
                                                      c.moves.front().target_offset);
  return covered == bytes && (first + (align - from % align) % align) % memory_align == 0;
}

void chunk_run(const run& r, std::span<const load_target> targets, std::size_t chunk,
               std::size_t align, std::size_t memory_align, std::vector<load_chunk>& out) {
  // Chunk boundaries: multiples of `chunk` from the first byte (own runs) or from the run's
  // start rounded down to `align` (shared runs: every chunk but the first starts aligned).
  const std::uint64_t base = r.own ? r.begin : r.begin / align * align;
  std::size_t t = 0;  // first target that may overlap the chunk
  for (std::uint64_t at = base; at < r.end; at += chunk) {
    const std::uint64_t from = std::max(r.begin, at), to = std::min<std::uint64_t>(r.end, at + chunk);
    load_chunk c;
    c.shard = r.shard;
    const std::size_t slot_off = static_cast<std::size_t>(from % align);
    c.reads.push_back({from, to - from, slot_off});
    while (t < r.targets.size()) {
      const auto& tg = targets[r.targets[t]];
      const std::uint64_t tb = tg.file_offset, te = tb + tg.bytes();
      if (te <= from) {
        ++t;
        continue;
      }
      if (tb >= to) break;
      const std::uint64_t ob = std::max(tb, from), oe = std::min(te, to);
      c.moves.push_back({r.targets[t], static_cast<std::size_t>(slot_off + (ob - from)), oe - ob, ob - tb});
      if (te > to) break;  // continues in the next chunk
      ++t;
    }
    c.straight_to_host = straight(c, targets, to - from, align, memory_align);
    out.push_back(std::move(c));
  }
}

// A strided target: whole rows per chunk, packed in the slot in destination order; rows
// close together read as one range into the slot's upper half and gathered.
void chunk_rows(std::size_t index, const load_target& tg, std::size_t chunk, std::size_t align,
                std::vector<load_chunk>& out) {
  LRIS_EXPECTS(tg.row_bytes <= chunk, "load: a row of {} bytes does not fit a chunk of {} bytes",
               tg.row_bytes, chunk);
  const std::uint64_t gap = tg.row_stride - tg.row_bytes;
  const std::uint64_t half = chunk / 2 / align * align;  // the gathered rows below, the read above
  const std::uint64_t room = chunk - half;  // the read starts at most align - 1 past `half`
  if (gap <= std::max<std::uint64_t>(3 * tg.row_bytes, 64 << 10) &&
      tg.row_bytes <= std::min(half, room)) {
    const std::uint64_t per_chunk =
        std::min(half / tg.row_bytes, (room - tg.row_bytes) / tg.row_stride + 1);
    for (std::uint64_t row = 0; row < tg.rows; row += per_chunk) {
      const std::uint64_t n = std::min(per_chunk, tg.rows - row);
      const std::uint64_t from = tg.file_offset + row * tg.row_stride;
      load_chunk c;
      c.shard = tg.shard;
      const auto at = static_cast<std::size_t>(half + from % align);
      c.reads.push_back({from, (n - 1) * tg.row_stride + tg.row_bytes, at});
      for (std::uint64_t k = 0; k < n; ++k) {
        c.gathers.push_back({static_cast<std::size_t>(at + k * tg.row_stride),
                             static_cast<std::size_t>(k * tg.row_bytes), tg.row_bytes});
      }
      c.moves.push_back({index, 0, n * tg.row_bytes, row * tg.row_bytes});
      out.push_back(std::move(c));
    }
    return;
  }
  const std::uint64_t per_chunk = chunk / tg.row_bytes;
  for (std::uint64_t row = 0; row < tg.rows; row += per_chunk) {
    const std::uint64_t n = std::min(per_chunk, tg.rows - row);
    load_chunk c;
    c.shard = tg.shard;
    for (std::uint64_t k = 0; k < n; ++k) {
      c.reads.push_back({tg.file_offset + (row + k) * tg.row_stride, tg.row_bytes,
                         static_cast<std::size_t>(k * tg.row_bytes)});
    }
    c.moves.push_back({index, 0, n * tg.row_bytes, row * tg.row_bytes});
    out.push_back(std::move(c));
  }
}

}  // namespace

std::vector<load_chunk> plan_chunks(std::span<const load_target> targets, std::size_t chunk_bytes,
                                    std::size_t align, std::size_t block,
                                    std::size_t memory_align) {
  LRIS_EXPECTS(align > 0 && chunk_bytes >= align && chunk_bytes % align == 0 &&
                   chunk_bytes % block == 0 && chunk_bytes % 8 == 0,
               "load: chunks of {} bytes are not a multiple of the alignment ({}) and the hash "
               "block ({})",
               chunk_bytes, align, block);
  const std::vector<std::size_t> order = file_order(targets);
  std::vector<load_chunk> out;
  std::vector<run> runs;
  for (std::size_t i : order) {
    const auto& tg = targets[i];
    if (tg.bytes() == 0) continue;
    if (tg.strided()) {
      chunk_rows(i, tg, chunk_bytes, align, out);
      continue;
    }
    const bool own = tg.converts() || tg.verify;
    const std::uint64_t end = tg.file_offset + tg.bytes();
    if (!own && !runs.empty() && !runs.back().own && runs.back().shard == tg.shard &&
        runs.back().end == tg.file_offset) {
      runs.back().end = end;
      runs.back().targets.push_back(i);
    } else {
      runs.push_back({tg.shard, tg.file_offset, end, {i}, own});
    }
  }
  for (const auto& r : runs) chunk_run(r, targets, chunk_bytes, align, memory_align, out);
  return out;
}

std::vector<std::span<std::byte>> destinations_in_file_order(
    std::span<const load_target> targets, std::span<const loaded_tensor> tensors) {
  LRIS_EXPECTS(tensors.size() == targets.size(), "load: {} tensors made of {} targets",
               tensors.size(), targets.size());
  std::vector<std::span<std::byte>> out;
  for (std::size_t i : file_order(targets)) {
    if (tensors[i].bytes > 0) out.emplace_back(tensors[i].data, static_cast<std::size_t>(tensors[i].bytes));
  }
  return out;
}

block_layout host_layout(std::span<const layout_item> items, std::size_t modulus,
                         std::size_t alignment) {
  LRIS_EXPECTS(modulus > 0 && alignment > 0 && modulus % alignment == 0,
               "load: a block aligned to {} bytes cannot hold tensors aligned to {}", modulus,
               alignment);
  const std::vector<std::size_t> order = file_order(items);
  block_layout out;
  out.offsets.resize(items.size());
  std::uint64_t at = 0;
  const layout_item* prev = nullptr;  // the tensor placed last, when it mirrors
  for (std::size_t i : order) {
    const layout_item& it = items[i];
    const bool continues = it.mirrors && prev != nullptr && prev->shard == it.shard &&
                           prev->file_offset + prev->bytes == it.file_offset;
    if (!continues) {
      if (it.mirrors) {
        // The next offset at or after `at` that agrees with the file modulo `modulus`.
        at += (it.file_offset % modulus + modulus - at % modulus) % modulus;
      } else {
        at = (at + alignment - 1) / alignment * alignment;
      }
    }
    out.offsets[i] = at;
    at += it.bytes;
    prev = it.mirrors ? &it : nullptr;
  }
  out.bytes = at;
  return out;
}

}  // namespace lris::safetensors::detail
