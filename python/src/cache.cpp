// lris.Cache over cache::residency_manager: of a CUDA device, or of the host backend ("cpu",
// where a lease's memory is host memory, for NumPy and for tests without a GPU). The manager
// is reached through cache_core, so that one Python class serves both backends.
#include "cache.hpp"

#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <unistd.h>

#include <dlpack/dlpack.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <regex>
#include <shared_mutex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <lris/cache/pool_units.hpp>
#include <lris/cache/residency_manager.hpp>
#include <lris/formats/dlpack.hpp>
#include <lris/lris.hpp>
#if LRIS_PYTHON_CUDA
#include <lris/cuda.hpp>
#endif

#include "args.hpp"
#include "device_name.hpp"
#include "dlpack_import.hpp"
#include "dtype_names.hpp"
#include "gil.hpp"
#include "host_pool.hpp"
#include "py_tensor.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace lris::python {
namespace {

using cache::unit_id;

// A tensor of a unit as Python gave it: its name, type and shape.
struct unit_tensor_info {
  std::string name;
  dtype type = dtype::U8;
  std::vector<std::uint64_t> shape;
  std::uint64_t bytes = 0;
};

// A tensor to add: where its bytes are now.
struct unit_source {
  unit_tensor_info info;
  const std::byte* data = nullptr;
  DLDevice device{};
};

struct lease_base {
  virtual ~lease_base() = default;
};

// What Python asks of a cache, whatever its backend. Calls hold `life_` shared (close() holds
// it alone), and the GIL is released around them by the caller.
class cache_core {
 public:
  virtual ~cache_core() = default;
  [[nodiscard]] virtual std::string device() const = 0;
  [[nodiscard]] virtual safetensors::tensor_location location() const = 0;
  virtual unit_id add(std::string name, const std::vector<unit_source>& tensors) = 0;
  // Units of `pool`'s tensors, brought in from it (cache::add_pool_units); the pool is kept
  // for as long as the manager.
  virtual std::vector<unit_id> add_pool(std::shared_ptr<pool::host_pool> pool,
                                        const std::function<std::string(std::string_view)>& unit_of) = 0;
  virtual void order(std::vector<unit_id> units, bool cyclic, std::uint64_t lookahead) = 0;
  virtual std::unique_ptr<lease_base> acquire(unit_id u, void* stream) = 0;
  virtual void release(lease_base& l, void* stream) = 0;
  // Device addresses of the lease's `n` tensors.
  [[nodiscard]] virtual std::vector<std::byte*> addresses(const lease_base& l, std::size_t n) const = 0;
  virtual void pin(unit_id u) = 0;
  virtual void sleep() = 0;
  virtual void wake() = 0;
  [[nodiscard]] virtual bool asleep() const = 0;
  [[nodiscard]] virtual std::byte* arena() const = 0;
  [[nodiscard]] virtual cache::residency_stats stats() = 0;
  [[nodiscard]] virtual cache::unit_stats stats(unit_id u) = 0;
  [[nodiscard]] virtual std::optional<unit_id> find(const std::string& name) const = 0;
  [[nodiscard]] virtual bool resident(unit_id u) const = 0;
  // An event recorded on `stream` now (none for a cache of host memory), and a wait of
  // `stream` for one: a lease's tensors handed to a consumer on another stream.
  [[nodiscard]] virtual std::shared_ptr<void> mark(void* stream) = 0;
  virtual void wait_mark(const std::shared_ptr<void>& mark, void* stream) = 0;
  // What keeps the cache's memory (the manager) alive for a tensor exported over it.
  [[nodiscard]] virtual std::shared_ptr<void> keepalive() const = 0;
  [[nodiscard]] virtual std::uint64_t unit_bytes(unit_id u) const = 0;
  virtual void close() = 0;

  std::uint64_t budget = 0;
  std::optional<std::uint64_t> lookahead;  // none: two of the largest unit in the order
  std::vector<std::string> unit_names;
  std::vector<std::vector<unit_tensor_info>> unit_tensors;  // by unit id
  mutable std::shared_mutex life;
};

std::string unit_text(const cache_core& c, unit_id u) {
  return u < c.unit_names.size() ? fmt::format("unit {} (\"{}\")", u, c.unit_names[u])
                                 : fmt::format("unit {}", u);
}

template <class Backend>
class cache_of final : public cache_core {
  using manager = cache::residency_manager<Backend>;
  static constexpr bool on_host = std::is_same_v<Backend, host_backend>;

  struct lease_of final : lease_base {
    typename manager::lease l;
  };
  // The manager, shared with the tensors exported over its memory: it goes with the last of
  // them, after waiting for the copies and released uses (sleep) where nothing is leased.
  // In a child forked from the process that made it, its prefetch thread and device memory are
  // not there: waiting for them would never end, so it is left as it is (the child's copy of
  // its memory goes with the child).
  struct owned_manager {
    std::vector<std::shared_ptr<void>> pools;  // of units kept in them: outlive the manager
    std::unique_ptr<manager> m;
    pid_t made_in = ::getpid();
    [[nodiscard]] bool forked() const noexcept { return ::getpid() != made_in; }
    ~owned_manager() {
      if (forked()) {
        (void)m.release();
        for (auto& p : pools) new std::shared_ptr<void>(std::move(p));  // theirs too
        return;
      }
      try {
        if (m && !m->asleep()) m->sleep();
      } catch (...) {  // leased still, or a lost device: the manager frees what it holds
      }
    }
  };

 public:
  cache_of(Backend be, cache::residency_options o) : be_(be) {
    m_ = std::make_shared<owned_manager>();
    m_->m = std::make_unique<manager>(be_, std::move(o));
    if constexpr (on_host) own_.emplace(be_.make_stream());
  }
  ~cache_of() override {
    try {
      close();
    } catch (...) {  // the device is gone: nothing more to wait for
    }
  }

  [[nodiscard]] std::string device() const override {
    return on_host ? std::string("cpu") : fmt::format("{}:{}", Backend::name, be_.device());
  }
  [[nodiscard]] safetensors::tensor_location location() const override {
    if constexpr (on_host) return {};
    return {true, Backend::name, be_.device()};
  }

  unit_id add(std::string name, const std::vector<unit_source>& tensors) override {
    std::vector<typename manager::tensor_size> sizes;
    for (const auto& t : tensors) sizes.push_back({t.info.name, t.info.bytes});
    auto draft = live().draft_unit(name, sizes);
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      const unit_source& t = tensors[i];
      if (t.info.bytes == 0) continue;
      if (t.device.device_type == kDLCUDA) {
#if LRIS_PYTHON_CUDA
        lris::copy(as_host(draft.tensor(i), t.info.bytes),
                   memory_span<device_space<cuda_backend>, const std::byte>(
                       t.data, t.info.bytes, t.device.device_id)).wait();
#endif
      } else {
        lris::copy(as_host(draft.tensor(i), t.info.bytes), as_host(t.data, t.info.bytes)).wait();
      }
    }
    return live().add_unit(std::move(draft));
  }

  std::vector<unit_id> add_pool(std::shared_ptr<pool::host_pool> pool,
                                const std::function<std::string(std::string_view)>& unit_of) override {
    auto ids = cache::add_pool_units(live(), *pool, unit_of);
    if (!ids.empty()) m_->pools.push_back(std::move(pool));
    return ids;
  }

  void order(std::vector<unit_id> units, bool cyclic, std::uint64_t lookahead) override {
    live().declare_order(std::move(units), cyclic, lookahead);
  }

  std::unique_ptr<lease_base> acquire(unit_id u, void* stream) override {
    auto l = std::make_unique<lease_of>();
    if constexpr (on_host) {
      l->l = live().acquire(u, *own_);
      be_.synchronize(*own_);  // the bytes are there when Python reads them
    } else {
      auto s = Backend::borrow_stream(stream);
      l->l = live().acquire(u, s);
    }
    return l;
  }

  void release(lease_base& base, void* stream) override {
    auto& l = static_cast<lease_of&>(base);
    if constexpr (on_host) {
      live().release(std::move(l.l), *own_);
    } else {
      auto s = Backend::borrow_stream(stream);
      live().release(std::move(l.l), s);
    }
  }

  [[nodiscard]] std::vector<std::byte*> addresses(const lease_base& base, std::size_t n) const override {
    const auto& l = static_cast<const lease_of&>(base);
    std::vector<std::byte*> out;
    for (std::size_t i = 0; i < n; ++i) out.push_back(l.l.tensor(i));
    return out;
  }

  [[nodiscard]] std::shared_ptr<void> mark(void* stream) override {
    if constexpr (on_host) {
      return nullptr;
    } else {
      auto e = std::make_shared<typename Backend::event>(be_.make_event());
      auto s = Backend::borrow_stream(stream);
      be_.record(*e, s);
      return e;
    }
  }
  void wait_mark(const std::shared_ptr<void>& mark, void* stream) override {
    if constexpr (!on_host) {
      if (!mark) return;
      auto s = Backend::borrow_stream(stream);
      be_.wait(s, *static_cast<typename Backend::event*>(mark.get()));
    }
  }

  void pin(unit_id u) override { live().pin(u); }
  void sleep() override {
    const long exports = m_ ? m_.use_count() - 1 : 0;
    if (exports > 0) {
      throw invalid_argument(fmt::format(
          "lris.Cache on {}: sleep() while {} tensor{} over the cache's memory {} alive (lease "
          "tensors, arena(), their DLPack exports): drop them first, sleep frees that memory",
          device(), exports, exports == 1 ? "" : "s", exports == 1 ? "is" : "are"));
    }
    live().sleep();
  }
  void wake() override { live().wake(); }
  [[nodiscard]] bool asleep() const override { return live().asleep(); }
  [[nodiscard]] std::byte* arena() const override { return live().arena(); }
  [[nodiscard]] cache::residency_stats stats() override { return live().stats(); }
  [[nodiscard]] cache::unit_stats stats(unit_id u) override { return live().stats(u); }
  [[nodiscard]] std::optional<unit_id> find(const std::string& name) const override {
    return live().find(name);
  }
  [[nodiscard]] bool resident(unit_id u) const override { return live().resident(u); }
  [[nodiscard]] std::shared_ptr<void> keepalive() const override {
    (void)live();  // throws when closed
    return m_;
  }
  [[nodiscard]] std::uint64_t unit_bytes(unit_id u) const override { return live().unit_bytes(u); }

  // Waits for every copy and every released use, then frees the device and pinned memory;
  // while tensors exported over that memory live, it goes with the last of them instead.
  void close() override {
    if (!m_) return;
    if (!m_->forked() && m_.use_count() == 1 && !m_->m->asleep()) {
      m_->m->sleep();  // throws while leased: open
    }
    m_.reset();
  }

 private:
  manager& live() const {
    if (!m_) throw invalid_argument(fmt::format("lris.Cache on {}: closed", device()));
    if (m_->forked()) {
      throw invalid_argument(fmt::format(
          "lris.Cache on {}: made in process {}; this one ({}) is a child forked from it, "
          "where the cache's threads and device memory are not: make a Cache in this process",
          device(), m_->made_in, ::getpid()));
    }
    return *m_->m;
  }
  Backend be_;
  std::shared_ptr<owned_manager> m_;
  std::optional<typename Backend::stream> own_;  // host: the stream leases are taken on
};

// ---- Python side ----------------------------------------------------------------------------

struct py_cache {
  std::shared_ptr<cache_core> core;
};

struct py_lease {
  std::shared_ptr<cache_core> core;
  std::unique_ptr<lease_base> l;
  unit_id unit = 0;
  void* stream = nullptr;  // acquired on
  std::vector<std::byte*> addresses;
  // Recorded on `stream` when a tensor of the lease is first exported (after the acquire's
  // wait there, so after the unit's copy): a consumer on another stream waits for it. Not made
  // for leases used through their addresses (lris.torch.stream): no event per acquire.
  std::shared_ptr<void> ready;

  py_lease() = default;
  py_lease(py_lease&&) = default;
  py_lease& operator=(py_lease&&) = default;
  // A lease Python dropped unreleased is released on the stream it was acquired on (one that
  // is gone fails quietly: its unit then stays resident until the cache goes).
  ~py_lease() {
    if (!l || !core) return;
    try {
      std::shared_lock hold(core->life);
      core->release(*l, stream);
    } catch (...) {
    }
  }
  void check(const char* what) const {
    if (!l) {
      throw invalid_argument(fmt::format("lris.CacheLease of {}: {} after release()",
                                         unit_text(*core, unit), what));
    }
  }
};

// A stream as Python names it: None (the legacy default stream), an int (a cudaStream_t),
// or an object with a `cuda_stream` (torch.cuda.Stream) or `ptr` (cupy.cuda.Stream) handle.
void* stream_of(const cache_core& c, nb::handle s) {
  if (s.is_none()) return nullptr;
  if (!c.location().device) {
    throw invalid_argument(fmt::format("lris.Cache on {}: a stream was given; a cache of host "
                                       "memory takes none", c.device()));
  }
  nb::handle h = s;
  nb::object attr;
  if (nb::hasattr(s, "cuda_stream")) {
    attr = s.attr("cuda_stream");
    h = attr;
  } else if (nb::hasattr(s, "ptr")) {
    attr = s.attr("ptr");
    h = attr;
  }
  if (!nb::isinstance<nb::int_>(h)) {
    throw invalid_argument(fmt::format("lris.Cache on {}: stream {} is neither None, an int "
                                       "handle nor a stream object", c.device(),
                                       nb::repr(s).c_str()));
  }
  return reinterpret_cast<void*>(nb::cast<std::uintptr_t>(h));
}

unit_id unit_of(const cache_core& c, nb::handle u) {
  if (nb::isinstance<nb::str>(u)) {
    const auto name = nb::cast<std::string>(u);
    for (std::size_t i = 0; i < c.unit_names.size(); ++i) {
      if (c.unit_names[i] == name) return static_cast<unit_id>(i);
    }
    throw invalid_argument(fmt::format("lris.Cache on {}: no unit called \"{}\"", c.device(), name));
  }
  long long i = -1;
  if (!nb::try_cast(u, i)) {
    throw invalid_argument(fmt::format("lris.Cache on {}: unit {} is neither a unit's name nor "
                                       "its number", c.device(), nb::repr(u).c_str()));
  }
  if (i < 0 || static_cast<unsigned long long>(i) >= c.unit_names.size()) {
    throw invalid_argument(fmt::format("lris.Cache on {}: unit {} does not exist ({} unit{})",
                                       c.device(), i, c.unit_names.size(),
                                       c.unit_names.size() == 1 ? "" : "s"));
  }
  return static_cast<unit_id>(i);
}

dtype dtype_of_dlpack(const std::string& unit, const std::string& name, DLDataType t) {
  if (t.lanes == 1) {
    for (const auto& [d, n] : dtype_names) {
      const DLDataType x = safetensors::dlpack_dtype(d);
      if (x.code == t.code && x.bits == t.bits) return d;
    }
  }
  throw unsupported(fmt::format("lris.Cache.add(\"{}\"): tensor \"{}\" has DLPack type (code "
                                "{}, {} bits, {} lanes), which LRIS has no dtype for", unit, name,
                                t.code, t.bits, t.lanes));
}

nb::dict stats_dict(const cache::residency_stats& s) {
  nb::dict d;
  d["acquires"] = s.acquires;
  d["hit_bytes"] = s.hit_bytes;
  d["miss_bytes"] = s.miss_bytes;
  d["prefetched_bytes"] = s.prefetched_bytes;
  d["prefetch_hit_bytes"] = s.prefetch_hit_bytes;
  d["evictions"] = s.evictions;
  d["evicted_bytes"] = s.evicted_bytes;
  d["high_water_bytes"] = s.high_water_bytes;
  d["budget_bytes"] = s.budget_bytes;
  d["pinned_host_bytes"] = s.pinned_host_bytes;
  d["sleeps"] = s.sleeps;
  d["woken_bytes"] = s.woken_bytes;
  d["stall_seconds"] = s.stall_seconds;
  d["stalls"] = s.stalls;
  return d;
}

std::shared_ptr<cache_core> make_cache(const std::string& device, std::uint64_t budget,
                                       std::size_t alignment, bool broker) {
  const auto [kind, index] = parse_device(device);
  cache::residency_options o;
  o.budget_bytes = budget;
  o.alignment = alignment;
  if (broker) o.broker = default_context()->broker();
  if (kind == "cpu") return std::make_shared<cache_of<host_backend>>(host_backend(index), o);
#if LRIS_PYTHON_CUDA
  if (kind == "cuda") return std::make_shared<cache_of<cuda_backend>>(cuda_backend(index), o);
#endif
  throw unsupported(fmt::format("lris.Cache(device=\"{}\"): not a device of this build (cpu{})",
                                device, LRIS_PYTHON_CUDA ? ", cuda:N" : ""));
}

// Runs `f(core)` with the GIL released and the cache held open.
template <class F>
auto locked(const std::shared_ptr<cache_core>& c, F&& f) {
  gil_released nogil;
  std::shared_lock hold(c->life);
  return f(*c);
}

unit_id add(py_cache& self, const std::string& name, nb::handle tensors) {
  cache_core& c = *self.core;
  if (!nb::isinstance<nb::dict>(tensors)) {
    throw invalid_argument(fmt::format("lris.Cache.add(\"{}\"): tensors must be a dict of name "
                                       "to tensor (objects with __dlpack__)", name));
  }
  consumer_stream consumer;
  taken all;
  std::vector<unit_source> sources;
  for (auto [k, v] : nb::cast<nb::dict>(tensors)) {
    const auto tname = arg_as<std::string>(k, fmt::format("lris.Cache.add(\"{}\")", name),
                                           "a tensor's name", "a str");
    const destination& d = all.by_name.emplace(
        tname, take("lris.Cache.add", tname, v, consumer)).first->second;
    if (!d.compact) {
      throw invalid_argument(fmt::format("lris.Cache.add(\"{}\"): tensor \"{}\" is not "
                                         "contiguous (row-major without gaps)", name, tname));
    }
    const bool host = d.device.device_type == kDLCPU || d.device.device_type == kDLCUDAHost;
    if (!host && !(LRIS_PYTHON_CUDA && d.device.device_type == kDLCUDA)) {
      throw unsupported(fmt::format("lris.Cache.add(\"{}\"): tensor \"{}\" is on DLPack device "
                                    "({}, {}), which this build cannot copy from", name, tname,
                                    static_cast<int>(d.device.device_type), d.device.device_id));
    }
    unit_source s;
    s.info.name = tname;
    s.info.type = dtype_of_dlpack(name, tname, d.type);
    for (const auto n : d.shape) s.info.shape.push_back(static_cast<std::uint64_t>(n));
    s.info.bytes = d.bytes;
    if (host) {  // copied by the CPU: memory it could fault on refused here
      refuse_unreachable("lris.Cache.add", tname, d, s.info.bytes,
                         probe_ends(d.data, s.info.bytes, false), false);
    }
    s.data = d.data;
    s.device = d.device;
    sources.push_back(std::move(s));
  }
  const unit_id u = locked(self.core, [&](cache_core& core) {
    consumer.wait();  // the producers' work on GPU sources, done
    return core.add(name, sources);
  });
  std::vector<unit_tensor_info> infos;
  for (auto& s : sources) infos.push_back(std::move(s.info));
  // Under the GIL again, by the id the manager gave: adds of other threads may have come back
  // first. Readers of these (under the GIL) see a unit only after its add returned.
  if (c.unit_names.size() <= u) {
    c.unit_names.resize(u + 1);
    c.unit_tensors.resize(u + 1);
  }
  c.unit_names[u] = name;
  c.unit_tensors[u] = std::move(infos);
  return u;
}

// Units of a host pool's ready tensors, named by `group`'s first capture group (a tensor it
// does not match is left out); their metadata in the order add_pool_units makes them.
std::vector<unit_id> add_pool(py_cache& self, py_pool& pool, const std::string& group) {
  cache_core& c = *self.core;
  const std::regex re = safetensors::detail::name_regex(group, "lris.Cache.add_pool: group");
  if (re.mark_count() < 1) {
    throw invalid_argument(fmt::format("lris.Cache.add_pool: group \"{}\" has no capture group "
                                       "(the unit's name), e.g. \"^(model\\.layers\\.\\d+)\\.\"",
                                       group));
  }
  const auto unit_of = [&re](std::string_view name) {
    std::match_results<std::string_view::const_iterator> m;
    return std::regex_search(name.begin(), name.end(), m, re) ? m[1].str() : std::string();
  };
  const auto held = pool.hold();
  std::vector<std::pair<std::string, std::vector<unit_tensor_info>>> units;
  for (const auto& t : held->tensors()) {
    const std::string u = unit_of(t.name);
    if (u.empty()) continue;
    auto it = std::find_if(units.begin(), units.end(), [&](const auto& x) { return x.first == u; });
    if (it == units.end()) it = units.insert(units.end(), {u, {}});
    it->second.push_back({std::string(t.name), t.type, t.shape, t.bytes});
  }
  const auto ids = locked(self.core, [&](cache_core& core) { return core.add_pool(held, unit_of); });
  for (std::size_t k = 0; k < ids.size() && k < units.size(); ++k) {
    if (c.unit_names.size() <= ids[k]) {
      c.unit_names.resize(ids[k] + 1);
      c.unit_tensors.resize(ids[k] + 1);
    }
    c.unit_names[ids[k]] = units[k].first;
    c.unit_tensors[ids[k]] = std::move(units[k].second);
  }
  return ids;
}

void order(py_cache& self, nb::handle units, bool cyclic) {
  cache_core& c = *self.core;
  std::vector<unit_id> ids;
  std::uint64_t largest = 0;
  for (nb::handle u : units) {
    ids.push_back(unit_of(c, u));
    std::uint64_t bytes = 0;
    for (const auto& t : c.unit_tensors[ids.back()]) bytes += t.bytes;
    largest = std::max(largest, bytes);
  }
  const std::uint64_t lookahead = c.lookahead.value_or(2 * largest);
  locked(self.core, [&](cache_core& core) { core.order(std::move(ids), cyclic, lookahead); });
}

py_lease acquire(py_cache& self, nb::handle unit, nb::handle stream) {
  py_lease l;
  l.core = self.core;
  l.unit = unit_of(*self.core, unit);
  l.stream = stream_of(*self.core, stream);
  const std::size_t n = self.core->unit_tensors[l.unit].size();  // read under the GIL
  locked(self.core, [&](cache_core& core) {
    l.l = core.acquire(l.unit, l.stream);
    l.addresses = core.addresses(*l.l, n);
  });
  return l;
}

void release(py_lease& self, nb::handle stream) {
  self.check("release()");
  void* s = stream.is_none() ? self.stream : stream_of(*self.core, stream);
  locked(self.core, [&](cache_core& core) { core.release(*self.l, s); });
  self.l.reset();
}

nb::object lease_tensor(py_lease& self, nb::handle key) {
  self.check("a tensor");
  const auto& infos = self.core->unit_tensors[self.unit];
  std::size_t i = infos.size();
  if (nb::isinstance<nb::str>(key)) {
    const auto name = nb::cast<std::string>(key);
    for (std::size_t k = 0; k < infos.size(); ++k) {
      if (infos[k].name == name) i = k;
    }
    if (i == infos.size()) {
      throw nb::key_error(fmt::format("{} has no tensor \"{}\"", unit_text(*self.core, self.unit),
                                      name).c_str());
    }
  } else {
    long long k = -1;
    if (!nb::try_cast(key, k)) {
      throw nb::key_error(fmt::format("{} has no tensor {}: a tensor is asked for by its name or "
                                      "its number", unit_text(*self.core, self.unit),
                                      nb::repr(key).c_str()).c_str());
    }
    if (k < 0 || static_cast<std::size_t>(k) >= infos.size()) {
      throw nb::index_error(fmt::format("{} has {} tensors; no tensor {}",
                                        unit_text(*self.core, self.unit), infos.size(), k).c_str());
    }
    i = static_cast<std::size_t>(k);
  }
  safetensors::loaded_tensor t;
  t.name = infos[i].name;
  t.type = infos[i].type;
  t.shape = infos[i].shape;
  t.bytes = infos[i].bytes;
  t.data = self.addresses[i];
  t.location = self.core->location();
  // The cache's memory stays while the tensor does; its bytes are the unit's until release().
  t.lease = locked(self.core, [](cache_core& core) { return core.keepalive(); });
  py_tensor out(std::move(t));
  if (!self.ready) self.ready = self.core->mark(self.stream);
  if (self.ready) {  // a consumer on another stream waits for the unit's copy, on the device
    out.before_use = [core = self.core, ready = self.ready, on = self.stream](void* consumer) {
      if (consumer != on) core->wait_mark(ready, consumer);
    };
  }
  return nb::cast(std::move(out));
}

nb::tuple offsets_of(const py_lease& self) {
  self.check("offsets");
  std::byte* base = locked(self.core, [](cache_core& c) { return c.arena(); });
  nb::list l;
  for (std::byte* a : self.addresses) l.append(static_cast<std::uint64_t>(a - base));
  return nb::tuple(l);
}

}  // namespace

void register_cache(nb::module_& m) {
  nb::class_<py_lease>(m, "CacheLease",
                       "A unit in the cache's device memory, for work queued on the stream it "
                       "was acquired on from then on. Its tensors' bytes are the unit's until "
                       "release(); use it as a context manager, or release() it on the last "
                       "stream that used it.")
      .def_prop_ro("unit", [](const py_lease& l) { return l.unit; })
      .def_prop_ro("name", [](const py_lease& l) { return l.core->unit_names[l.unit]; })
      .def_prop_ro("held", [](const py_lease& l) { return static_cast<bool>(l.l); })
      .def_prop_ro("addresses",
                   [](const py_lease& l) {
                     l.check("addresses");
                     nb::list a;
                     for (std::byte* p : l.addresses) a.append(reinterpret_cast<std::uintptr_t>(p));
                     return nb::tuple(a);
                   },
                   "The device address of each tensor, in the order the unit was added.")
      .def_prop_ro("offsets", &offsets_of,
                   "Each tensor's place in Cache.arena(), in bytes, in the order added.")
      .def("__len__", [](const py_lease& l) { return l.core->unit_tensors[l.unit].size(); })
      .def("__getitem__", &lease_tensor, "key"_a,
           "Tensor `key` (its name or index) as an lris.Tensor over the cache's memory.")
      .def("release", &release, "stream"_a = nb::none(),
           "Ends the lease: work queued on `stream` (default: the one it was acquired on) so far "
           "is the unit's last use; an eviction waits for it.")
      .def("__enter__", [](nb::handle self) { return nb::borrow(self); })
      .def("__exit__", [](py_lease& l, nb::args) {
        if (l.l) release(l, nb::none());
      });

  nb::class_<py_cache>(m, "_Cache")
      .def("__init__",
           [](py_cache* self, const std::string& device, std::uint64_t budget,
              std::optional<std::uint64_t> lookahead, std::size_t alignment, bool broker) {
             std::shared_ptr<cache_core> c;
             {
               gil_released nogil;
               c = make_cache(device, budget, alignment, broker);
             }
             c->budget = c->stats().budget_bytes;  // rounded down to the alignment
             c->lookahead = lookahead;
             new (self) py_cache{std::move(c)};
           },
           "device"_a, "budget"_a, "lookahead"_a = nb::none(), "alignment"_a = 256,
           "broker"_a = true)
      .def_prop_ro("device", [](const py_cache& c) { return c.core->device(); })
      .def_prop_ro("budget", [](const py_cache& c) { return c.core->budget; })
      .def_prop_ro("lookahead", [](const py_cache& c) { return c.core->lookahead; })
      .def_prop_ro("units", [](const py_cache& c) { return c.core->unit_names; })
      .def("add", &add, "name"_a, "tensors"_a,
           "Adds a unit: the tensors' bytes (a dict of name to object with __dlpack__, on the "
           "host or a GPU) copied into pinned host memory. Returns its id.")
      .def("add_pool", &add_pool, "pool"_a, "group"_a,
           "Adds a unit for each name `group` (a regular expression; its first capture group "
           "is the unit's name) gives the ready tensors of `pool` (an lris.HostPool), brought "
           "in from the pool's shared memory with no copy of the cache's own. Returns their ids "
           "in the order of their first tensor.")
      .def("tensors",
           [](const py_cache& c, nb::handle unit) {
             const auto& infos = c.core->unit_tensors[unit_of(*c.core, unit)];
             nb::list l;
             for (const auto& t : infos) {
               nb::list shape;
               for (const auto d : t.shape) shape.append(d);
               l.append(nb::make_tuple(t.name, dtype_name(t.type), nb::tuple(shape), t.bytes));
             }
             return l;
           },
           "unit"_a, "The unit's tensors: (name, dtype, shape, nbytes), in the order added.")
      .def("order", &order, "units"_a, "cyclic"_a = true,
           "Declares the order units are acquired in (a cycle: a model's passes): each acquire "
           "brings in the units after it, up to the lookahead in bytes.")
      .def("acquire", &acquire, "unit"_a, "stream"_a = nb::none(),
           "Unit `unit` (its id or name) in device memory for work queued on `stream` from now "
           "on (None: the legacy default stream; an int handle, torch.cuda.Stream or "
           "cupy.cuda.Stream): the stream waits for its copy, the host never does.")
      .def("pin", [](py_cache& c, nb::handle u) {
        const unit_id id = unit_of(*c.core, u);
        locked(c.core, [&](cache_core& core) { core.pin(id); });
      }, "unit"_a, "Keeps the unit resident once it is in.")
      .def("resident", [](py_cache& c, nb::handle u) {
        const unit_id id = unit_of(*c.core, u);
        return locked(c.core, [&](cache_core& core) { return core.resident(id); });
      }, "unit"_a)
      .def("unit_bytes", [](py_cache& c, nb::handle u) {
        const unit_id id = unit_of(*c.core, u);
        return locked(c.core, [&](cache_core& core) { return core.unit_bytes(id); });
      }, "unit"_a, "The unit's bytes in device memory, its tensors aligned as the cache lays "
         "them out.")
      .def("sleep", [](py_cache& c) { locked(c.core, [](cache_core& core) { core.sleep(); }); },
           "Gives the device memory back; the units stay in pinned host memory.")
      .def("wake", [](py_cache& c) { locked(c.core, [](cache_core& core) { core.wake(); }); },
           "Takes the device memory again and copies the units resident at sleep() back.")
      .def_prop_ro("asleep", [](py_cache& c) {
        return locked(c.core, [](cache_core& core) { return core.asleep(); });
      })
      .def_prop_ro("arena_address", [](py_cache& c) {
        return locked(c.core, [](cache_core& core) {
          return reinterpret_cast<std::uintptr_t>(core.arena());
        });
      }, "The address of the budget's device memory (0 while asleep).")
      .def("arena", [](py_cache& c) {
        safetensors::loaded_tensor t;
        t.name = "arena";
        t.type = dtype::U8;
        t.bytes = c.core->budget;
        t.shape = {c.core->budget};
        t.data = locked(c.core, [](cache_core& core) { return core.arena(); });
        if (t.data == nullptr) {
          throw invalid_argument(fmt::format("lris.Cache on {}: arena() while asleep",
                                             c.core->device()));
        }
        t.location = c.core->location();
        t.lease = locked(c.core, [](cache_core& core) { return core.keepalive(); });
        return py_tensor{std::move(t)};
      }, "The budget's device memory as one uint8 lris.Tensor: a lease's offsets are places "
         "in it. Valid until sleep() or close().")
      .def("stats", [](py_cache& c) {
        return stats_dict(locked(c.core, [](cache_core& core) { return core.stats(); }));
      }, "What the cache did so far: acquires, hit, miss and prefetched bytes, evictions, "
         "stalls and their time, the high-water mark.")
      .def("unit_stats", [](py_cache& c, nb::handle u) {
        const unit_id id = unit_of(*c.core, u);
        const auto s = locked(c.core, [&](cache_core& core) { return core.stats(id); });
        nb::dict d;
        d["acquires"] = s.acquires;
        d["hit_bytes"] = s.hit_bytes;
        d["prefetch_hit_bytes"] = s.prefetch_hit_bytes;
        d["miss_bytes"] = s.miss_bytes;
        d["evictions"] = s.evictions;
        d["stall_seconds"] = s.stall_seconds;
        d["stalls"] = s.stalls;
        return d;
      }, "unit"_a)
      .def("close", [](py_cache& c) {
        gil_released nogil;
        std::unique_lock hold(c.core->life);
        c.core->close();
      }, "Waits for the copies and released uses, then frees the device and pinned memory. "
         "lris.InvalidArgument while a unit is leased.");
}

}  // namespace lris::python
