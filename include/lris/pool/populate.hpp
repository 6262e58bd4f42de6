#pragma once
/// @file
/// @brief populate(): a checkpoint's tensors loaded into a host_pool through the loader (the io
/// engine, at disk or page-cache speed), each claimed before it is read and published once its
/// bytes are in: a process killed at any moment leaves claims that the next populate() takes
/// over, and no reader sees a partial tensor.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <vector>

#include <fmt/format.h>

#include <lris/formats/checkpoint.hpp>
#include <lris/formats/detail/load_select.hpp>
#include <lris/formats/load.hpp>
#include <lris/memory/memory_span.hpp>
#include <lris/pool/host_pool.hpp>

namespace lris::pool {

/// @brief What populate() did.
struct populate_report {
  std::size_t loaded = 0;      ///< tensors this call read and published
  std::size_t present = 0;     ///< ready already
  std::size_t busy = 0;        ///< being filled by another live process (left to it)
  std::size_t taken_over = 0;  ///< of `loaded`, claims a dead process had left
  std::uint64_t bytes = 0;     ///< read and published by this call
  double seconds = 0;
};

/// @brief Loads into `pool` every tensor of `ck` that `o` selects and that is neither ready
/// nor being filled by a live process, through pipeline `p` (its io engine and threads), then
/// publishes each (its checksum computed where it lies). Conversion and slicing apply as in
/// safetensors::load (the pool holds what the load makes).
/// @throws lris::out_of_memory, before anything is claimed, when the pool has too few
/// directory entries or bytes left for the tensors it does not hold yet (host_pool::check_room);
/// what safetensors::load_into throws (the claims are given up for the next process to take
/// over), and what host_pool::claim throws (a tensor of the name that differs, a pool without
/// room when another process took it meanwhile).
template <safetensors::loading_pipeline Pipeline>
populate_report populate(host_pool& pool, Pipeline& p, const safetensors::checkpoint& ck,
                         const safetensors::load_options& o = {}) {
  const auto start = std::chrono::steady_clock::now();
  populate_report r;
  {  // a fill the pool cannot take whole is refused before any claim (none left behind)
    const auto selected = safetensors::detail::select_tensors(ck, o);
    std::vector<host_pool::wanted> wanted;
    wanted.reserve(selected.size());
    for (const auto& s : selected) wanted.push_back({s.request.name, s.request.bytes});
    pool.check_room(wanted, fmt::format("populate from {}", ck.path().string()));
  }
  std::vector<pool_claim> claims;
  try {
    (void)safetensors::load_into(p, ck, [&](const safetensors::tensor_request& req) {
      pool_claim c = pool.claim(req.name, req.type, req.shape, req.bytes);
      if (c.what == pool_claim::state::ready) ++r.present;
      if (c.what == pool_claim::state::busy) ++r.busy;
      if (c.what != pool_claim::state::claimed) return host_span<std::byte>{};
      claims.push_back(c);
      return as_host(c.data, static_cast<std::size_t>(req.bytes));
    }, o);
  } catch (...) {
    for (const auto& c : claims) pool.abandon(c);
    throw;
  }
  for (std::size_t i = 0; i < claims.size(); ++i) {
    try {
      (void)pool.publish(claims[i]);
    } catch (...) {
      for (std::size_t k = i; k < claims.size(); ++k) pool.abandon(claims[k]);
      throw;
    }
    ++r.loaded;
    r.bytes += claims[i].bytes;
    if (claims[i].taken_over) ++r.taken_over;
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

}  // namespace lris::pool
