// lris stream on a CUDA device: each layer's products are cuBLAS GEMMs (bf16 in, fp32
// accumulate), cuBLAS loaded at run time (like NVML: the build needs neither its headers nor
// its library); device memory in use is read with cudaMemGetInfo.
#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <lris/cuda.hpp>
#include <lris/cuda/cuda_try.hpp>

#include "measure.hpp"
#include "stream_run.hpp"

namespace lris::tool {

namespace {

// The few cuBLAS entry points used, with the values of its enums that they take.
class cublas {
 public:
  explicit cublas(const std::string& path) {
    std::vector<std::string> names;
    if (!path.empty()) names.push_back(path);
    for (const char* n : {"libcublas.so.13", "libcublas.so.12", "libcublas.so",
                          "/usr/local/cuda/lib64/libcublas.so.13",
                          "/usr/local/cuda/lib64/libcublas.so.12"}) {
      names.emplace_back(n);
    }
    std::string tried;
    for (const auto& n : names) {
      lib_ = dlopen(n.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (lib_ != nullptr) break;
      tried += (tried.empty() ? "" : ", ") + n;
    }
    if (lib_ == nullptr) {
      throw unsupported(fmt::format("lris stream: cuBLAS is not found (tried {}); pass --cublas "
                                  "PATH", tried));
    }
    create_ = sym<create_fn>("cublasCreate_v2");
    destroy_ = sym<destroy_fn>("cublasDestroy_v2");
    set_stream_ = sym<set_stream_fn>("cublasSetStream_v2");
    set_workspace_ = sym<set_workspace_fn>("cublasSetWorkspace_v2");
    gemm_ = sym<gemm_fn>("cublasGemmEx");
    check(create_(&handle_), "cublasCreate");
  }
  ~cublas() {
    if (handle_ != nullptr) destroy_(handle_);
    if (lib_ != nullptr) dlclose(lib_);
  }
  cublas(const cublas&) = delete;
  cublas& operator=(const cublas&) = delete;

  void set_stream(cudaStream_t s) { check(set_stream_(handle_, s), "cublasSetStream"); }
  // cuBLAS works in this memory only: nothing is allocated after warm-up.
  void set_workspace(void* p, std::size_t bytes) {
    check(set_workspace_(handle_, p, bytes), "cublasSetWorkspace");
  }
  // Y[n x m] = X[n x k] W[m x k]^T, all row-major bf16, fp32 accumulation.
  void gemm_bf16(int m, int n, int k, const void* w, const void* x, void* y) {
    const float one = 1, zero = 0;
    check(gemm_(handle_, op_t, op_n, m, n, k, &one, w, r_16bf, k, x, r_16bf, k, &zero, y,
                r_16bf, m, compute_32f, gemm_default),
          "cublasGemmEx");
  }

 private:
  using handle_t = void*;
  using create_fn = int (*)(handle_t*);
  using destroy_fn = int (*)(handle_t);
  using set_stream_fn = int (*)(handle_t, cudaStream_t);
  using set_workspace_fn = int (*)(handle_t, void*, std::size_t);
  using gemm_fn = int (*)(handle_t, int, int, int, int, int, const void*, const void*, int, int,
                          const void*, int, int, const void*, void*, int, int, int, int);
  static constexpr int op_n = 0, op_t = 1, r_16bf = 14, compute_32f = 68, gemm_default = -1;

  template <class F>
  F sym(const char* name) {
    void* f = dlsym(lib_, name);
    if (f == nullptr) throw unsupported(fmt::format("lris stream: cuBLAS has no {}", name));
    return reinterpret_cast<F>(f);
  }
  static void check(int status, const char* call) {
    if (status != 0) throw error(fmt::format("lris stream: {} failed (cuBLAS status {})", call, status));
  }

  void* lib_ = nullptr;
  handle_t handle_ = nullptr;
  create_fn create_ = nullptr;
  destroy_fn destroy_ = nullptr;
  set_stream_fn set_stream_ = nullptr;
  set_workspace_fn set_workspace_ = nullptr;
  gemm_fn gemm_ = nullptr;
};

}  // namespace

int run_stream_cuda(stream_options o, int device) {
  if (o.hidden == 0) o.hidden = 8192;
  if (o.intermediate == 0) o.intermediate = 28672;
  if (o.kv_dim == 0) o.kv_dim = 1024;
  if (o.model_bytes == 0) o.model_bytes = std::uint64_t{64} << 30;
  if (o.budgets.empty()) o.budgets = {std::uint64_t{24} << 30};
  const auto shapes = layer_shapes(o);
  cuda_backend gpu(device);
  stream_device<cuda_backend> dev{gpu, fmt::format("cuda:{}", device), {}, 32768, {}, {}};
  std::uint64_t widest = 0;
  for (const auto& w : shapes) widest = std::max({widest, w.in, w.out});
  // Activations in and out, and cuBLAS's workspace: allocated before the runs.
  const std::size_t act = dev.max_tokens * widest * 2, workspace = std::size_t{64} << 20;
  auto* x = gpu.allocate_device(act);
  auto* y = gpu.allocate_device(act);
  auto* ws = gpu.allocate_device(workspace);
  LRIS_CUDA_TRY(cudaMemset(x, 0, act));
  struct frees {
    cuda_backend& gpu;
    void *x, *y, *ws;
    std::size_t act, workspace;
    ~frees() {
      gpu.deallocate_device(x, act);
      gpu.deallocate_device(y, act);
      gpu.deallocate_device(ws, workspace);
    }
  } owner{gpu, x, y, ws, act, workspace};
  auto blas = std::make_shared<cublas>(o.cublas);
  blas->set_workspace(ws, workspace);
  dev.compute = [blas, shapes, x, y](const std::vector<std::byte*>& w, std::uint64_t tokens,
                                     cuda_backend::stream& s) {
    blas->set_stream(static_cast<cudaStream_t>(s.native()));
    for (std::size_t i = 0; i < w.size(); ++i) {
      blas->gemm_bf16(static_cast<int>(shapes[i].out), static_cast<int>(tokens),
                      static_cast<int>(shapes[i].in), w[i], x, y);
    }
  };
  dev.used_device_bytes = [device] {
    std::size_t free = 0, total = 0;
    LRIS_CUDA_TRY_ON(device, cudaMemGetInfo(&free, &total));
    return static_cast<std::int64_t>(total - free);
  };
  dev.link_ceiling = [&gpu] {
    const std::size_t n = std::size_t{1} << 30;
    auto* src = gpu.allocate_pinned(n);
    auto* dst = gpu.allocate_device(n);
    std::memset(src, 1, n);
    auto s = gpu.make_stream();
    double gbps = 0;  // the best of three medians: the first copies from new pages run slower
    for (int i = 0; i < 3; ++i) {
      gbps = std::max(gbps, measure_gbps(n, [&] {
        gpu.copy_async(dst, src, n, copy_kind::host_to_device, s);
        gpu.synchronize(s);
      }, 5, 0.2));
    }
    gpu.deallocate_device(dst, n);
    gpu.deallocate_pinned(src, n);
    return gbps;
  };
  return run_stream(o, dev);
}

}  // namespace lris::tool
