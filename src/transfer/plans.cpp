#include <lris/transfer/plans.hpp>

#include <algorithm>
#include <vector>

#include <lris/exec/detail/packing.hpp>
#include <lris/exec/sizing.hpp>

namespace lris::plans {

namespace {

// `p` moved on by `off` bytes.
exec::place at(exec::place p, std::uint64_t off) {
  if (p.kind == exec::place_kind::file || p.kind == exec::place_kind::slot) {
    p.offset += off;
  } else {
    p.ptr += off;
  }
  return p;
}

exec::plan shaped(transfer_path shape, const transfer_sizes& s,
                  exec::plan_storage* spare = nullptr) {
  exec::plan p;
  if (spare != nullptr) {  // its capacity, so that a large batch touches no new pages
    p.steps = std::move(spare->steps);
    p.steps.clear();
    p.copies.items = std::move(spare->items);
    p.copies.items.clear();
  }
  p.shape = shape;
  p.workers = std::max(1u, s.workers);
  p.streams = std::max(1u, s.streams);
  p.ring_depth = std::max(1u, s.ring_depth);
  return p;
}

// The request's pairs: those of a batch, or the one of a copy (kept in `one`).
std::span<const copy_item> pairs_of(const transfer_request& r, copy_item& one) {
  if (!r.pairs.empty()) return r.pairs;
  if (r.bytes == 0) return {};
  one = {r.src.ptr, r.dst.ptr, r.bytes};
  return {&one, 1};
}

// Calls each(source, destination, bytes) for the request's pairs cut into pieces of at most
// `piece` bytes, in order.
template <class Each>
void for_each_piece(const transfer_request& r, std::size_t piece, Each&& each) {
  copy_item one;
  for (const copy_item& it : pairs_of(r, one)) {
    const auto* from = static_cast<const std::byte*>(it.src);
    auto* to = static_cast<std::byte*>(it.dst);
    for (std::size_t off = 0; off < it.bytes; off += piece) {
      each(r.src.at_address(from + off), r.dst.at_address(to + off),
           std::min(piece, it.bytes - off));
    }
  }
}

bool host_only(const transfer_request& r) {
  return r.src.kind != exec::place_kind::device && r.dst.kind != exec::place_kind::device;
}

}  // namespace

exec::plan direct(const transfer_request& r, transfer_sizes sizes) {
  copy_item one;
  exec::plan p = shaped(transfer_path::direct, complete(r, sizes), r.spare);
  for (const copy_item& it : pairs_of(r, one)) {
    if (it.bytes > 0) p.add({r.src.at_address(it.src), r.dst.at_address(it.dst), it.bytes});
  }
  p.cut();
  p.here = host_only(r);
  return p;
}

exec::plan split(const transfer_request& r, transfer_sizes sizes) {
  const transfer_sizes s = complete(r, sizes);
  if (!host_only(r)) return direct(r, s);
  const std::size_t chunk = exec::host_split_chunk(r.bytes, s.workers, s.chunk_bytes);
  if (r.bytes <= chunk) return direct(r, s);  // nothing to split
  exec::plan p = shaped(transfer_path::parallel, s, r.spare);
  for_each_piece(r, chunk, [&](exec::place from, exec::place to, std::size_t n) {
    p.add({from, to, n});
    p.cut();
  });
  return p;
}

exec::plan staged(const transfer_request& r, transfer_sizes sizes) {
  const transfer_sizes s = complete(r, sizes);
  if (!r.needs_staging) return split(r, s);
  exec::plan p = shaped(transfer_path::staged, s, r.spare);
  if (r.bytes == 0) return p;
  const std::size_t chunk = std::min(
      exec::staging_chunk(r.bytes, s.workers, s.chunk_bytes, r.max_slot_bytes), r.bytes);
  p.slot_bytes = chunk;
  for_each_piece(r, chunk, [&](exec::place from, exec::place to, std::size_t n) {
    p.add({from, exec::place::in_slot(0), n});
    p.add({exec::place::in_slot(0), to, n});
    p.cut();
  });
  return p;
}

exec::plan batched(const transfer_request& r, transfer_sizes sizes) {
  copy_item one;
  const transfer_sizes s = complete(r, sizes);
  if (r.needs_staging) return packed(r, s);
  const auto items = pairs_of(r, one);
  if (host_only(r)) {
    // A parallel loop: consecutive pairs in chunks of about a quarter of a worker's share.
    exec::plan p = shaped(transfer_path::batched, s, r.spare);
    p.workers = std::max(1u, r.threads);
    const std::uint64_t group = std::max<std::uint64_t>(r.bytes / (4 * std::uint64_t{p.workers}), 1);
    p.steps.reserve(items.size());
    std::uint64_t in_chunk = 0;
    for (const copy_item& it : items) {
      if (it.bytes == 0) continue;
      p.add({r.src.at_address(it.src), r.dst.at_address(it.dst), it.bytes});
      in_chunk += it.bytes;
      if (in_chunk >= group) {
        p.cut();
        in_chunk = 0;
      }
    }
    p.cut();
    return p;
  }
  if (!r.one_operation_batches) return direct(r, s);
  constexpr std::size_t piece = std::size_t{1} << 20;
  exec::plan p = shaped(transfer_path::batched, s, r.spare);
  p.copies.from = r.src.at_address(nullptr);
  p.copies.to = r.dst.at_address(nullptr);
  p.copies.items.reserve(items.size() + r.bytes / piece);
  for (const copy_item& it : items) {
    lris::detail::append_pieces(p.copies.items, it, piece);
    p.bytes += it.bytes;
  }
  return p;
}

exec::plan packed(const transfer_request& r, transfer_sizes sizes) {
  copy_item one;
  const transfer_sizes s = complete(r, sizes);
  if (!r.needs_staging) return batched(r, s);
  if (!r.one_operation_batches) return staged(r, s);
  exec::plan p = shaped(transfer_path::packed, s, r.spare);
  if (r.bytes == 0) return p;
  const std::size_t slot = exec::staging_chunk(r.bytes, s.workers, s.chunk_bytes, r.max_slot_bytes);
  exec::batch& b = p.copies;
  b.from = r.src.at_address(nullptr);
  b.to = r.dst.at_address(nullptr);
  const auto pairs = pairs_of(r, one);
  b.items.reserve(pairs.size() + r.bytes / slot);
  for (const copy_item& it : pairs) {
    lris::detail::append_pieces(b.items, it, lris::detail::slot_layout::max_piece(slot));
    p.bytes += it.bytes;
  }
  lris::detail::group_into_slots(b.items, slot, b.ends);
  p.slot_bytes = slot;
  return p;
}

exec::plan file_host(const io::file& f, std::uint64_t offset, exec::place mem, std::size_t bytes,
                     bool reading, std::size_t piece, const io::io_overrides& call) {
  exec::plan p;
  p.files.push_back(&f);
  p.io = call;
  for (std::size_t off = 0; off < bytes; off += piece) {
    const std::size_t n = std::min(piece, bytes - off);
    const auto file = exec::place::in_file(0, offset + off);
    p.add(reading ? exec::step{file, at(mem, off), n} : exec::step{at(mem, off), file, n});
    p.cut();
  }
  return p;
}

exec::plan file_device(const transfer_sizes& d, const io::file& f, std::uint64_t offset,
                       exec::place mem, std::size_t bytes, bool reading,
                       const exec::file_io_choice& io, const io::io_overrides& call,
                       std::size_t ring_max) {
  exec::plan p = shaped(transfer_path::staged, d);
  p.files.push_back(&f);
  p.io = call;
  p.io.direct = io.mode;
  p.io_reason = io.reason;
  p.buffered_every = reading ? io.buffered_every : 0;
  if (bytes == 0) return p;
  const std::size_t align = std::max<std::size_t>(4096, f.direct_alignment());
  const std::size_t chunk = exec::whole_units(io.chunk_bytes, align, ring_max);
  const std::uint64_t end = offset + bytes;
  const std::uint64_t base = offset / chunk * chunk;
  p.slot_bytes = chunk;
  for (std::uint64_t begin = base; begin < end; begin += chunk) {
    const std::uint64_t from = std::max(offset, begin);
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(end, begin + chunk) - from);
    const auto file = exec::place::in_file(0, from);
    const auto in_slot = exec::place::in_slot(static_cast<std::size_t>(from - begin));
    const auto there = at(mem, from - offset);
    if (reading) {
      p.add({file, in_slot, n});
      p.add({in_slot, there, n});
    } else {
      p.add({there, in_slot, n});
      p.add({in_slot, file, n});
    }
    p.cut();
  }
  p.workers = std::max(1u, io.workers);
  p.ring_depth = static_cast<unsigned>(std::min<std::size_t>(
      {std::max(1u, d.ring_depth), std::size_t{2} * p.workers, p.chunks()}));
  return p;
}

}  // namespace lris::plans
