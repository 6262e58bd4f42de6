// Each sizing rule on its own (the copy tests check that the paths follow them).
#include <catch2/catch.hpp>

#include <lris/exec/sizing.hpp>

using namespace lris::exec;

TEST_CASE("host copies: a chunk per worker, never under 1 MiB, never over the plan's",
          "[exec][sizing]") {
  CHECK(host_split_chunk(16 * mib, 8, 8 * mib) == 2 * mib);
  CHECK(host_split_chunk(3 * mib, 8, 8 * mib) == mib);    // 8 chunks would be 384 KiB
  CHECK(host_split_chunk(64 * mib, 2, 8 * mib) == 8 * mib);  // 32 MiB a worker: capped
  CHECK(host_split_chunk(5, 0, 8 * mib) == mib);           // no workers counts as one
}

TEST_CASE("staging: two chunks per worker, 512 KiB to the plan's and the ring's bound",
          "[exec][sizing]") {
  CHECK(staging_chunk(16 * mib, 1, 4 * mib, 64 * mib) == 4 * mib);
  CHECK(staging_chunk(16 * mib, 4, 4 * mib, 64 * mib) == 2 * mib);
  CHECK(staging_chunk(16 * mib, 64, 4 * mib, 64 * mib) == 512 * 1024);
  CHECK(staging_chunk(16 * mib, 1, 8 * mib, 3 * mib) == 3 * mib);  // a slot holds no more
}

TEST_CASE("direct io: 16 MiB chunks, twice the queue depth's worth of workers",
          "[exec][sizing]") {
  const auto d = direct_io_chunks(32, mib, 16);  // 64 MiB in flight: 4 chunks
  CHECK(d.chunk_bytes == 16 * mib);
  CHECK(d.workers == 4);
  CHECK(direct_io_chunks(1, 4096, 16).workers == 2);   // never fewer than two
  CHECK(direct_io_chunks(1024, mib, 16).workers == 16);  // nor more than allowed
  CHECK(direct_io_chunks(1024, mib, 1).workers == 2);
}

TEST_CASE("whole units: rounded down, at least one, within the limit", "[exec][sizing]") {
  CHECK(whole_units(10000, 4096, 1 << 30) == 8192);
  CHECK(whole_units(100, 4096, 1 << 30) == 4096);
  CHECK(whole_units(1 << 20, 4096, 20000) == 16384);
}

TEST_CASE("coordinated pieces: half the budget in whole MiB, 1 to 64 MiB", "[exec][sizing]") {
  CHECK(paced_piece_bytes(12 * mib) == 6 * mib);
  CHECK(paced_piece_bytes(13 * mib) == 6 * mib);
  CHECK(paced_piece_bytes(mib) == mib);
  CHECK(paced_piece_bytes(std::uint64_t{1} << 40) == 64 * mib);
  CHECK(file_piece_bytes(32 * mib) == 16 * mib);
  CHECK(file_piece_bytes(256 * mib) == 64 * mib);
}

TEST_CASE("default workers: the context's threads, 1 to 16", "[exec][sizing]") {
  CHECK(default_workers(0) == 1);
  CHECK(default_workers(8) == 8);
  CHECK(default_workers(128) == 16);
}
