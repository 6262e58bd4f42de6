// group_into_slots and slot_layout: the layout of a batch in staging slots, checked for every random batch.
#include <catch2/catch.hpp>

#include "support/what_contains.hpp"

#include <random>
#include <vector>

#include <lris/exec/detail/packing.hpp>

using lris::copy_item;
using lris::detail::pack_alignment;
using lris::detail::slot_layout;

namespace {
// Fake addresses: only the layout is checked, nothing is copied.
copy_item item(std::size_t src, std::size_t dst, std::size_t bytes) {
  return {reinterpret_cast<const void*>(src), reinterpret_cast<void*>(dst), bytes};
}
}  // namespace

TEST_CASE("append_pieces cuts an item in order and covers it exactly", "[transfer][packing]") {
  std::vector<copy_item> out;
  lris::detail::append_pieces(out, item(1000, 50000, 2500), 1000);
  REQUIRE(out.size() == 3);
  CHECK(out[0].src == reinterpret_cast<const void*>(1000));
  CHECK(out[2].src == reinterpret_cast<const void*>(3000));
  CHECK(out[2].dst == reinterpret_cast<void*>(52000));
  CHECK(out[2].bytes == 500);
  lris::detail::append_pieces(out, item(1, 2, 0), 1000);  // empty items add nothing
  CHECK(out.size() == 3);
}

TEST_CASE("group_into_slots: pieces and item arrays fit their slot, in order, apart",
          "[transfer][packing]") {
  std::mt19937_64 rng(11);
  for (int round = 0; round < 200; ++round) {
    const std::size_t slot = std::size_t{4096} << (rng() % 6);
    std::vector<copy_item> pieces;
    const std::size_t n = 1 + rng() % 300;
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t bytes = 1 + rng() % slot_layout::max_piece(slot);
      pieces.push_back(item(i * slot, i * slot, rng() % 4 == 0 ? bytes : bytes % 300 + 1));
    }
    std::vector<std::size_t> ends;
    lris::detail::group_into_slots(pieces, slot, ends);
    REQUIRE(!ends.empty());
    REQUIRE(ends.back() == n);
    for (std::size_t g = 0, begin = 0; g < ends.size(); begin = ends[g++]) {
      REQUIRE(begin < ends[g]);  // no empty group
      // Where slot_layout puts each piece: 16-byte aligned, after the one before.
      slot_layout layout;
      std::size_t end = 0;
      for (std::size_t k = begin; k < ends[g]; ++k) {
        const std::size_t at = layout.place(pieces[k].bytes);
        CHECK(at % pack_alignment == 0);
        CHECK(at >= end);
        CHECK(at < end + pack_alignment);
        end = at + pieces[k].bytes;
      }
      CHECK(layout.items_at() % pack_alignment == 0);
      CHECK(layout.items_at() >= end);
      CHECK(layout.items_at() + (ends[g] - begin) * sizeof(copy_item) <= slot);
      // A group closes only when the next piece would not have fitted.
      if (g + 1 < ends.size()) {
        const std::size_t next = pieces[ends[g]].bytes;
        const std::size_t items = lris::detail::align_up(layout.items_at() + next, pack_alignment);
        CHECK(items + (ends[g] - begin + 1) * sizeof(copy_item) > slot);
        CHECK_FALSE(layout.fits(next, slot));
      }
    }
  }
}

TEST_CASE("group_into_slots: a piece larger than a slot is an error", "[transfer][packing][errors]") {
  std::vector<copy_item> pieces{item(0, 0, 4096)};
  std::vector<std::size_t> ends;
  REQUIRE_THROWS_MATCHES(lris::detail::group_into_slots(pieces, 4096, ends), lris::invalid_argument,
                         lris::test::what_contains("a piece of 4096 bytes does not fit a slot"));
  lris::detail::group_into_slots({}, 4096, ends);
  CHECK(ends.empty());
  CHECK(slot_layout{}.fits(slot_layout::max_piece(4096), 4096));
  CHECK_FALSE(slot_layout{}.fits(4096 - 16, 4096));  // no room for its item
}
