#pragma once
/// @file
/// @brief exec::staging: the pinned staging ring and the io engine its slots are registered
/// with, which a context keeps and its pipelines share (staging_of).

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include <lris/concepts/allocator_policy.hpp>
#include <lris/concepts/backend_policy.hpp>
#include <lris/exec/context.hpp>
#include <lris/exec/detail/staging_ring.hpp>
#include <lris/io/engine.hpp>
#include <lris/io/options.hpp>

namespace lris::exec {

/// @brief What a staging ring is made with besides its backend and allocator.
struct staging_settings {
  /// Upper bound of the ring's pinned memory, shared by the transfers that use it.
  std::size_t max_bytes = std::size_t{256} << 20;
  /// The io engine's settings (file transfers into and out of the slots).
  io::io_options io = {};

  /// @brief The same settings. An io make_queue hook (fault injection) is the same as
  /// nothing, not even itself: such staging is never shared.
  [[nodiscard]] bool same_as(const staging_settings& o) const noexcept {
    return max_bytes == o.max_bytes && io.same_as(o.io);
  }
};

/// @brief A pinned staging ring and the io engine that reads and writes files through its
/// slots (registered as io_uring fixed buffers), on one device of a backend.
template <backend_policy Backend, allocator_policy Allocator>
class staging {
 public:
  using slot = lris::detail::staging_slot<Backend>;

  /// @brief Staging whose io runs on `ctx`'s io threads. `ctx` need not own the context:
  /// whoever holds the staging keeps the context alive, or the context keeps the staging.
  staging(Backend b, Allocator a, staging_settings settings, std::shared_ptr<context> ctx)
      : ctx_(std::move(ctx)),
        settings_(std::move(settings)),
        allocator_(a),
        ring(std::move(b), std::move(a), settings_.max_bytes) {
    // The ring dies before the engine (declared earlier), so the engine outlives every slot.
    ring.on_unregister([this](std::uint64_t id) noexcept { io_->unregister_memory(id); });
  }
  staging(const staging&) = delete;
  staging& operator=(const staging&) = delete;

  /// @brief The io engine, made on first use.
  io::io_engine& io() {
    std::call_once(io_once_, [this] {
      io_ = std::make_unique<io::io_engine>(
          settings_.io, std::shared_ptr<lris::detail::thread_pool>(ctx_, &ctx_->io()));
    });
    return *io_;
  }
  /// @brief Registers `s` with the io engine once, so that file io into and out of it goes as
  /// io_uring fixed buffers. The slot's holder calls it; the ring unregisters the slot before
  /// freeing it.
  void register_for_io(slot& s) {
    if (s.io_registration == 0) s.io_registration = io().register_memory({s.data, s.bytes});
  }
  [[nodiscard]] const Allocator& allocator() const noexcept { return allocator_; }
  [[nodiscard]] const staging_settings& settings() const noexcept { return settings_; }

 private:
  std::shared_ptr<context> ctx_;  // before the engine, which runs on its threads
  staging_settings settings_;
  Allocator allocator_;
  std::once_flag io_once_;
  std::unique_ptr<io::io_engine> io_;

 public:
  lris::detail::staging_ring<Backend, Allocator> ring;
};

/// @brief The staging of `ctx` for `b`'s device, from `a`, with `settings`: made on first use
/// and then kept by the context (its registry) until the context is destroyed. The pipelines
/// of a context with the same backend, device, staging allocator and settings so share one
/// bound of pinned memory and one io engine, and a pipeline made later (one per call, as a
/// script might make them) finds its slots pinned and registered already. An allocator that
/// cannot be compared, or an io make_queue hook, gets staging of its own, which the caller
/// keeps.
template <backend_policy Backend, allocator_policy Allocator>
std::shared_ptr<staging<Backend, Allocator>> staging_of(const context_ptr& ctx, Backend b,
                                                        Allocator a, staging_settings settings) {
  using staging_type = staging<Backend, Allocator>;
  if constexpr (std::equality_comparable<Allocator>) {
    if (!settings.io.make_queue) {
      struct shelf {
        std::mutex mutex;
        std::vector<std::pair<Backend, std::shared_ptr<staging_type>>> kept;
      };
      auto& sh = ctx->cached<shelf>(b.device(), [] { return std::make_unique<shelf>(); });
      std::lock_guard lock(sh.mutex);
      for (const auto& [backend, s] : sh.kept) {
        if (backend == b && s->allocator() == a && s->settings().same_as(settings)) return s;
      }
      // Not owning the context: the context owns it.
      auto made = std::make_shared<staging_type>(b, std::move(a), std::move(settings),
                                                 ctx->unowned());
      sh.kept.emplace_back(std::move(b), made);
      return made;
    }
  }
  return std::make_shared<staging_type>(std::move(b), std::move(a), std::move(settings), ctx);
}

}  // namespace lris::exec
