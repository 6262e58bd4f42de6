#pragma once
/// @file
/// @brief How a batch of buffers is cut into pieces and packed into staging slots.

#include <cstddef>
#include <vector>

#include <lris/error.hpp>
#include <lris/concepts/copy_item.hpp>

namespace lris::detail {

inline constexpr std::size_t pack_alignment = 16;  // the batched kernel's vector width

[[nodiscard]] constexpr std::size_t align_up(std::size_t n, std::size_t a) noexcept {
  return (n + a - 1) / a * a;
}

/// @brief Appends `item` to `out` cut into pieces of at most `max_piece` bytes, in order.
inline void append_pieces(std::vector<copy_item>& out, const copy_item& item,
                          std::size_t max_piece) {
  const auto* s = static_cast<const std::byte*>(item.src);
  auto* d = static_cast<std::byte*>(item.dst);
  for (std::size_t off = 0; off < item.bytes; off += max_piece) {
    out.push_back({s + off, d + off, std::min(max_piece, item.bytes - off)});
  }
}

/// @brief A batch laid out in staging slots of `slot_bytes`. Group g holds pieces
/// [begin[g], begin[g + 1]); in its slot, piece k's bytes start at offset[k] (16-byte aligned)
/// and the group's copy_item array follows its last piece at items_offset[g].
struct slot_packing {
  std::vector<copy_item> pieces;
  std::vector<std::size_t> offset;
  std::vector<std::size_t> begin;
  std::vector<std::size_t> items_offset;

  [[nodiscard]] std::size_t groups() const noexcept { return begin.empty() ? 0 : begin.size() - 1; }
  /// @brief The largest piece one slot holds together with its one-entry item array.
  [[nodiscard]] static constexpr std::size_t max_piece(std::size_t slot_bytes) noexcept {
    return slot_bytes - align_up(sizeof(copy_item), pack_alignment) - pack_alignment;
  }
};

/// @brief Packs `pieces` (none larger than slot_packing::max_piece(slot_bytes)) in order into
/// as few slots as the order allows.
inline slot_packing pack_into_slots(std::vector<copy_item> pieces, std::size_t slot_bytes) {
  slot_packing p;
  p.pieces = std::move(pieces);
  p.offset.resize(p.pieces.size());
  std::size_t end = 0, n = 0;
  auto close_group = [&] {
    p.items_offset.push_back(align_up(end, pack_alignment));
    end = 0;
    n = 0;
  };
  for (std::size_t k = 0; k < p.pieces.size(); ++k) {
    const std::size_t bytes = p.pieces[k].bytes;
    LRIS_EXPECTS(bytes <= slot_packing::max_piece(slot_bytes),
                 "pack_into_slots: a piece of {} bytes does not fit a slot of {} bytes", bytes,
                 slot_bytes);
    auto fits = [&] {
      const std::size_t items = align_up(align_up(end, pack_alignment) + bytes, pack_alignment);
      return items + (n + 1) * sizeof(copy_item) <= slot_bytes;
    };
    if (n > 0 && !fits()) close_group();
    if (n == 0) p.begin.push_back(k);
    p.offset[k] = align_up(end, pack_alignment);
    end = p.offset[k] + bytes;
    ++n;
  }
  if (n > 0) close_group();
  p.begin.push_back(p.pieces.size());
  return p;
}

}  // namespace lris::detail
