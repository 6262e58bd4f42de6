#include <lris/fanout/nccl.hpp>

#include <dlfcn.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <lris/error.hpp>

namespace lris::fanout {

// The few NCCL entry points used, declared as NCCL's C API defines them (nccl.h is not a
// build dependency: the library is found at run time or not at all). RCCL has the same API.
namespace {
using nccl_result = int;  // ncclResult_t; 0 is ncclSuccess
using nccl_comm = void*;  // ncclComm_t
constexpr int nccl_uint8 = 1;  // ncclUint8
constexpr nccl_result nccl_in_progress = 7;  // ncclInProgress: not an error
}  // namespace

struct nccl_library::impl {
  void* library = nullptr;
  std::string name;
  nccl_result (*get_version)(int*) = nullptr;
  nccl_result (*init_all)(nccl_comm*, int, const int*) = nullptr;
  nccl_result (*destroy)(nccl_comm) = nullptr;
  nccl_result (*abort)(nccl_comm) = nullptr;
  nccl_result (*group_start)() = nullptr;
  nccl_result (*group_end)() = nullptr;
  nccl_result (*broadcast)(const void*, void*, std::size_t, int, int, nccl_comm, void*) = nullptr;
  nccl_result (*async_error)(nccl_comm, nccl_result*) = nullptr;
  const char* (*error_string)(nccl_result) = nullptr;
  const char* (*last_error)(nccl_comm) = nullptr;  // NCCL 2.13 and later; may be missing

  // "unhandled cuda error (run with NCCL_DEBUG=INFO for details) (1): <last error>". NCCL
  // keeps the last error per thread: it belongs to a call of this thread, never to an error of
  // NCCL's own threads (`last` false).
  [[nodiscard]] std::string message(nccl_result r, nccl_comm comm = nullptr,
                                    bool last = true) const {
    std::string m = fmt::format("{} ({})", error_string != nullptr ? error_string(r) : "error", r);
    if (last && last_error != nullptr) {
      const char* text = last_error(comm);
      if (text != nullptr && *text != '\0') m += fmt::format(": {}", text);
    }
    return m;
  }
};

nccl_library::nccl_library(std::string_view runtime, const std::string& path) {
  const std::string name =
      !path.empty() ? path : (runtime == "hip" ? "librccl.so.1" : "libnccl.so.2");
  auto p = std::make_shared<impl>();
  p->name = name;
  // Kept loaded for the rest of the process: NCCL's threads and its registrations with the
  // GPU runtime outlive any one group.
  p->library = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
  if (p->library == nullptr) {
    const char* e = dlerror();
    why_ = e != nullptr ? e : fmt::format("{} could not be loaded", name);
    return;
  }
  auto sym = [&](const char* s) { return dlsym(p->library, s); };
  p->get_version = reinterpret_cast<decltype(p->get_version)>(sym("ncclGetVersion"));
  p->init_all = reinterpret_cast<decltype(p->init_all)>(sym("ncclCommInitAll"));
  p->destroy = reinterpret_cast<decltype(p->destroy)>(sym("ncclCommDestroy"));
  p->abort = reinterpret_cast<decltype(p->abort)>(sym("ncclCommAbort"));
  p->group_start = reinterpret_cast<decltype(p->group_start)>(sym("ncclGroupStart"));
  p->group_end = reinterpret_cast<decltype(p->group_end)>(sym("ncclGroupEnd"));
  p->broadcast = reinterpret_cast<decltype(p->broadcast)>(sym("ncclBroadcast"));
  p->async_error = reinterpret_cast<decltype(p->async_error)>(sym("ncclCommGetAsyncError"));
  p->error_string = reinterpret_cast<decltype(p->error_string)>(sym("ncclGetErrorString"));
  p->last_error = reinterpret_cast<decltype(p->last_error)>(sym("ncclGetLastError"));
  std::vector<const char*> missing;
  for (const auto& [f, s] : {std::pair{reinterpret_cast<void*>(p->get_version), "ncclGetVersion"},
                             {reinterpret_cast<void*>(p->init_all), "ncclCommInitAll"},
                             {reinterpret_cast<void*>(p->destroy), "ncclCommDestroy"},
                             {reinterpret_cast<void*>(p->abort), "ncclCommAbort"},
                             {reinterpret_cast<void*>(p->group_start), "ncclGroupStart"},
                             {reinterpret_cast<void*>(p->group_end), "ncclGroupEnd"},
                             {reinterpret_cast<void*>(p->broadcast), "ncclBroadcast"},
                             {reinterpret_cast<void*>(p->async_error), "ncclCommGetAsyncError"},
                             {reinterpret_cast<void*>(p->error_string), "ncclGetErrorString"}}) {
    if (f == nullptr) missing.push_back(s);
  }
  if (!missing.empty()) {
    why_ = fmt::format("{} lacks {}", name, fmt::join(missing, ", "));
    return;
  }
  int version = 0;
  if (const nccl_result r = p->get_version(&version); r != 0) {
    why_ = fmt::format("{}: ncclGetVersion returned {}", name, p->message(r));
    return;
  }
  // NCCL_VERSION_CODE: major * 10000 + minor * 100 + patch since 2.9; major * 1000 + minor *
  // 100 + patch before.
  const int major = version >= 10000 ? version / 10000 : version / 1000;
  const int minor = version >= 10000 ? version / 100 % 100 : version / 100 % 10;
  // RCCL reports the NCCL API version it implements.
  describe_ = runtime == "hip"
                  ? fmt::format("RCCL of NCCL API {}.{}.{} ({})", major, minor, version % 100, name)
                  : fmt::format("NCCL {}.{}.{} ({})", major, minor, version % 100, name);
  impl_ = std::move(p);
}

nccl_library::~nccl_library() = default;

nccl_group::nccl_group(const nccl_library& library, std::vector<int> devices)
    : lib_(library.impl_), devices_(std::move(devices)) {
  if (!lib_) {
    throw unsupported(fmt::format("NCCL is not available: {}", library.why()));
  }
  LRIS_EXPECTS(!devices_.empty(), "nccl_group: no device");
  comms_.assign(devices_.size(), nullptr);
  if (const nccl_result r =
          lib_->init_all(comms_.data(), static_cast<int>(devices_.size()), devices_.data());
      r != 0) {
    const std::string why = lib_->message(r);
    // Aborted, not destroyed: destroying waits for a communicator to be ready, which one
    // whose set-up failed never is.
    for (void*& c : comms_) {
      if (c != nullptr) lib_->abort(c);
      c = nullptr;
    }
    comms_.clear();
    throw device_error(fmt::format("{}: ncclCommInitAll for devices {} failed: {}", lib_->name,
                                   fmt::join(devices_, ", "), why),
                       r);
  }
}

nccl_group::~nccl_group() {
  // A communicator with an error is aborted (destroying it could wait on what failed).
  const bool failed = !comms_.empty() && async_error().has_value();
  for (void* c : comms_) {
    if (c == nullptr) continue;
    if (failed) {
      lib_->abort(c);
    } else {
      lib_->destroy(c);
    }
  }
}

void nccl_group::broadcast(std::span<void* const> buffers, std::size_t bytes, std::size_t root,
                           std::span<void* const> streams) {
  const std::size_t n = comms_.size();
  LRIS_EXPECTS(n > 0, "nccl_group::broadcast: the group was aborted");
  LRIS_EXPECTS(buffers.size() == n && streams.size() == n && root < n,
               "nccl_group::broadcast: {} buffers and {} streams for {} ranks, root {}",
               buffers.size(), streams.size(), n, root);
  if (const nccl_result r = lib_->group_start(); r != 0) {
    throw device_error(fmt::format("{}: ncclGroupStart: {}", lib_->name, lib_->message(r)), r);
  }
  nccl_result first = 0;
  std::size_t at = 0;
  for (std::size_t d = 0; d < n; ++d) {
    // The send buffer is read at the root only, where it is the receive buffer too.
    const nccl_result r = lib_->broadcast(buffers[d], buffers[d], bytes, nccl_uint8,
                                          static_cast<int>(root), comms_[d], streams[d]);
    if (r != 0 && first == 0) {
      first = r;
      at = d;
    }
  }
  const nccl_result end = lib_->group_end();
  if (first != 0 || end != 0) {
    const nccl_result r = first != 0 ? first : end;
    throw device_error(
        first != 0
            ? fmt::format("{}: broadcast of {} bytes from device {} to device {}: {}", lib_->name,
                          bytes, devices_[root], devices_[at], lib_->message(r, comms_[at]))
            : fmt::format("{}: broadcast of {} bytes from device {} to devices {}: "
                          "ncclGroupEnd: {}", lib_->name, bytes, devices_[root],
                          fmt::join(devices_, ", "), lib_->message(r)),
        r);
  }
}

std::optional<nccl_group::comm_error> nccl_group::async_error() const {
  for (std::size_t d = 0; d < comms_.size(); ++d) {
    nccl_result e = 0;
    if (lib_->async_error(comms_[d], &e) == 0 && e != 0 && e != nccl_in_progress) {
      return comm_error{d, lib_->message(e, comms_[d], false)};
    }
  }
  return std::nullopt;
}

void nccl_group::abort() noexcept {
  for (void* c : comms_) {
    if (c != nullptr) lib_->abort(c);
  }
  comms_.clear();
}

}  // namespace lris::fanout
