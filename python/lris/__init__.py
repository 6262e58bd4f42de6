"""LRIS: checkpoints loaded at the speed of the disk or the page cache, handed to NumPy,
PyTorch and CuPy through DLPack without a copy.

    import lris, numpy as np
    tensors = lris.load("model.safetensors")          # {name: lris.Tensor}
    w = np.from_dlpack(tensors["lm_head.weight"])     # no copy; valid while w lives

A tensor's memory belongs to the tensor (and to every array made from it through DLPack):
it is freed when the last of them is gone, never reused meanwhile. Errors are lris.Error
subclasses carrying LRIS's message (the file, tensor and offset at fault).

Models bigger than GPU memory: lris.Cache keeps units of tensors (a model's blocks) in pinned
host memory and brings them into a device's memory under a byte budget; lris.torch.stream
streams a list of torch modules through one.
"""

import re as _re

from . import _lris
from ._lris import (
    CacheLease,
    Cancelled,
    DeviceError,
    DeviceLost,
    Error,
    FormatError,
    IntegrityError,
    InvalidArgument,
    IoError,
    OutOfMemory,
    Tensor,
    Unsupported,
    broker_status,
    copy,
    info,
    inspect,
    load_into,
)

__all__ = [
    "Cache", "CacheLease", "Cancelled", "HostPool", "DeviceError", "DeviceLost", "Error", "FormatError", "IntegrityError",
    "InvalidArgument", "IoError", "OutOfMemory", "Tensor", "Unsupported", "broker_status", "copy",
    "info", "inspect",
    "load", "load_into",
]
__version__ = info()["version"]

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KI": 1 << 10, "KIB": 1 << 10, "M": 1 << 20,
          "MI": 1 << 20, "MIB": 1 << 20, "G": 1 << 30, "GI": 1 << 30, "GIB": 1 << 30,
          "T": 1 << 40, "TI": 1 << 40, "TIB": 1 << 40, "KB": 10**3, "MB": 10**6, "GB": 10**9,
          "TB": 10**12}


def _bytes(value, what):
    """An int, or a size such as "512M", "12G" (powers of 1024) or "12GB" (of 1000)."""
    if isinstance(value, bool):
        raise InvalidArgument(f"{what}: {value!r} is not a size")
    if isinstance(value, int):
        if value < 0:
            raise InvalidArgument(f"{what}: {value} is negative")
        return value
    if isinstance(value, str):
        m = _re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", value)
        if m and m.group(2).upper() in _UNITS:
            return int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    raise InvalidArgument(f"{what}: {value!r} is not a size (examples: 1073741824, 512M, 12G, "
                          f"12GB)")


class HostPool(_lris._HostPool):
    """One copy of a checkpoint in host memory for every process on the machine: a POSIX
    shared-memory segment (/dev/shm/lris-pool-NAME) made by the first process that opens it
    with `bytes` (an int or "20G"), attached by the others (bytes=None only attaches), placed on
    NUMA node `numa_node` when given (a CXL expander's too). It goes when the last process
    leaves, unless `persistent` (then HostPool.drop(name) removes it).

        pool = lris.HostPool.of("llama-8b", "model/")   # the first process fills it
        w = np.from_dlpack(pool.find("lm_head.weight"))  # no copy: the shared memory
        on_gpu = pool.load("cuda:0")                     # {name: lris.Tensor}, one batch

    populate(path) loads what no process has loaded yet (or left half-done when it died) and
    publishes each tensor with its checksum: find() and tensors() never show a partial one.
    """

    def __init__(self, name, bytes=None, numa_node=-1, persistent=False, max_tensors=16384):
        size = None if bytes is None else _bytes(bytes, "lris.HostPool bytes")
        super().__init__(name, size, numa_node, persistent, max_tensors)

    @classmethod
    def of(cls, name, path, select=None, progress=None, **options):
        """The pool `name` sized for checkpoint `path` (a file or a model directory), made or
        attached, with every tensor of it loaded (by this process or another)."""
        info = inspect(path)
        size = info["data_bytes"] + 4096 * max(1, len(info["tensors"]))
        options.setdefault("max_tensors", max(1, len(info["tensors"])))
        pool = cls(name, size, **options)
        pool.populate(path, select=select, progress=progress)
        return pool

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        try:
            i = self.info()
        except InvalidArgument:  # closed
            return "lris.HostPool(closed)"
        return (f"lris.HostPool({i['name']!r}, tensors={i['tensors']}, "
                f"used={i['used_bytes']}/{i['data_bytes']} bytes, users={i['users']})")


class Cache(_lris._Cache):
    """Units of tensors (a model's blocks) kept in pinned host memory and brought into the
    memory of `device` ("cuda:N", or "cpu" for host memory) under a hard byte `budget` (an
    int or "12G"), all of it allocated now. A unit is evicted only when room is needed and
    nothing holds it; with a declared order each acquire brings in the units after it, up to
    `lookahead` bytes (default: two of the largest unit in the order).

        cache = lris.Cache("cuda:0", budget="12G")
        ids = [cache.add(f"layer{i}", {n: p for n, p in layer.state_dict().items()})
               for i, layer in enumerate(layers)]
        cache.order(ids)
        with cache.acquire(ids[0], torch.cuda.current_stream()) as lease:
            w = torch.from_dlpack(lease["weight"])   # valid until the lease is released

    Copies take the link's tokens from the process's bandwidth broker (broker=False: none).
    """

    def __init__(self, device="cuda:0", budget=None, lookahead=None, alignment=256,
                 broker=True):
        if budget is None:
            raise InvalidArgument("lris.Cache: a budget is needed (bytes, or a size like \"12G\")")
        la = None if lookahead is None else _bytes(lookahead, "lris.Cache lookahead")
        super().__init__(device, _bytes(budget, "lris.Cache budget"), la, alignment, broker)

    def close(self):
        """Waits for the copies and released uses, then frees the device and pinned memory.
        lris.InvalidArgument while a unit is leased, or while lris.torch.stream's blocks keep
        their weights here (their remove() gives them back first)."""
        streams = [s for s in self.__dict__.get("_streams", ()) if s.active]
        if streams:
            raise InvalidArgument(f"lris.Cache.close: {len(streams)} lris.torch.stream "
                                  f"{'holds' if len(streams) == 1 else 'hold'} the weights of "
                                  f"its blocks here; remove() gives them back first")
        super().close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return (f"lris.Cache(device={self.device!r}, budget={self.budget}, "
                f"units={len(self.units)})")


def _tqdm_progress(path):
    """A callback that draws a tqdm bar, or None when tqdm is not installed."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None, None
    bar = tqdm(total=0, unit="B", unit_scale=True, desc=f"lris.load {path}")

    def update(done, total):
        if bar.total != total:
            bar.total = total
        bar.update(done - bar.n)
        return True

    return update, bar


def load(path, device="cpu", select=None, dtype=None, verify=False, progress=None, tp=None,
         tp_plan=None):
    """Loads a .safetensors file or a sharded model directory into `device` ("cpu", "cuda:N").

    select: a regular expression searched in each name, or a list of exact names.
    dtype: floating-point tensors are converted to it as they load ("bfloat16", "float32"...).
    verify: every byte read again from the files and compared after the load
    (lris.IntegrityError names the tensor, file, offset and first byte that differs).
    progress: a callable(bytes_done, bytes_total) -> bool (False cancels: lris.Cancelled), or
    True for a tqdm bar when tqdm is installed. It is called on this thread while it waits,
    never on the load's own threads, which go on reading meanwhile.
    tp: (rank, size): load only this tensor-parallel rank's slice of each tensor tp_plan splits,
    reading just its bytes. tp_plan: {pattern: style} as transformers' tp_plan ("colwise",
    "rowwise", "replicate", "dim=N"; patterns like "layers.*.mlp.down_proj"), a JSON file's
    path, or "llama" (the default: Llama-style attention and MLP, the vocabulary).
    Returns {name: lris.Tensor} in checkpoint order. The load runs on a thread of its own, the
    GIL released; a Ctrl-C stops it at its next chunk and raises KeyboardInterrupt.
    """
    return _with_progress(path, progress, lambda p: _lris.load(
        path, device=device, select=select, dtype=dtype, verify=verify, progress=p, tp=tp,
        tp_plan=tp_plan))


def _with_progress(path, progress, call):
    """call(callback): progress=True becomes a tqdm bar where tqdm is installed."""
    bar = None
    if progress is True:
        progress, bar = _tqdm_progress(path)
    elif progress is False:
        progress = None
    try:
        return call(progress)
    finally:
        if bar is not None:
            bar.close()
