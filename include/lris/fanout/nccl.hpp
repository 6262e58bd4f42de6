#pragma once
/// @file
/// @brief NCCL (RCCL on AMD GPUs), loaded at run time for the fan-out's broadcast route: never
/// linked, never required. Where it is not there, nccl_library says why and the fan-out takes
/// another route.
///
///   lris::fanout::nccl_library nccl("cuda");          // libnccl.so.2, if the loader finds it
///   if (nccl.available()) {
///     lris::fanout::nccl_group g(nccl, {0, 1, 2, 3});  // one communicator per device
///     g.broadcast(buffers, bytes, 0, streams);         // buffers[0] -> every buffers[d]
///   }

#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lris::fanout {

/// @brief The collective library of a GPU runtime, loaded (dlopen) when made.
class nccl_library {
 public:
  /// @brief The library of `runtime` ("cuda": libnccl.so.2; "hip": librccl.so.1), or the file
  /// `path` names when not empty (e.g. the libnccl.so.2 a PyTorch wheel ships). When it cannot
  /// be loaded or lacks an entry point, available() is false and why() says what failed.
  explicit nccl_library(std::string_view runtime, const std::string& path = {});
  ~nccl_library();
  nccl_library(const nccl_library&) = delete;
  nccl_library& operator=(const nccl_library&) = delete;

  [[nodiscard]] bool available() const noexcept { return impl_ != nullptr; }
  /// @brief Why it is not available ("libnccl.so.2: cannot open shared object file: No such
  /// file or directory"); empty when it is.
  [[nodiscard]] const std::string& why() const noexcept { return why_; }
  /// @brief "NCCL 2.28.3 (libnccl.so.2)", "RCCL of NCCL API 2.22.3 (librccl.so.1)"; empty
  /// when not available.
  [[nodiscard]] const std::string& describe() const noexcept { return describe_; }

  struct impl;

 private:
  friend class nccl_group;
  std::shared_ptr<const impl> impl_;
  std::string why_;
  std::string describe_;
};

/// @brief Communicators among devices of this process (ncclCommInitAll), one per device, for
/// collectives queued on streams of those devices. Destroying the group waits for their
/// queued work (NCCL's ncclCommDestroy), or aborts them when one has failed; abort() ends them
/// at once, whatever is queued.
class nccl_group {
 public:
  /// @brief Communicators for `devices` (runtime ordinals), device devices[i] as rank i.
  /// @throws lris::unsupported when `library` is not available (naming why);
  /// lris::device_error naming NCCL's error (code(): its ncclResult_t) and the devices when
  /// the communicators cannot be made.
  nccl_group(const nccl_library& library, std::vector<int> devices);
  ~nccl_group();
  nccl_group(const nccl_group&) = delete;
  nccl_group& operator=(const nccl_group&) = delete;

  [[nodiscard]] std::size_t size() const noexcept { return comms_.size(); }

  /// @brief Queues the broadcast of `bytes` bytes of buffers[root] into buffers[d] of every
  /// rank d (device memory of that rank's device; the root's may be its source), on
  /// streams[d] (a cudaStream_t or hipStream_t of that device, as void*). Returns once queued.
  /// @throws lris::invalid_argument for spans of another size than the group or a root
  /// outside it; lris::device_error naming NCCL's error.
  void broadcast(std::span<void* const> buffers, std::size_t bytes, std::size_t root,
                 std::span<void* const> streams);
  /// @brief An error a communicator met while its work ran (a peer lost, a link down): its
  /// rank and NCCL's words.
  struct comm_error {
    std::size_t rank = 0;
    std::string what;
  };
  /// @brief The first rank's error, if any communicator has one.
  [[nodiscard]] std::optional<comm_error> async_error() const;
  /// @brief Aborts every communicator: their queued work ends, whatever it waited for, so
  /// that nothing hangs after a timeout. The group is unusable afterwards.
  void abort() noexcept;

 private:
  std::shared_ptr<const nccl_library::impl> lib_;
  std::vector<int> devices_;
  std::vector<void*> comms_;
};

}  // namespace lris::fanout
