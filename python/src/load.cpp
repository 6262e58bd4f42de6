// lris.load, and lris._lris.load_start behind lris.torch.load: the load runs on a thread of its
// own, and the caller gets the block its tensors will be in as soon as every tensor has its
// place, so that torch's views of them are made while the bytes are read, not after.
#include "load.hpp"

#include <nanobind/stl/filesystem.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <time.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <lris/formats/verify.hpp>
#include <lris/lris.hpp>
#if LRIS_PYTHON_CUDA
#include <lris/cuda.hpp>
#endif

#include "args.hpp"
#include "device_name.hpp"
#include "dtype_names.hpp"
#include "gil.hpp"
#include "interruptible.hpp"
#include "progress.hpp"
#include "py_tensor.hpp"

namespace nb = nanobind;
using namespace nb::literals;
namespace st = lris::safetensors;

namespace lris::python {
namespace {

// tp=(rank, size) and tp_plan (None or "llama": llama's plan; a dict {pattern: style} in its
// order; another string: a JSON file of one) as the slice of each tensor that rank loads.
std::function<std::optional<st::tensor_slice>(const st::tensor_info&)> tp_slice(
    const std::filesystem::path& path, nb::handle tp, nb::handle tp_plan) {
  if (tp.is_none()) {
    if (!tp_plan.is_none()) {
      throw lris::invalid_argument(fmt::format("lris.load(\"{}\"): tp_plan without tp=(rank, "
                                               "size)", path.string()));
    }
    return {};
  }
  unsigned rank = 0, size = 0;
  bool pair = nb::isinstance<nb::tuple>(tp) || nb::isinstance<nb::list>(tp);
  if (pair && nb::len(tp) == 2) {
    try {
      rank = nb::cast<unsigned>(tp[0]);
      size = nb::cast<unsigned>(tp[1]);
    } catch (const std::exception&) {
      pair = false;
    }
  }
  if (!pair || nb::len(tp) != 2 || size == 0 || rank >= size) {
    throw lris::invalid_argument(fmt::format(
        "lris.load(\"{}\"): tp={} is not (rank, size) with 0 <= rank < size", path.string(),
        nb::cast<std::string>(nb::repr(tp))));
  }
  lris::fanout::sharding plan;
  if (tp_plan.is_none() || (nb::isinstance<nb::str>(tp_plan) &&
                            nb::cast<std::string>(tp_plan) == "llama")) {
    plan = lris::fanout::sharding::llama();
  } else if (nb::isinstance<nb::dict>(tp_plan)) {
    for (auto [k, v] : nb::cast<nb::dict>(tp_plan)) {
      plan.add(nb::cast<std::string>(nb::str(k)), nb::cast<std::string>(nb::str(v)));
    }
  } else if (nb::isinstance<nb::str>(tp_plan)) {
    plan = lris::fanout::sharding::from_file(nb::cast<std::string>(tp_plan));
  } else {
    throw lris::invalid_argument(fmt::format("lris.load(\"{}\"): tp_plan is \"llama\", a dict "
                                             "{{pattern: style}} or a JSON file's path",
                                             path.string()));
  }
  return [plan = std::move(plan), rank, size](const st::tensor_info& t) {
    return plan.slice(t, rank, size);
  };
}


// A load as lris.load's arguments ask for it, parsed under the GIL. run() takes no Python: its
// progress goes to the bridge, whose callable the waiting thread calls.
struct load_call {
  std::filesystem::path path;
  std::string kind;
  int index = 0;
  bool verify = false;
  st::load_options options;
  std::unique_ptr<progress_bridge> bridge;  // options.on_progress refers to it; stops the load

  load_call(const std::filesystem::path& path_, const std::string& device, nb::handle select,
            const std::optional<std::string>& dtype, bool verify_, nb::object progress,
            nb::handle tp, nb::handle tp_plan)
      : path(path_),
        verify(verify_),
        bridge(std::make_unique<progress_bridge>(
            std::move(progress), fmt::format("lris.load(\"{}\")", path_.string()))) {
    std::tie(kind, index) = parse_device(device);
    if (kind != "cpu" && !(LRIS_PYTHON_CUDA && kind == "cuda")) {
      throw unsupported(fmt::format("lris.load(\"{}\", device=\"{}\"): not a device of this build "
                                    "(cpu{})", path.string(), device,
                                    LRIS_PYTHON_CUDA ? ", cuda:N" : ""));
    }
    if (nb::isinstance<nb::str>(select)) {
      options.select = nb::cast<std::string>(select);
    } else if (!select.is_none()) {
      options.names = names_of(select, fmt::format("lris.load(\"{}\")", path.string()), "select");
      if (options.names.empty()) {
        throw invalid_argument(fmt::format("lris.load(\"{}\"): select is an empty list: no "
                                           "tensor would load", path.string()));
      }
    }
    if (dtype) options.convert_to = dtype_from_name(*dtype);
    options.slice = tp_slice(path, tp, tp_plan);
    options.on_progress = bridge->callback();
  }

  // The tensors, all in one block of memory. verify: every byte read again from the files and
  // compared, after the load.
  [[nodiscard]] st::loaded_checkpoint run() const {
    const st::checkpoint ck(path);
    st::loaded_checkpoint loaded;
    // The default context's pipeline for the device: its pinned staging ring is made by the
    // first load of the process and kept for the next.
    if (kind == "cpu") {
      auto& p = default_pipeline<host_backend>();
      loaded = st::load(p, ck, options, st::load_target_memory::host);
      if (verify) st::verify(p, ck, loaded);
    } else {
#if LRIS_PYTHON_CUDA
      auto& p = default_pipeline<cuda_backend>(index);
      loaded = st::load(p, ck, options, st::load_target_memory::device);
      if (verify) st::verify(p, ck, loaded);
#endif
    }
    return loaded;
  }
};

// The placed tensors as one uint8 lris.Tensor over their whole block, with each tensor's place
// in it, for a consumer that makes its tensors as views of the block (one import through
// DLPack, then a view per tensor): (block, [(name, dtype, shape, strides, element offset)],
// {name: lris.Tensor}). A tensor whose offset is not a whole number of its elements (or of a
// type smaller than a byte), or that is in no block (load_into's), has offset -1 and is handed
// over through the dict instead. block.nbytes is 0 where there is no block.
nb::tuple block_of(std::vector<st::loaded_tensor> tensors) {
  st::loaded_tensor block;
  block.name = "block";
  block.type = dtype::U8;
  nb::list entries;
  const bool one_block = !tensors.empty() && tensors.front().lease;
  if (one_block) {
    const st::loaded_tensor& first = tensors.front();
    auto* base = static_cast<std::byte*>(first.lease.get());
    std::uint64_t end = 0;
    for (const auto& t : tensors) {
      if (t.lease != first.lease) {
        throw invalid_argument(fmt::format("lris.load: tensor \"{}\" is not in the load's block",
                                           t.name));
      }
      end = std::max<std::uint64_t>(end, static_cast<std::uint64_t>(t.data - base) + t.bytes);
    }
    block.data = base;
    block.bytes = end;
    block.shape = {end};
    block.location = first.location;
    block.lease = first.lease;
  }
  for (const auto& t : tensors) {
    const std::uint64_t bits = bits_of(t.type);
    long long element_offset = -1;
    if (one_block && bits >= 8 && bits % 8 == 0) {
      const auto offset = static_cast<std::uint64_t>(t.data - block.data);
      if (offset % (bits / 8) == 0) element_offset = static_cast<long long>(offset / (bits / 8));
    }
    nb::list shape, strides;
    std::vector<std::uint64_t> st(t.shape.size(), 1);
    for (std::size_t i = t.shape.size(); i-- > 1;) st[i - 1] = st[i] * t.shape[i];
    for (std::size_t i = 0; i < t.shape.size(); ++i) {
      shape.append(t.shape[i]);
      strides.append(st[i]);
    }
    entries.append(nb::make_tuple(t.name, dtype_name(t.type), nb::tuple(shape),
                                  nb::tuple(strides), element_offset));
  }
  st::loaded_checkpoint all;
  all.tensors = std::move(tensors);
  return nb::make_tuple(nb::cast(py_tensor{std::move(block)}), entries, tensors_dict(all));
}

// CLOCK_MONOTONIC in seconds: Python's time.monotonic().
double monotonic_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// What a load on a thread of its own shares with its _PendingLoad, which joins the thread
// before it lets go of this.
struct load_state {
  explicit load_state(load_call c) : call(std::move(c)) {
    call.bridge->wake_with(mutex, changed);
    call.options.on_placed = [this](const std::vector<st::loaded_tensor>& tensors) {
      std::lock_guard lock(mutex);
      placed = tensors;
      changed.notify_all();
    };
  }

  void run() noexcept {
    std::exception_ptr e;
    st::loaded_checkpoint r;
    try {
      r = call.run();
    } catch (...) {
      e = std::current_exception();
    }
    const double at = monotonic_seconds();
    std::lock_guard lock(mutex);
    result = std::move(r);
    error = std::move(e);
    finished = true;
    finished_at = at;
    changed.notify_all();
  }

  load_call call;  // its progress bridge holds a Python object: dropped under the GIL
  std::mutex mutex;
  std::condition_variable changed;
  std::optional<std::vector<st::loaded_tensor>> placed;
  bool finished = false;
  double finished_at = 0;
  st::loaded_checkpoint result;
  std::exception_ptr error;
};

// A load on a thread of its own (lris._lris._PendingLoad). placed() gives the block as soon as
// every tensor has its place, before the bytes are there; wait() returns once they all are, or
// raises the load's error. Nothing of the block may reach the caller's user before wait()
// returned: a consumer makes its views between the two and hands them out after. Both wait
// with the GIL released, giving the progress callable what has come meanwhile, and a Ctrl-C
// cancels the load, waits for its end and raises KeyboardInterrupt. Dropped, it cancels the
// load and waits for it (the GIL released).
class pending_load {
 public:
  explicit pending_load(load_call call) : state_(std::make_unique<load_state>(std::move(call))) {
    try {
      thread_ = std::thread([s = state_.get()] { s->run(); });
    } catch (const std::system_error&) {
      // No thread to be had: the load runs here, and the views are made after it.
      gil_released nogil;
      state_->run();
    }
  }
  pending_load(const pending_load&) = delete;
  pending_load& operator=(const pending_load&) = delete;
  ~pending_load() {
    if (!thread_.joinable()) return;
    state_->call.bridge->stop();
    gil_released nogil;
    thread_.join();
  }

  nb::tuple placed() {
    if (taken_) {
      throw invalid_argument(fmt::format("lris.load(\"{}\"): the block was taken already",
                                         state_->call.path.string()));
    }
    block_until([&] { return state_->placed.has_value() || state_->finished; });
    std::optional<std::vector<st::loaded_tensor>> tensors;
    bool finished = false;
    {
      std::lock_guard lock(state_->mutex);
      tensors = std::move(state_->placed);
      state_->placed.reset();
      finished = state_->finished;
    }
    if (finished) raise_error();  // a load that ended with an error gives no block
    if (!tensors) {
      throw invalid_argument(fmt::format("lris.load(\"{}\"): the load ended without placing its "
                                         "tensors", state_->call.path.string()));
    }
    taken_ = true;
    return block_of(std::move(*tensors));
  }

  void wait() {
    block_until([&] { return state_->finished; });
    raise_error();
    st::loaded_checkpoint done;  // the block lives on in what placed() gave
    std::lock_guard lock(state_->mutex);
    done = std::move(state_->result);
  }

  // Stops the load at its next chunk; wait() then raises lris.Cancelled.
  void cancel() { state_->call.bridge->stop(); }

  // The Python object it holds (the progress callable), for the garbage collector: a callback
  // that refers to its own _PendingLoad makes a cycle the collector finds through it and
  // breaks by forget_callable(), which also cancels the load (nobody can wait for it now).
  [[nodiscard]] PyObject* callable() const noexcept { return state_->call.bridge->callable(); }
  void forget_callable() { state_->call.bridge->forget(); }

  // When the load ended (time.monotonic()); None while it runs.
  [[nodiscard]] std::optional<double> finished_at() {
    std::lock_guard lock(state_->mutex);
    return state_->finished ? std::optional<double>(state_->finished_at) : std::nullopt;
  }

 private:
  // Waits with the GIL released until done() holds (under the state's lock), giving the
  // progress callable what comes meanwhile; a Ctrl-C cancels.
  template <class Done>
  void block_until(Done done) {
    wait_interruptibly(state_->mutex, state_->changed, done, [&] { return state_->finished; },
                       *state_->call.bridge);
  }

  // The load's error, once it has ended. What the progress callable raised is handed to Python
  // once (progress_bridge::end()); a later call says what it was. Where it said stop, the load
  // is cancelled even if every byte had come.
  void raise_error() {
    if (std::exception_ptr raised = state_->call.bridge->end()) {
      try {
        std::rethrow_exception(raised);
      } catch (const nb::python_error& e) {
        nb::handle v = e.value();
        callback_raised_ = fmt::format("{}: {}", nb::cast<std::string>(v.type().attr("__name__")),
                                       nb::cast<std::string>(nb::str(v)));
        throw;
      }
    }
    if (!callback_raised_.empty()) {
      throw cancelled(fmt::format("lris.load(\"{}\"): cancelled by its progress callback, which "
                                  "raised {} (raised by an earlier call)",
                                  state_->call.path.string(), callback_raised_));
    }
    state_->call.bridge->raise_refusal();
    if (state_->error) std::rethrow_exception(state_->error);
  }

  std::unique_ptr<load_state> state_;
  bool taken_ = false;
  std::string callback_raised_;  // "type: message" of what the progress callback raised
  std::thread thread_;
};

// lris.load: the load on a thread of its own too, so that a Ctrl-C stops it.
nb::dict load(const std::filesystem::path& path, const std::string& device, nb::object select,
              std::optional<std::string> dtype, bool verify, nb::object progress, nb::object tp,
              nb::object tp_plan) {
  load_call call(path, device, select, dtype, verify, std::move(progress), tp, tp_plan);
  st::loaded_checkpoint loaded = run_interruptibly([&] { return call.run(); }, *call.bridge);
  return tensors_dict(loaded);
}

}  // namespace

namespace {

int pending_traverse(PyObject* self, visitproc visit, void* arg) {
  Py_VISIT(Py_TYPE(self));  // a heap type's instances refer to it
  if (!nb::inst_ready(self)) return 0;
  Py_VISIT(nb::inst_ptr<pending_load>(self)->callable());
  return 0;
}

int pending_clear(PyObject* self) {
  if (nb::inst_ready(self)) nb::inst_ptr<pending_load>(self)->forget_callable();
  return 0;
}

PyType_Slot pending_slots[] = {{Py_tp_traverse, reinterpret_cast<void*>(pending_traverse)},
                               {Py_tp_clear, reinterpret_cast<void*>(pending_clear)},
                               {0, nullptr}};

}  // namespace

void register_load(nb::module_& m) {
  m.def("load", &load, "path"_a, "device"_a = "cpu", "select"_a = nb::none(),
        "dtype"_a = nb::none(), "verify"_a = false, "progress"_a = nb::none(),
        "tp"_a = nb::none(), "tp_plan"_a = nb::none(),
        "Loads a .safetensors file or a sharded model directory: {name: lris.Tensor}.");
  nb::class_<pending_load>(m, "_PendingLoad",
                           "A load running on a thread of its own (load_start).",
                           nb::type_slots(pending_slots))
      .def("placed", &pending_load::placed,
           "Once every tensor has its place, before its bytes are there: (block, [(name, dtype, "
           "shape, strides, element offset)], {name: lris.Tensor}); the block is one uint8 "
           "lris.Tensor, an offset -1 a tensor to take from the dict. Nothing of it may be "
           "used before wait() returned. Raises the load's error if it ended with one.")
      .def("wait", &pending_load::wait,
           "Returns once every byte has landed; raises the load's error.")
      .def("cancel", &pending_load::cancel,
           "Stops the load at its next chunk; wait() then raises lris.Cancelled.")
      .def_prop_ro("finished_at", &pending_load::finished_at,
                   "When the load ended, on time.monotonic()'s clock; None while it runs.");
  m.def(
      "load_start",
      [](const std::filesystem::path& path, const std::string& device, nb::object select,
         std::optional<std::string> dtype, bool verify, nb::object progress, nb::object tp,
         nb::object tp_plan) {
        return new pending_load(
            load_call(path, device, select, dtype, verify, std::move(progress), tp, tp_plan));
      },
      nb::rv_policy::take_ownership, "path"_a, "device"_a = "cpu", "select"_a = nb::none(),
      "dtype"_a = nb::none(), "verify"_a = false, "progress"_a = nb::none(), "tp"_a = nb::none(),
      "tp_plan"_a = nb::none(),
      "As load, started on a thread of its own: a _PendingLoad, whose placed() gives the block "
      "the tensors will be in while the reads run (lris.torch.load makes its views then).");
}

}  // namespace lris::python
