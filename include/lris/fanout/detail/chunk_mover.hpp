#pragma once
/// @file
/// @brief fanout::detail::chunk_mover: the chunks of a fan-out plan, from the files to every
/// device. The first pipeline's io engine reads each chunk into a pinned slot of its ring (at
/// most two per device). On the dma route every device copies its parts straight out of the
/// slot. On the peer and nccl routes the chunk first crosses into one device (chunk c into
/// device c mod N, over that device's own link) and its slot is free again; every device then
/// takes its parts from there by peer copies, or from its own copy once NCCL broadcast it.
///
/// It owns the slots, each device's room for chunks (peer, nccl) and the broadcaster. What a
/// copy in flight uses is kept until that copy ends, even one given up on after a failure:
/// memory is never freed under a copy.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include <fmt/format.h>

#include <lris/concepts/batch_backend.hpp>
#include <lris/error.hpp>
#include <lris/exec/file_io.hpp>
#include <lris/exec/plan.hpp>
#include <lris/fanout/detail/broadcaster.hpp>
#include <lris/fanout/detail/pick_route.hpp>
#include <lris/fanout/fan_out_plan.hpp>
#include <lris/fanout/route.hpp>
#include <lris/formats/checkpoint.hpp>
#include <lris/formats/load.hpp>
#include <lris/formats/load_options.hpp>
#include <lris/memory/device_allocator.hpp>
#include <lris/transfer/transfer.hpp>

namespace lris::fanout::detail {

// Waits for `t` up to `timeout` (zero: without limit). False when it has not finished by then.
inline bool wait_for(transfer& t, std::chrono::milliseconds timeout) {
  if (timeout.count() <= 0 || t.poll()) return true;
  struct flag {
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
  };
  auto f = std::make_shared<flag>();
  t.on_complete([f](std::exception_ptr) {
    std::lock_guard lock(f->m);
    f->done = true;
    f->cv.notify_all();
  });
  std::unique_lock lock(f->m);
  return f->cv.wait_for(lock, timeout, [&] { return f->done; });
}

/// @brief What a chunk_mover moves, where to, and how: decided by fanout::load.
template <class Pipeline>
struct chunk_work {
  std::span<Pipeline> pipelines;           ///< device d is pipelines[d]; the first reads
  const safetensors::checkpoint* ck = nullptr;
  const fan_plan* plan = nullptr;
  const std::vector<std::string>* names = nullptr;  ///< the devices', "cuda:1"
  std::string file;                        ///< the checkpoint, for messages
  const safetensors::load_options* load = nullptr;  ///< transfer settings and on_progress
  unsigned tp = 1;                         ///< device d is rank d % tp (in messages)
  std::chrono::milliseconds timeout{0};    ///< per device and chunk (zero: no limit)
  fan_path route = fan_path::dma;          ///< dma, peer or nccl (decided)
  std::shared_ptr<const nccl_library> nccl;  ///< the nccl route's library
  exec::file_io_choice io;                 ///< how the files are read
  unsigned workers = 1;                    ///< read tasks per chunk
  std::size_t align = 1;                   ///< O_DIRECT alignment of the reads
  std::size_t depth = 2;                   ///< slots wanted (fewer if the plan has fewer chunks)
  /// The devices' blocks the copies write into: kept with the slots while copies run.
  std::vector<std::shared_ptr<void>> blocks;
};

template <safetensors::loading_pipeline Pipeline>
class chunk_mover {
  using Backend = typename Pipeline::backend_type;
  using Executor = typename std::remove_cvref_t<decltype(*std::declval<Pipeline&>().executor())>;
  static constexpr std::size_t alignment = 256;  // of each device's room for a chunk

 public:
  /// @brief Takes the slots and each device's room for chunks (peer, nccl); on the nccl
  /// route, starts making the communicators (on a thread of their own, overlapping the first
  /// reads). @throws lris::out_of_memory naming the device without room.
  explicit chunk_mover(chunk_work<Pipeline> w)
      : w_(std::move(w)), plan_(*w_.plan), names_(*w_.names), n_(w_.pipelines.size()),
        peer_(w_.route == fan_path::peer), collective_(w_.route == fan_path::nccl),
        keep_(std::make_shared<keep_alive>()), batched_(n_, 0) {
    keep_->ex = w_.pipelines.front().executor();
    keep_->blocks = w_.blocks;
    if (!plan_.chunks.empty()) {
      keep_->slots = keep_->ex->staged->ring.acquire(std::min(w_.depth, plan_.chunks.size()),
                                                     plan_.buffer_bytes);
    }
    depth_ = std::max<std::size_t>(1, keep_->slots.size());
    if ((peer_ || collective_) && !plan_.chunks.empty()) make_scratch();
    if constexpr (collective_backend<Backend>) {
      if (collective_ && !plan_.chunks.empty()) {
        std::vector<Backend> devs;
        for (auto& pl : w_.pipelines) devs.push_back(pl.backend());
        turn_ = std::unique_lock(w_.pipelines.front().context()->template cached<collective_turn>(
            0, [] { return std::make_unique<collective_turn>(); }).m);
        caster_.emplace(w_.nccl, std::move(devs));
      }
    }
    slot_reads_.resize(depth_);
    stages_.resize(depth_);
    for (auto& f : stages_) f.sends.resize(n_);
    for (std::size_t d = 0; d < n_; ++d) total_ += plan_.device_bytes(d);
  }

  chunk_mover(const chunk_mover&) = delete;
  chunk_mover& operator=(const chunk_mover&) = delete;

  /// @brief Moves every chunk; returns once every device has all its bytes. On failure, stops
  /// what is in flight and throws: lris::rank_error or lris::rank_timeout naming the device,
  /// lris::cancelled when on_progress cancelled, lris::io_error for a failed read.
  void run() {
    try {
      const std::size_t chunks = plan_.chunks.size();
      if (!peer_ && !collective_) {
        // Dma route: the devices copy from the slot. Chunk c + depth - 1 is read into the slot
        // of chunk c - 1 as soon as every device has taken that one.
        for (std::size_t c = 0; c + 1 < std::min(chunks, depth_); ++c) start_read(c);
        for (std::size_t c = 0; c < chunks; ++c) {
          if (c >= 1) finish_sends(c - 1);
          if (c + depth_ - 1 < chunks) start_read(c + depth_ - 1);
          wait_read(c);
          start_sends(c);
        }
        if (chunks > 0) finish_sends(chunks - 1);
      } else {
        // Peer and nccl routes: a slot is free once its chunk is in its root device, so the
        // copies into the roots of `lag` chunks (each into another device, over its own link)
        // run while the chunk before them is broadcast or taken, and the reads of the other
        // slots go on. A device's room for chunk c takes chunk c + depth once every device
        // has taken its parts of c. (One slot: lag 0, each chunk in turn.)
        const std::size_t lag = depth_ / 2;
        for (std::size_t c = 0; c < std::min(chunks, depth_); ++c) start_read(c);
        for (std::size_t c = 0; c < chunks + lag; ++c) {
          if (c < chunks) {
            wait_read(c);
            if (c >= depth_) finish_sends(c - depth_);
            start_root(c);
          }
          if (c < lag) continue;
          const std::size_t q = c - lag;  // its root has chunk q, or soon will
          finish_root(q);
          if (q + depth_ < chunks) start_read(q + depth_);
          start_sends(q);
        }
        for (std::size_t c = chunks > depth_ ? chunks - depth_ : 0; c < chunks; ++c) {
          finish_sends(c);
        }
      }
    } catch (...) {
      abandon();
      throw;
    }
  }

  /// @brief Pinned bytes of the slots taken.
  [[nodiscard]] std::size_t staging_bytes() const noexcept {
    return keep_->slots.size() * plan_.buffer_bytes;
  }
  /// @brief Device bytes per device for chunks (peer, nccl routes; else 0).
  [[nodiscard]] std::size_t scratch_bytes() const noexcept {
    return scratch_.empty() || scratch_.front().empty() ? 0 : depth_ * plan_.buffer_bytes;
  }
  /// @brief Seconds the communicators took to make (nccl route; else 0).
  [[nodiscard]] double nccl_init_seconds() const noexcept { return nccl_init_seconds_; }
  /// @brief Whether device d took pieces as one batched operation.
  [[nodiscard]] bool batched(std::size_t d) const noexcept { return batched_[d] != 0; }

 private:
  // What copies in flight use, kept until the last of them is done: even one given up on.
  struct keep_alive {
    std::shared_ptr<Executor> ex;
    std::vector<lris::detail::staging_slot<Backend>*> slots;
    std::vector<std::shared_ptr<void>> blocks;
    ~keep_alive() {
      if (!slots.empty()) ex->staged->ring.release(slots);
    }
  };
  // Per chunk room (chunk c in c % depth: the slot on the dma route, each device's scratch on
  // the others): the copy into its root device, then each device's copies of its parts.
  struct send_flight {
    std::size_t chunk = 0;
    transfer root;
    std::vector<std::vector<transfer>> sends;  // per device
  };
  struct no_broadcaster {};
  using broadcaster_type = std::conditional_t<collective_backend<Backend>, broadcaster<Backend>,
                                              no_broadcaster>;

  // On each device, a chunk's room per slot, for the chunks it takes first (and, nccl, those
  // broadcast to it).
  void make_scratch() {
    scratch_.resize(n_);
    for (std::size_t d = 0; d < n_; ++d) {
      device_allocator<Backend> alloc(w_.pipelines[d].backend());
      const std::size_t bytes = plan_.buffer_bytes;
      for (std::size_t k = 0; k < depth_; ++k) {
        void* mem = nullptr;
        try {
          mem = alloc.allocate(bytes, alignment);
        } catch (const out_of_memory& e) {
          throw out_of_memory(fmt::format("fan-out load {}: device {} ({}) has no room for the "
                                          "{} route's {} bytes of chunks: {}", w_.file, d,
                                          names_[d], to_string(w_.route), depth_ * bytes,
                                          e.what()),
                              e.requested());
        }
        keep_->blocks.push_back(std::shared_ptr<void>(mem, [alloc, bytes](void* q) mutable {
          alloc.deallocate(q, bytes, alignment);
        }));
        scratch_[d].push_back(static_cast<std::byte*>(mem));
      }
    }
  }

  [[nodiscard]] rank_error failed_on(std::size_t d, std::size_t c, const std::exception& e) const {
    return rank_error(fmt::format("fan-out load {}: device {} ({}, rank {} of {}), chunk {}: {}",
                                  w_.file, d, names_[d], d % w_.tp, w_.tp, c, e.what()),
                      static_cast<int>(d), names_[d]);
  }

  // Chunk c read into its slot, in pieces for the workers cut at O_DIRECT blocks of the file.
  void start_read(std::size_t c) {
    const fan_chunk& ch = plan_.chunks[c];
    std::byte* buf = keep_->slots[c % depth_]->data;
    exec::plan p;
    p.shape = transfer_path::parallel;
    for (const auto& sh : w_.ck->shards()) p.files.push_back(&sh.file);
    p.io = w_.load->transfer.io;
    p.io.direct = w_.io.mode;
    p.io_reason = w_.io.reason;
    p.buffered_every = w_.io.buffered_every;
    p.prio = w_.load->transfer.priority;
    p.budget_bytes = w_.load->transfer.budget_bytes;
    const std::uint64_t align = w_.align;
    const std::uint64_t piece =
        std::max<std::uint64_t>(align, (ch.bytes / w_.workers + align - 1) / align * align);
    std::uint64_t at = 0;
    while (at < ch.bytes) {
      std::uint64_t b = std::min(ch.bytes - at, piece);
      if (at == 0 && ch.at > 0) b = std::min<std::uint64_t>(ch.bytes, piece - ch.at);
      p.add({exec::place::in_file(static_cast<std::uint32_t>(ch.shard), ch.file_offset + at),
             exec::place::pinned(buf + ch.at + at), static_cast<std::size_t>(b)});
      p.cut();
      at += b;
    }
    p.workers = std::min<unsigned>(w_.workers, static_cast<unsigned>(p.chunks()));
    slot_reads_[c % depth_] = w_.pipelines.front().run(std::move(p));
  }

  void wait_read(std::size_t c) {
    transfer& r = slot_reads_[c % depth_];
    r.wait();
    r = transfer();
  }

  // Waits for device d's transfer `t` of chunk c: a timeout or failure names the device.
  transfer_stats await(transfer& t, std::size_t d, std::size_t c) {
    if (!wait_for(t, w_.timeout)) {
      const fan_chunk& ch = plan_.chunks[c];
      throw rank_timeout(
          fmt::format("fan-out load {}: device {} ({}, rank {} of {}) did not take chunk {} ({} "
                      "bytes of file {} from offset {}) within {} ms",
                      w_.file, d, names_[d], d % w_.tp, w_.tp, c, ch.bytes, ch.shard,
                      ch.file_offset, w_.timeout.count()),
          static_cast<int>(d), names_[d]);
    }
    try {
      return t.wait();
    } catch (const cancelled&) {
      throw;
    } catch (const std::exception& e) {
      throw failed_on(d, c, e);
    }
  }

  // Nccl route: chunk c, in device `root`'s room, broadcast into every device's; a device that
  // fails, or does not have it within the timeout, ends the load naming it.
  void broadcast(std::size_t c, std::size_t root) {
    if constexpr (collective_backend<Backend>) {
      const fan_chunk& ch = plan_.chunks[c];
      std::vector<void*> bufs(n_);
      for (std::size_t d = 0; d < n_; ++d) bufs[d] = scratch_[d][c % depth_] + ch.at;
      std::optional<typename broadcaster_type::failure> failed;
      try {
        failed = caster_->run(bufs, static_cast<std::size_t>(ch.bytes), root, w_.timeout);
      } catch (const device_error& e) {
        throw device_error(fmt::format("fan-out load {}: {}", w_.file, e.what()), e.code());
      }
      nccl_init_seconds_ = caster_->init_seconds();
      if (failed) {
        const std::size_t d = failed->device;
        const std::string what =
            fmt::format("fan-out load {}: device {} ({}, rank {} of {}): chunk {} ({} bytes) "
                        "broadcast from {}: {}", w_.file, d, names_[d], d % w_.tp, w_.tp, c,
                        ch.bytes, names_[root], failed->why);
        if (failed->timed_out) throw rank_timeout(what, static_cast<int>(d), names_[d]);
        throw rank_error(what, static_cast<int>(d), names_[d]);
      }
    } else {
      (void)c;
      (void)root;
    }
  }

  // Peer and nccl routes: chunk c from its slot into device c mod n (its root), which every
  // device then takes it from (peer copies) or which broadcasts it (nccl). Not waited for.
  void start_root(std::size_t c) {
    send_flight& f = stages_[c % depth_];
    f.chunk = c;
    const std::size_t root = c % n_;
    const fan_chunk& ch = plan_.chunks[c];
    exec::plan first;
    first.shape = transfer_path::direct;
    first.add({exec::place::pinned(keep_->slots[c % depth_]->data + ch.at),
               exec::place::on_device(scratch_[root][c % depth_] + ch.at,
                                      w_.pipelines[root].backend().device()),
               static_cast<std::size_t>(ch.bytes)});
    first.cut();
    first.prio = w_.load->transfer.priority;
    first.budget_bytes = w_.load->transfer.budget_bytes;
    try {
      f.root = w_.pipelines[root].run(std::move(first));
    } catch (const std::exception& e) {
      throw failed_on(root, c, e);
    }
  }

  // Waits for chunk c's copy into its root: its slot may then take another read.
  void finish_root(std::size_t c) {
    send_flight& f = stages_[c % depth_];
    (void)await(f.root, c % n_, c);
    f.root = transfer();
  }

  // Each device's parts of chunk c: from the slot (dma route), from the root's copy (peer),
  // or from each device's own copy once the root broadcast it (nccl).
  void start_sends(std::size_t c) {
    send_flight& f = stages_[c % depth_];
    f.chunk = c;
    const std::size_t root = c % n_;
    exec::place from = exec::place::pinned(keep_->slots[c % depth_]->data);
    if (peer_ || collective_) {
      from = exec::place::on_device(scratch_[root][c % depth_],
                                    w_.pipelines[root].backend().device());
    }
    if (collective_) broadcast(c, root);
    for (std::size_t d = 0; d < n_; ++d) {
      f.sends[d].clear();
      const int dev = w_.pipelines[d].backend().device();
      // Nccl route: each device takes its parts from its own copy of the chunk.
      const exec::place src =
          collective_ ? exec::place::on_device(scratch_[d][c % depth_], dev) : from;
      exec::plan steps, batch;
      steps.shape = transfer_path::direct;
      batch.shape = transfer_path::batched;
      steps.peer_sources = batch.peer_sources = peer_;
      batch.copies.from = src.at_address(nullptr);
      batch.copies.to = exec::place::on_device(nullptr, dev);
      for (const delivery& v : plan_.deliveries(c, d)) {
        // Small pieces (rows of a split tensor) as one batched operation where the device
        // has one; the rest as copies.
        if constexpr (batch_backend<Backend>) {
          if (v.bytes <= (std::uint64_t{256} << 10)) {
            batch.add_copy({src.ptr + v.from, v.to, static_cast<std::size_t>(v.bytes)});
            continue;
          }
        }
        steps.add({src.at_address(src.ptr + v.from), exec::place::on_device(v.to, dev),
                   static_cast<std::size_t>(v.bytes)});
      }
      steps.cut();
      if (batch.bytes > 0) batched_[d] = 1;
      for (exec::plan* p : {&steps, &batch}) {
        if (p->bytes == 0) continue;
        p->prio = w_.load->transfer.priority;
        p->budget_bytes = w_.load->transfer.budget_bytes;
        try {
          f.sends[d].push_back(w_.pipelines[d].run(std::move(*p)));
        } catch (const std::exception& e) {
          throw failed_on(d, c, e);
        }
      }
    }
  }

  void finish_sends(std::size_t c) {
    send_flight& f = stages_[c % depth_];
    for (std::size_t d = 0; d < n_; ++d) {
      for (transfer& t : f.sends[d]) {
        if (!t.valid()) continue;
        delivered_ += await(t, d, f.chunk).bytes;
        t = transfer();
      }
      f.sends[d].clear();
    }
    if (w_.load->on_progress && !w_.load->on_progress(delivered_, total_)) {
      throw cancelled(fmt::format("fan-out load {}: cancelled after {} of {} bytes", w_.file,
                                  delivered_, total_));
    }
  }

  // On failure: stop what is in flight. The reads are waited for: they use the checkpoint's
  // files, which the caller may close once the load has thrown, and a cancelled read stops
  // after the io operations it has in flight. The copies get one second together (or the
  // timeout, if shorter), also without a timeout: the load has failed, and a device that never
  // ends its copy must not hold the error back. What has not ended by then is left to finish
  // on its own, holding keep_ (the slots, blocks and rooms) until it does.
  void abandon() {
    std::vector<transfer*> copies;
    for (auto& f : stages_) {
      copies.push_back(&f.root);
      for (auto& v : f.sends) {
        for (auto& t : v) copies.push_back(&t);
      }
    }
    for (auto& r : slot_reads_) {
      if (r.valid()) r.cancel();
    }
    for (transfer* t : copies) {
      if (t->valid()) t->cancel();
    }
    auto settle = [](transfer& t) {
      try {
        t.wait();
      } catch (...) {
      }
      t = transfer();
    };
    for (auto& r : slot_reads_) {
      if (r.valid()) settle(r);
    }
    using clock = std::chrono::steady_clock;
    const auto deadline = clock::now() + std::chrono::milliseconds(
        w_.timeout.count() > 0 ? std::min<long long>(w_.timeout.count(), 1000) : 1000);
    for (transfer* t : copies) {
      if (!t->valid()) continue;
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
      if (left.count() > 0 ? wait_for(*t, left) : t->poll()) {
        settle(*t);
      } else {
        t->on_complete([k = keep_](std::exception_ptr) {});
        t->detach();
        *t = transfer();
      }
    }
  }

  chunk_work<Pipeline> w_;
  const fan_plan& plan_;
  const std::vector<std::string>& names_;
  std::size_t n_;
  bool peer_, collective_;
  std::shared_ptr<keep_alive> keep_;
  std::size_t depth_ = 1;
  std::vector<std::vector<std::byte*>> scratch_;  // per device, a room per slot
  std::unique_lock<std::mutex> turn_;             // outlives the broadcaster: declared before it
  std::optional<broadcaster_type> caster_;
  std::vector<transfer> slot_reads_;  // per slot: the read of its chunk
  std::vector<send_flight> stages_;   // per slot
  std::vector<char> batched_;         // per device: small pieces went as one batched operation
  std::uint64_t total_ = 0, delivered_ = 0;
  double nccl_init_seconds_ = 0;
};

}  // namespace lris::fanout::detail
