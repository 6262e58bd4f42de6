#pragma once
/// @file
/// @brief How a batch of buffers is cut into pieces and laid out in staging slots: the one
/// place that says where a packed piece goes, for the plan maker (which groups pieces into
/// slots), validation (which checks a plan's groups fit) and the executor (which copies them).

#include <cstddef>
#include <span>
#include <vector>

#include <lris/concepts/copy_item.hpp>
#include <lris/error.hpp>

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

/// @brief One slot filled in order: each piece at the next multiple of pack_alignment after
/// the one before, and the slot's copy_item array (one per piece) at the next after the last.
struct slot_layout {
  std::size_t end = 0;    ///< where the last piece placed ends
  std::size_t count = 0;  ///< pieces placed

  /// @brief Where the item array goes.
  [[nodiscard]] std::size_t items_at() const noexcept { return align_up(end, pack_alignment); }
  /// @brief A piece of `bytes` still fits, with the item array grown by one.
  [[nodiscard]] bool fits(std::size_t bytes, std::size_t slot_bytes) const noexcept {
    const std::size_t items = align_up(items_at() + bytes, pack_alignment);
    return items <= slot_bytes && (count + 1) * sizeof(copy_item) <= slot_bytes - items;
  }
  /// @brief Places a piece of `bytes`; returns its offset in the slot.
  std::size_t place(std::size_t bytes) noexcept {
    const std::size_t at = items_at();
    end = at + bytes;
    ++count;
    return at;
  }
  /// @brief The piece size that batches are cut to: an empty slot holds one with its item.
  [[nodiscard]] static constexpr std::size_t max_piece(std::size_t slot_bytes) noexcept {
    return slot_bytes - align_up(sizeof(copy_item), pack_alignment) - pack_alignment;
  }
};

/// @brief Groups `pieces` (none larger than slot_layout::max_piece(slot_bytes)) in order into
/// as few slots as the order allows: appends to `ends` the end of each group (group g is
/// pieces [ends[g - 1], ends[g]), from 0 for the first).
/// @throws lris::invalid_argument for a piece that no slot holds.
inline void group_into_slots(std::span<const copy_item> pieces, std::size_t slot_bytes,
                             std::vector<std::size_t>& ends) {
  slot_layout slot;
  for (std::size_t k = 0; k < pieces.size(); ++k) {
    const std::size_t bytes = pieces[k].bytes;
    LRIS_EXPECTS(bytes <= slot_layout::max_piece(slot_bytes),
                 "group_into_slots: a piece of {} bytes does not fit a slot of {} bytes", bytes,
                 slot_bytes);
    if (slot.count > 0 && !slot.fits(bytes, slot_bytes)) {
      ends.push_back(k);
      slot = {};
    }
    slot.place(bytes);
  }
  if (slot.count > 0) ends.push_back(pieces.size());
}

}  // namespace lris::detail
