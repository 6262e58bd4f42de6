// pack_into_slots: the layout of a batch in staging slots, checked for every random batch.
#include <catch2/catch.hpp>

#include "support/what_contains.hpp"

#include <random>
#include <vector>

#include <lris/exec/detail/packing.hpp>

using lris::copy_item;
using lris::detail::pack_alignment;
using lris::detail::slot_packing;

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

TEST_CASE("pack_into_slots: pieces and item arrays fit their slot, in order, apart",
          "[transfer][packing]") {
  std::mt19937_64 rng(11);
  for (int round = 0; round < 200; ++round) {
    const std::size_t slot = std::size_t{4096} << (rng() % 6);
    std::vector<copy_item> pieces;
    const std::size_t n = 1 + rng() % 300;
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t bytes = 1 + rng() % slot_packing::max_piece(slot);
      pieces.push_back(item(i * slot, i * slot, rng() % 4 == 0 ? bytes : bytes % 300 + 1));
    }
    const slot_packing p = lris::detail::pack_into_slots(pieces, slot);
    REQUIRE(p.pieces.size() == n);
    REQUIRE(p.begin.front() == 0);
    REQUIRE(p.begin.back() == n);
    REQUIRE(p.items_offset.size() == p.groups());
    for (std::size_t g = 0; g < p.groups(); ++g) {
      REQUIRE(p.begin[g] < p.begin[g + 1]);  // no empty group
      std::size_t end = 0;
      for (std::size_t k = p.begin[g]; k < p.begin[g + 1]; ++k) {
        CHECK(p.offset[k] % pack_alignment == 0);
        CHECK(p.offset[k] >= end);  // after the previous piece
        end = p.offset[k] + p.pieces[k].bytes;
      }
      CHECK(p.items_offset[g] % pack_alignment == 0);
      CHECK(p.items_offset[g] >= end);
      CHECK(p.items_offset[g] + (p.begin[g + 1] - p.begin[g]) * sizeof(copy_item) <= slot);
      // A group closes only when the next piece would not have fitted.
      if (g + 1 < p.groups()) {
        const std::size_t next = p.pieces[p.begin[g + 1]].bytes;
        const std::size_t items = lris::detail::align_up(
            lris::detail::align_up(end, pack_alignment) + next, pack_alignment);
        CHECK(items + (p.begin[g + 1] - p.begin[g] + 1) * sizeof(copy_item) > slot);
      }
    }
  }
}

TEST_CASE("pack_into_slots: a piece larger than a slot is an error", "[transfer][packing][errors]") {
  std::vector<copy_item> pieces{item(0, 0, 4096)};
  REQUIRE_THROWS_MATCHES(lris::detail::pack_into_slots(pieces, 4096), lris::invalid_argument,
                         lris::test::what_contains("a piece of 4096 bytes does not fit a slot"));
  CHECK(lris::detail::pack_into_slots({}, 4096).groups() == 0);
}
